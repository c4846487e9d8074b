"""The forward process ``x_t = alpha_t x0 + sigma_t eps``: the lowest layer of the package.

Every scheduler, inferer, training recipe and exact reference reads the forward process through this module, and it
imports nothing from the package (only ``torch``), so every other module can import down into it.

It owns:

* :class:`PredictionType`: what a network predicts (``eps``, ``x0`` or ``v = alpha eps - sigma x0``; Salimans & Ho,
  2022, Sec. 4), with the conversions between the three and the regression target of training.
* :func:`table_coefficients`: the **one definition of fractional timesteps** for a discrete table
  ``alphas_cumprod`` (``abar_t``, ``t = 0 .. T-1``). Between integer times the half log-SNR
  ``log sigma_t = 0.5 log((1 - abar_t) / abar_t)`` (Kingma et al., 2021: ``lambda_t = -2 log sigma_t``; ``sigma_t`` is
  the noise level of the equivalent VE process, Karras et al., 2022, Sec. 2) is interpolated linearly; at integer
  times the table values ``(sqrt(abar_t), sqrt(1 - abar_t))`` are returned exactly. This is the map that
  diffusers' Karras/Heun schedulers and k-diffusion's ``DiscreteSchedule`` use from noise levels to times, so the
  samplers' fractional grids, the forward process of training and every network evaluated at a fractional time
  agree. :func:`log_sigma_to_timestep` is its inverse.
* :func:`marginal_coefficients`: ``(alpha_t, sigma_t)`` of any scheduler (an adapter in the spirit of k-diffusion's
  wrappers of external models): the ``marginal_coefficients(timesteps)`` method of this package's schedulers (the
  continuous-time SDE samplers evaluate their closed-form marginals there), else an ``alphas_cumprod`` table
  (MONAI's and diffusers' schedulers, or any duck-typed object) through :func:`table_coefficients`.
* :func:`check_forward_process`: whether a sampler shares the forward process a model was trained with.

Shared forward processes (a model trained with one may be sampled by every sampler listed with it):

====================================  =============================================================
forward process used in training      samplers that share it
====================================  =============================================================
DDPM linear betas (1e-4..0.02, N)     the discrete samplers (DDPM, DDIM, DPM-Solver++, UniPC, ...) and every SDE
                                      sampler with ``sde="vp"`` (``beta_min = N 1e-4``, ``beta_max = N 0.02``)
``VPSDE``                             the same as above
``SubVPSDE``                          the SDE samplers with ``sde="subvp"`` only
``VESDE`` / NCSN (same sigma range)   the SDE samplers with ``sde="ve"`` and ``NCSNScheduler``
====================================  =============================================================
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch

__all__ = [
    "PREDICTION_TYPES",
    "PredictionType",
    "append_dims",
    "as_batch_coefficient",
    "check_forward_process",
    "describe_forward_process",
    "from_eps",
    "interp",
    "log_sigma_table",
    "log_sigma_to_timestep",
    "marginal_coefficients",
    "model_output_to_x0_eps",
    "num_train_timesteps_of",
    "prediction_type_of",
    "table_coefficients",
    "to_x0_eps",
    "training_target",
]

#: largest deviation tolerated between the direction of ``(alpha, sigma)`` read from a scheduler's ``add_noise`` and
#: that of its coefficients (float32 arithmetic in MONAI's and diffusers' ``add_noise``)
ADD_NOISE_ATOL = 1e-5


# ---------------------------------------------------------------------------------------------- broadcasting
def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton axes to ``x`` until it has ``ndim`` dimensions (dimension-agnostic broadcasting).

    Args:
        x: a tensor, usually a scalar or a per-sample vector of shape (B,).
        ndim: the number of dimensions of the tensor ``x`` must broadcast against.

    Raises:
        ValueError: if ``x`` already has more than ``ndim`` dimensions.
    """
    missing = ndim - x.ndim
    if missing < 0:
        raise ValueError(f"cannot broadcast a tensor with {x.ndim} dims against {ndim} dims")
    return x.reshape(*x.shape, *([1] * missing))


def as_batch_coefficient(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample (B,) coefficient as a tensor broadcastable against ``like`` (B, ...).

    Args:
        value: a Python number, a 0-d tensor, or a tensor of shape (1,) or (B,).
        like: the batch-first tensor to broadcast against; sets dtype (its real dtype if complex) and device.

    Raises:
        ValueError: if a vector coefficient's length is neither 1 nor the batch size.
    """
    dtype = like.real.dtype if like.is_complex() else like.dtype
    if isinstance(value, torch.Tensor):
        v = value.to(device=like.device, dtype=dtype)
    else:
        v = torch.as_tensor(value, dtype=dtype, device=like.device)
    if v.ndim == 0:
        return v
    v = v.reshape(-1)
    if v.numel() == 1:
        return v.reshape(())
    if v.shape[0] != like.shape[0]:
        raise ValueError(f"a per-sample coefficient needs shape ({like.shape[0]},), got {tuple(v.shape)}")
    return append_dims(v, like.ndim)


# ---------------------------------------------------------------------------------------------- prediction types
class PredictionType(str, Enum):
    """What a network predicts, and the conversions between the three parameterisations.

    With ``x_t = alpha x0 + sigma eps``: ``EPSILON`` predicts ``eps``, ``SAMPLE`` predicts ``x0`` and
    ``V_PREDICTION`` predicts ``v = alpha eps - sigma x0`` (Salimans & Ho, 2022, Eq. 9 with ``alpha^2 + sigma^2 = 1``
    generalised). The inversion ``x0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``,
    ``eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)`` holds for any forward process, not only VP. Members are
    strings (``PredictionType.EPSILON == "epsilon"``), so configs keep plain strings.
    """

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"

    @classmethod
    def of(cls, value: str | PredictionType, name: str = "prediction_type") -> PredictionType:
        """The member for ``value`` (a member, or its string).

        Raises:
            ValueError: naming ``name``, for anything else.
        """
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{name} must be one of {PREDICTION_TYPES}, got {value!r}") from None

    def to_x0_eps(
        self, output: torch.Tensor, x_t: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` from a network output at ``x_t``.

        Raises:
            ValueError: if ``output`` and ``x_t`` differ in shape.
        """
        if output.shape != x_t.shape:
            raise ValueError(f"model output {tuple(output.shape)} and sample {tuple(x_t.shape)} must match")
        a = as_batch_coefficient(alpha, x_t)
        s = as_batch_coefficient(sigma, x_t)
        if self is PredictionType.EPSILON:
            return (x_t - s * output) / a, output
        if self is PredictionType.SAMPLE:
            return output, (x_t - a * output) / s
        norm = a**2 + s**2
        return (a * x_t - s * output) / norm, (s * x_t + a * output) / norm

    def from_x0_eps(
        self, x0: torch.Tensor, eps: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """The output for a pair ``(x0, eps)``; with the true pair this is the training target (Ho et al., 2020,
        Eq. 14 for ``EPSILON``)."""
        if self is PredictionType.EPSILON:
            return eps
        if self is PredictionType.SAMPLE:
            return x0
        return as_batch_coefficient(alpha, x0) * eps - as_batch_coefficient(sigma, x0) * x0

    def from_eps(
        self, eps: torch.Tensor, x_t: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """The output consistent with ``(x_t, eps)`` (the inverse of :meth:`to_x0_eps` given eps)."""
        if self is PredictionType.EPSILON:
            return eps
        x0 = (x_t - as_batch_coefficient(sigma, x_t) * eps) / as_batch_coefficient(alpha, x_t)
        return self.from_x0_eps(x0, eps, alpha, sigma)

    def from_x0(
        self, x0: torch.Tensor, x_t: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """The output consistent with ``(x_t, x0)`` (the inverse of :meth:`to_x0_eps` given x0)."""
        if self is PredictionType.SAMPLE:
            return x0
        eps = (x_t - as_batch_coefficient(alpha, x_t) * x0) / as_batch_coefficient(sigma, x_t)
        return self.from_x0_eps(x0, eps, alpha, sigma)


#: what a network may be trained to predict (the values of :class:`PredictionType`)
PREDICTION_TYPES: tuple[str, ...] = tuple(p.value for p in PredictionType)


def to_x0_eps(
    output: torch.Tensor,
    x: torch.Tensor,
    alpha: float | torch.Tensor,
    sigma: float | torch.Tensor,
    prediction_type: str | PredictionType,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0, eps)`` from a network output of ``prediction_type`` at ``x = x_t``; see :meth:`PredictionType.to_x0_eps`.

    Raises:
        ValueError: for an unknown prediction type or mismatched shapes.
    """
    return PredictionType.of(prediction_type).to_x0_eps(output, x, alpha, sigma)


#: the name the samplers used for :func:`to_x0_eps`
model_output_to_x0_eps = to_x0_eps


def from_eps(
    eps: torch.Tensor,
    x: torch.Tensor,
    alpha: float | torch.Tensor,
    sigma: float | torch.Tensor,
    prediction_type: str | PredictionType,
) -> torch.Tensor:
    """A noise estimate ``eps`` at ``x = x_t`` in ``prediction_type`` units (inverse of :func:`to_x0_eps`)."""
    return PredictionType.of(prediction_type).from_eps(eps, x, alpha, sigma)


def training_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha: float | torch.Tensor,
    sigma: float | torch.Tensor,
    prediction_type: str | PredictionType,
) -> torch.Tensor:
    """The regression target of denoising score matching for a prediction type (Ho et al., 2020, Eq. 14): the noise,
    the clean image or the velocity ``alpha noise - sigma x0``."""
    return PredictionType.of(prediction_type).from_x0_eps(x0, noise, alpha, sigma)


def prediction_type_of(scheduler: Any) -> PredictionType:
    """The prediction type of a scheduler: ``config.prediction_type`` (diffusers') or ``prediction_type`` (ours,
    MONAI's); ``epsilon`` when it has neither.

    Raises:
        ValueError: for an unknown value.
    """
    value = getattr(getattr(scheduler, "config", None), "prediction_type", None)  # diffusers (attribute deprecated)
    if value is None:
        value = getattr(scheduler, "prediction_type", None)
    return PredictionType.of("epsilon" if value is None else value, f"{type(scheduler).__name__}.prediction_type")


# ---------------------------------------------------------------------------------------------- tables
def interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation ``f(x)`` through the knots ``(xp, fp)``, ``xp`` increasing; linear extrapolation.

    Args:
        x: query points (any shape).
        xp: increasing knot positions, shape (K,), K >= 2.
        fp: knot values, shape (K,).
    """
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, xp.shape[0] - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    w = (x - x0) / (x1 - x0)
    return f0 + w * (f1 - f0)


def log_sigma_table(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``log sigma_t`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``: the noise level of the equivalent VE process
    (Karras et al. 2022, Sec. 2), which is minus half the log-SNR ``lambda_t`` of Kingma et al. (2021); float64."""
    a = torch.as_tensor(alphas_cumprod).to(torch.float64)
    return 0.5 * (torch.log1p(-a) - torch.log(a))


def _table(alphas_cumprod: Any, device: torch.device) -> torch.Tensor:
    table = torch.as_tensor(alphas_cumprod).detach().to(device=device, dtype=torch.float64).reshape(-1)
    if table.numel() < 2 or not bool(((table > 0) & (table <= 1)).all()):
        raise ValueError(f"alphas_cumprod must hold at least two values in (0, 1], got {table.numel()} values")
    return table


def table_coefficients(
    alphas_cumprod: torch.Tensor, timesteps: torch.Tensor | float | int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t)`` of a discrete VP table at (possibly fractional) ``timesteps``: the one definition.

    Integer times give ``(sqrt(abar_t), sqrt(1 - abar_t))`` exactly; between them ``log sigma_t`` (minus half the
    log-SNR) is interpolated linearly and ``alpha = sigmoid(-2 log sigma)^(1/2)``, ``sigma = sigmoid(2 log sigma)^(1/2)``
    (so ``alpha^2 + sigma^2 = 1`` everywhere).

    Args:
        alphas_cumprod: the table ``abar_t`` for ``t = 0 .. T-1`` (decreasing, in (0, 1]).
        timesteps: a scalar or a tensor of times in ``[0, T-1]``.

    Returns:
        float64 tensors of the shape of ``timesteps``, on its device.

    Raises:
        ValueError: for a time outside ``[0, T-1]``, a table that is not in (0, 1], or a fractional time next to a
            noise-free entry (``abar = 1``, where ``log sigma`` is ``-inf``).
    """
    t = torch.as_tensor(timesteps)
    if t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"timesteps must be real numbers, got dtype {t.dtype}")
    t = t.to(torch.float64)
    abar = _table(alphas_cumprod, t.device)
    last = abar.numel() - 1
    if bool(((t < 0) | (t > last)).any()):
        raise ValueError(f"timesteps must lie in [0, {last}], got {t.reshape(-1).tolist()}")
    integer = t == t.round()
    noise_free = (abar[t.floor().long().clamp(0, last)] >= 1) | (abar[t.ceil().long().clamp(0, last)] >= 1)
    if bool((noise_free & ~integer).any()):
        raise ValueError(
            "alphas_cumprod has a noise-free entry (abar = 1, log sigma = -inf) next to the fractional timesteps "
            f"{t[noise_free & ~integer].tolist()}: they have no log-SNR interpolation"
        )
    grid = torch.arange(abar.numel(), dtype=torch.float64, device=t.device)
    log_sigma = interp(t.reshape(-1), grid, log_sigma_table(abar)).reshape(t.shape)
    alpha = torch.sigmoid(-2.0 * log_sigma).sqrt()
    sigma = torch.sigmoid(2.0 * log_sigma).sqrt()
    if bool(integer.any()):
        exact = abar[t.round().long().clamp(0, last)]
        alpha = torch.where(integer, exact.sqrt(), alpha)
        sigma = torch.where(integer, (1.0 - exact).sqrt(), sigma)
    return alpha, sigma


def log_sigma_to_timestep(alphas_cumprod: torch.Tensor, log_sigma: torch.Tensor | float) -> torch.Tensor:
    """The fractional training time whose ``log sigma`` (see :func:`table_coefficients`) is ``log_sigma``, float64:
    the inverse of the interpolation that defines fractional times (linear extrapolation outside the table)."""
    ls = log_sigma_table(alphas_cumprod)
    grid = torch.arange(ls.numel(), dtype=torch.float64, device=ls.device)
    return interp(torch.as_tensor(log_sigma, dtype=torch.float64, device=ls.device), ls, grid)


# ---------------------------------------------------------------------------------------------- any scheduler
def marginal_coefficients(scheduler: Any, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t)`` of the forward process ``x_t = alpha_t x0 + sigma_t eps`` of any scheduler.

    * this package's schedulers: their ``marginal_coefficients(timesteps)`` (tables through
      :func:`table_coefficients`, SDEs through their closed-form marginals);
    * MONAI's and diffusers' schedulers, or any object with an ``alphas_cumprod`` table: :func:`table_coefficients`.

    Args:
        scheduler: a scheduler with a ``marginal_coefficients`` method or an ``alphas_cumprod`` table.
        timesteps: a scalar or a tensor of model timesteps (fractional allowed) in the scheduler's units.

    Returns:
        float64 tensors with the shape of ``timesteps``, on its device.

    Raises:
        TypeError: if the scheduler has neither.
        ValueError: for timesteps outside the scheduler's range.
    """
    t = torch.as_tensor(timesteps)
    method = getattr(scheduler, "marginal_coefficients", None)
    if callable(method):
        alpha, sigma = method(t)
        alpha = torch.as_tensor(alpha).to(device=t.device, dtype=torch.float64)
        sigma = torch.as_tensor(sigma).to(device=t.device, dtype=torch.float64)
        return alpha.reshape(t.shape), sigma.reshape(t.shape)
    table = getattr(scheduler, "alphas_cumprod", None)
    if table is not None:
        return table_coefficients(table, t)
    raise TypeError(
        f"scheduler {type(scheduler).__name__} has neither `marginal_coefficients(timesteps)` nor `alphas_cumprod`"
    )


def num_train_timesteps_of(scheduler: Any) -> int:
    """``num_train_timesteps`` of a MONAI-style scheduler or of a diffusers one (in its ``config``).

    Raises:
        TypeError: if it has none.
    """
    n = getattr(getattr(scheduler, "config", None), "num_train_timesteps", None)  # diffusers (attribute deprecated)
    if n is None:
        n = getattr(scheduler, "num_train_timesteps", None)
    if n is None:
        raise TypeError(f"{type(scheduler).__name__} has no num_train_timesteps")
    return int(n)


def describe_forward_process(scheduler: Any) -> str:
    """A short human-readable name of a scheduler's forward process, for error messages."""
    sde = getattr(scheduler, "sde", None)
    if sde is not None and callable(getattr(sde, "marginal", None)):
        return repr(sde)
    if hasattr(scheduler, "alphas_cumprod"):
        return f"discrete VP ({type(scheduler).__name__}, schedule={getattr(scheduler, 'schedule', None)!r})"
    return type(scheduler).__name__


def _check_own_consistency(scheduler: Any, times: torch.Tensor) -> None:
    """Raise unless ``scheduler``'s coefficients form a forward process and its ``add_noise`` follows them."""
    name = f"{type(scheduler).__name__} ({describe_forward_process(scheduler)})"
    alpha, sigma = marginal_coefficients(scheduler, times)
    if not bool(torch.isfinite(alpha).all() & torch.isfinite(sigma).all() & (alpha > 0).all() & (sigma >= 0).all()):
        raise ValueError(f"{name}: marginal coefficients must be finite with alpha > 0 and sigma >= 0")
    log_snr = 2.0 * (torch.log(alpha) - torch.log(sigma))
    rising = torch.nonzero(log_snr[1:] > log_snr[:-1] + 1e-9).reshape(-1)
    if rising.numel():
        k = int(rising[0])
        raise ValueError(
            f"{name}: the signal-to-noise ratio must not increase with the timestep, but it rises from t = "
            f"{float(times[k]):g} to {float(times[k + 1]):g}"
        )
    add_noise = getattr(scheduler, "add_noise", None)
    if not callable(add_noise):
        return
    ints = times[times == times.round()].long()
    a_int, s_int = (v.cpu() for v in marginal_coefficients(scheduler, ints))
    probe = torch.ones((ints.numel(), 1, 1), dtype=torch.float32)
    got_alpha = torch.as_tensor(add_noise(probe, torch.zeros_like(probe), ints)).double().reshape(-1).cpu()
    got_sigma = torch.as_tensor(add_noise(torch.zeros_like(probe), probe, ints)).double().reshape(-1).cpu()
    # compared up to a per-timestep scale: diffusers' Euler-type schedulers add noise in the VE form
    # x0 + (sigma / alpha) eps and scale the model input back (the same process, other coordinates)
    norm, got_norm = torch.hypot(a_int, s_int), torch.hypot(got_alpha, got_sigma)
    dev = torch.maximum((got_alpha / got_norm - a_int / norm).abs(), (got_sigma / got_norm - s_int / norm).abs())
    if not float(dev.max()) <= ADD_NOISE_ATOL:
        k = int(torch.nan_to_num(dev, nan=float("inf")).argmax())
        raise ValueError(
            f"{name}: add_noise disagrees with its marginal coefficients at timestep {int(ints[k])}: "
            f"(alpha, sigma) = ({float(got_alpha[k]):.6g}, {float(got_sigma[k]):.6g}) against "
            f"({float(a_int[k]):.6g}, {float(s_int[k]):.6g})"
        )


def check_forward_process(training_scheduler: Any, sampler: Any = None, atol: float = 0.02) -> float:
    """Check the forward process of a training scheduler, and that ``sampler`` shares it; return the largest deviation.

    Each scheduler must be a forward process on its own: finite coefficients with ``alpha > 0``, a signal-to-noise
    ratio that does not increase with ``t``, and (where it has one) an ``add_noise`` that follows its coefficients at
    every integer timestep, up to a per-timestep scale (diffusers' Euler-type schedulers add noise in the VE form
    ``x0 + (sigma / alpha) eps``). The two are then compared through :func:`marginal_coefficients` at every integer training
    timestep and at the midpoints between them (fractional times, see :func:`table_coefficients`): the deviation is
    ``max(|alpha_1 - alpha_2|, |sigma_1 - sigma_2| / max(1, sigma_1))``. The default tolerance admits DDPM's linear
    schedule against ``VPSDE`` (largest deviation 0.010, the continuum-limit error) and rejects the cosine schedule
    (0.2) and any VP/VE or VP/sub-VP mix.

    Args:
        training_scheduler: the scheduler whose ``add_noise`` trained the model (this package's, MONAI's or
            diffusers': anything with ``marginal_coefficients`` or ``alphas_cumprod``).
        sampler: the scheduler meant to sample that model; ``None`` checks ``training_scheduler`` alone (returns 0).
        atol: largest admissible deviation.

    Raises:
        ValueError: if a scheduler is inconsistent, or the training-step counts or the forward processes differ,
            naming both processes.
    """
    n_train = num_train_timesteps_of(training_scheduler)
    times = torch.arange(0.0, n_train - 0.75, 0.5, dtype=torch.float64)  # integers and midpoints up to T-1
    _check_own_consistency(training_scheduler, times)
    if sampler is None:
        return 0.0
    n_sampler = num_train_timesteps_of(sampler)
    if n_train != n_sampler:
        raise ValueError(
            f"the model was trained with num_train_timesteps={n_train} but {type(sampler).__name__} uses {n_sampler}"
        )
    _check_own_consistency(sampler, times)
    a1, s1 = (v.cpu() for v in marginal_coefficients(training_scheduler, times))
    a2, s2 = (v.cpu() for v in marginal_coefficients(sampler, times))
    dev = torch.maximum((a1 - a2).abs(), (s1 - s2).abs() / s1.clamp_min(1.0))
    worst = float(dev.max())
    if not worst <= atol:
        k = int(dev.argmax())
        raise ValueError(
            f"{type(sampler).__name__} with {describe_forward_process(sampler)} cannot sample a model trained with "
            f"{describe_forward_process(training_scheduler)}: at timestep {float(times[k]):g} the training process "
            f"has (alpha, sigma) = ({float(a1[k]):.4g}, {float(s1[k]):.4g}) and the sampler "
            f"({float(a2[k]):.4g}, {float(s2[k]):.4g}). Use a sampler that shares the forward process "
            "(see the table in monai_diffusion.networks.schedulers.process)."
        )
    return worst
