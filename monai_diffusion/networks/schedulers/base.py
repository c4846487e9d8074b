"""Shared base classes and small pure functions for every sampler in :mod:`monai_diffusion.networks.schedulers`.

The protocol (MONAI-compatible) that every sampler follows:

* attributes ``num_train_timesteps``, ``prediction_type``, ``timesteps`` (1D tensor of model-evaluation times, in
  the order they are visited) and ``init_noise_sigma`` (standard deviation of the prior at the first timestep);
* ``set_timesteps(num_inference_steps, device=None, timesteps=None)`` which also resets all multistep state;
* ``step(model_output, timestep, sample, generator=None) -> (prev_sample, pred_original_sample)``;
* ``add_noise(original_samples, noise, timesteps)``: the training forward process, never mutating the scheduler;
* ``marginal_coefficients(timesteps) -> (alpha, sigma)`` with ``x_t = alpha * x0 + sigma * eps``.

Sampling is the plain loop of MONAI's ``DiffusionInferer.sample``::

    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x, x0 = scheduler.step(model(x, t), t, x)

Unlike ``monai.networks.schedulers.Scheduler.__init__``, which keeps the noise tables as plain attributes (empty
``state_dict``, ``.to()`` ignores them), the classes here register them as buffers.

The forward process itself (prediction types and their conversions, fractional timesteps, compatibility checks)
lives one layer below, in :mod:`.process`; the names this module used to define there are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.schedulers import Scheduler
from monai.networks.schedulers.scheduler import NoiseSchedules
from torch import nn

from monai_diffusion.networks.schedulers.process import (
    PREDICTION_TYPES,
    PredictionType,
    append_dims,
    as_batch_coefficient,
    check_forward_process,
    interp,
    log_sigma_table,
    log_sigma_to_timestep,
    model_output_to_x0_eps,
    table_coefficients,
)

__all__ = [
    "PREDICTION_TYPES",
    "TIMESTEP_SPACINGS",
    "BaseScheduler",
    "DiscreteTimeScheduler",
    "append_dims",
    "as_batch_coefficient",
    "interp",
    "make_schedule",
    "model_output_to_x0_eps",
    "clip_x0",
    "dynamic_threshold",
    "spaced_timesteps",
    "karras_sigmas",
    "log_sigma_table",
    "randn_like",
]

#: how inference timesteps are placed on the training grid
TIMESTEP_SPACINGS: tuple[str, ...] = ("linspace", "leading", "trailing", "log_snr", "karras")

#: beta schedules accepted by name, mapped onto MONAI's ``NoiseSchedules`` registry
_SCHEDULE_ALIASES = {"linear": "linear_beta", "scaled_linear": "scaled_linear_beta", "sigmoid": "sigmoid_beta"}


# ---------------------------------------------------------------------------------------------- pure helpers
def make_schedule(
    schedule: str, num_train_timesteps: int, **schedule_args
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(betas, alphas, alphas_cumprod)`` in float64 for a named schedule from MONAI's ``NoiseSchedules`` registry.

    Linear and scaled-linear follow Ho et al. (2020) and Rombach et al. (2022); cosine is Nichol & Dhariwal (2021),
    Eq. 17. The cumulative product is recomputed in float64 for accuracy at large ``t``.

    Args:
        schedule: a ``NoiseSchedules`` name (``"linear_beta"``, ``"scaled_linear_beta"``, ``"sigmoid_beta"``,
            ``"cosine"``) or a short alias (``"linear"``, ``"scaled_linear"``, ``"sigmoid"``).
        num_train_timesteps: number of training steps ``T``.
        schedule_args: keyword arguments of the schedule function (e.g. ``beta_start``, ``beta_end``).

    Raises:
        ValueError: for an unknown schedule name or a non-positive ``num_train_timesteps``.
    """
    if int(num_train_timesteps) < 2:
        raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps}")
    name = _SCHEDULE_ALIASES.get(schedule, schedule)
    if name not in NoiseSchedules:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {sorted(NoiseSchedules.names)}")
    out = NoiseSchedules[name](int(num_train_timesteps), **schedule_args)
    betas = (out[0] if isinstance(out, tuple) else out).to(torch.float64)
    if betas.shape != (int(num_train_timesteps),) or (betas <= 0).any() or (betas >= 1).any():
        raise ValueError(f"schedule {schedule!r} must give {num_train_timesteps} betas in (0, 1)")
    alphas = 1.0 - betas
    return betas, alphas, torch.cumprod(alphas, dim=0)


def karras_sigmas(num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Noise levels of Karras et al. (2022), Eq. 5: ``(smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``.

    Returns a decreasing float64 tensor of ``num_steps`` sigmas from ``sigma_max`` to ``sigma_min``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if num_steps == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def spaced_timesteps(
    num_inference_steps: int,
    num_train_timesteps: int,
    spacing: str = "linspace",
    alphas_cumprod: torch.Tensor | None = None,
    steps_offset: int = 0,
    rho: float = 7.0,
    lambda_min: float | None = None,
) -> torch.Tensor:
    """Decreasing float64 model-evaluation times on the training grid ``[0, T-1]``.

    * ``linspace``: evenly spaced from ``T-1`` to 0, rounded (Lin et al. 2024, Table 2);
    * ``leading``: ``k * (T // N) + steps_offset`` (DDIM, Song et al. 2021a);
    * ``trailing``: ``round(T - k T/N) - 1``, starting exactly at ``T-1`` (Lin et al. 2024);
    * ``log_snr``: uniform in log-SNR ``lambda_t`` between ``t=T-1`` and ``t=0`` (Lu et al. 2022a, Sec. 3.3),
      mapped back to fractional times by interpolating ``log sigma_t`` (needs ``alphas_cumprod``). With
      ``lambda_min`` (half log-SNR ``log(alpha / sigma)``) above ``lambda_{T-1}``, the grid is uniform between
      ``lambda_min`` and ``lambda_0`` instead and its first point is moved to ``T-1``, so sampling still starts from
      the prior but spends no further evaluations where the data are drowned in noise;
    * ``karras``: the noise levels of Karras et al. (2022), Eq. 5, between the training extremes, mapped back the
      same way (needs ``alphas_cumprod``).

    Raises:
        ValueError: for an unknown spacing, or ``num_inference_steps`` outside ``[1, T]``.
    """
    n, big_t = int(num_inference_steps), int(num_train_timesteps)
    if not 1 <= n <= big_t:
        raise ValueError(f"num_inference_steps must be in [1, {big_t}], got {num_inference_steps}")
    if spacing == "linspace":
        return torch.linspace(big_t - 1, 0, n, dtype=torch.float64).round()
    if spacing == "leading":
        step = big_t // n
        return (torch.arange(n - 1, -1, -1, dtype=torch.float64) * step + steps_offset).clamp(0, big_t - 1)
    if spacing == "trailing":
        return (torch.arange(big_t, 0, -big_t / n, dtype=torch.float64)[:n].round() - 1).clamp(0, big_t - 1)
    if spacing in ("log_snr", "karras"):
        if alphas_cumprod is None:
            raise ValueError(f"spacing {spacing!r} needs the alphas_cumprod table")
        ls = log_sigma_table(alphas_cumprod)
        if spacing == "log_snr":
            # ls is log(sigma / alpha) = -lambda: decreasing lambda_min clips the top of this range
            top = float(ls[-1]) if lambda_min is None else min(float(ls[-1]), -float(lambda_min))
            targets = torch.linspace(top, float(ls[0]), n, dtype=torch.float64)
            targets[0] = ls[-1]
        else:
            targets = karras_sigmas(n, float(ls[0].exp()), float(ls[-1].exp()), rho).log()
        return log_sigma_to_timestep(alphas_cumprod, targets).clamp(0, big_t - 1)
    raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {TIMESTEP_SPACINGS}")


def clip_x0(x0: torch.Tensor, clip_range: float = 1.0) -> torch.Tensor:
    """Static clipping of a predicted clean sample to ``[-clip_range, clip_range]`` (Ho et al. 2020)."""
    return x0.clamp(-clip_range, clip_range)


def dynamic_threshold(x0: torch.Tensor, ratio: float = 0.995, max_value: float = 1.0) -> torch.Tensor:
    """Dynamic thresholding of Saharia et al. (2022), Sec. 2.3.

    Per sample, ``s`` is the ``ratio`` quantile of ``|x0|``, clamped to ``[1, max_value]``; ``x0`` is clipped to
    ``[-s, s]`` and divided by ``s``.
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    flat = x0.reshape(x0.shape[0], -1).abs().float()
    s = torch.quantile(flat, ratio, dim=1).clamp(min=1.0, max=max(max_value, 1.0)).to(x0.dtype)
    s = append_dims(s, x0.ndim)
    return torch.maximum(torch.minimum(x0, s), -s) / s


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` drawn from ``generator`` (on the generator's device, then moved)."""
    if generator is None:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device)
    noise = torch.randn(x.shape, dtype=x.dtype, device=generator.device, generator=generator)
    return noise.to(x.device)


# ---------------------------------------------------------------------------------------------- base classes
class BaseScheduler(Scheduler):
    """Common base for every sampler: prediction types, x0 post-processing, dtype handling and the forward process.

    It subclasses MONAI's ``Scheduler`` (an ``nn.Module``) so ``isinstance`` checks in MONAI inferers pass, but it does
    not run ``Scheduler.__init__``, which stores tables as plain attributes; subclasses register buffers instead.

    Args:
        num_train_timesteps: number of training steps ``T``; model timesteps live in ``[0, T-1]``.
        prediction_type: what the network predicts: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        clip_sample: clip the predicted x0 to ``[clip_sample_min, clip_sample_max]``. Off by default, unlike MONAI's
            DDPM/DDIM (on, to ``[-1, 1]``): medical intensities are often not scaled to ``[-1, 1]`` (CT numbers,
            z-scored MRI), and a silent clip there distorts every sample.
        clip_sample_range: the symmetric bound, ``[-clip_sample_range, clip_sample_range]``.
        clip_sample_min, clip_sample_max: MONAI's asymmetric bounds; when given they override ``clip_sample_range``.
        thresholding: apply dynamic thresholding (Saharia et al. 2022) to the predicted x0.
        dynamic_thresholding_ratio: quantile of ``|x0|`` used by dynamic thresholding.
        sample_max_value: the largest threshold dynamic thresholding may use.
    """

    #: VP processes start from a standard normal
    init_noise_sigma: float = 1.0

    #: position of the next step in ``timesteps`` and where the run began (see ``set_begin_index``)
    _step_index: int = 0
    _begin_index: int = 0

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        clip_sample_min: float | None = None,
        clip_sample_max: float | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}")
        if clip_sample and thresholding:
            raise ValueError("choose at most one of clip_sample and thresholding")
        if clip_sample_range <= 0:
            raise ValueError(f"clip_sample_range must be positive, got {clip_sample_range}")
        self.clip_sample_min = -float(clip_sample_range) if clip_sample_min is None else float(clip_sample_min)
        self.clip_sample_max = float(clip_sample_range) if clip_sample_max is None else float(clip_sample_max)
        if not self.clip_sample_min < self.clip_sample_max:
            raise ValueError(
                f"clip_sample_min must be below clip_sample_max, got [{self.clip_sample_min}, {self.clip_sample_max}]"
            )
        self.num_train_timesteps = num_train_timesteps
        self.prediction_type: str = PredictionType.of(prediction_type).value
        self.clip_sample = bool(clip_sample)
        self.clip_sample_range = float(clip_sample_range)
        self.thresholding = bool(thresholding)
        self.dynamic_thresholding_ratio = float(dynamic_thresholding_ratio)
        self.sample_max_value = float(sample_max_value)
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(num_train_timesteps - 1, -1, -1)

    # --------------------------------------------------------------------------------------- to implement
    def marginal_coefficients(self, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` of the forward process ``x_t = alpha x0 + sigma eps`` at ``timesteps`` (float64)."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- shared behaviour
    def _timestep_tensor(self, timesteps: torch.Tensor | float | int) -> torch.Tensor:
        t = torch.as_tensor(timesteps)
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"timesteps must be real numbers, got dtype {t.dtype}")
        t = t.to(device=self._table_device(), dtype=torch.float64)
        if ((t < 0) | (t > self.num_train_timesteps - 1)).any():
            raise ValueError(f"timesteps must lie in [0, {self.num_train_timesteps - 1}], got {t.tolist()}")
        return t

    def _table_device(self) -> torch.device:
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @staticmethod
    def _check_pair(model_output: torch.Tensor, sample: torch.Tensor) -> None:
        """The entry check of every ``step``: two floating-point tensors, ``sample`` batch-first, both finite.

        The finiteness test costs one reduction per tensor and a single host synchronisation per step; the element
        count is only computed for the error message.

        Raises:
            TypeError: a non-tensor, or an integer/bool tensor (``step`` would truncate it).
            ValueError: ``sample`` not (B, C, *spatial), or NaN/inf in ``model_output`` or ``sample`` (named).
        """
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor):
            raise TypeError(
                f"model_output and sample must be tensors, got {type(model_output).__name__}, {type(sample).__name__}"
            )
        if sample.ndim < 3:
            raise ValueError(f"sample must be batch-first, channel-first (B, C, *spatial), got {tuple(sample.shape)}")
        for name, value in (("model_output", model_output), ("sample", sample)):
            if not (value.is_floating_point() or value.is_complex()):
                raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype} (it would be truncated)")
        if not bool(torch.isfinite(model_output).all() & torch.isfinite(sample).all()):
            for name, value in (("model_output", model_output), ("sample", sample)):
                bad = int((~torch.isfinite(value)).sum())
                if bad:
                    raise ValueError(
                        f"{name} holds {bad} NaN or infinite value(s) out of {value.numel()}; expected finite values "
                        "(a diverged model or an earlier step that overflowed)"
                    )

    def _check_start_scale(self, sample: torch.Tensor, sigma_start: float) -> None:
        """Refuse a first step from unscaled noise when the process starts far above unit variance (VE processes).

        MONAI's ``DiffusionInferer`` starts from ``input_noise`` as given and never multiplies it by
        ``init_noise_sigma``; for a VE process (``init_noise_sigma = sigma_max``, e.g. 50-380) every sample would then
        be wrong without an error. At the first time of a run the state holds noise of std ``sigma_start`` (the
        marginal sigma there) plus data, so a state of std below a quarter of it cannot come from the process and the
        first step refuses it (only when ``sigma_start > 2``: VP processes and low starts are never checked).

        Raises:
            ValueError: naming the cause and both ways out.
        """
        if sigma_start <= 2.0 or sample.numel() < 16:
            return
        std = float(sample.detach().float().std())
        if std < sigma_start / 4:
            raise ValueError(
                f"{type(self).__name__} starts from noise of std {sigma_start:g} (noise * init_noise_sigma for a full "
                f"run), but its first step got a sample of std {std:.3g}: MONAI's DiffusionInferer does not scale its "
                "input noise; give it input_noise * scheduler.init_noise_sigma, or use "
                "monai_diffusion.inferers.DiffusionInferer"
            )

    def add_noise(
        self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor:
        """The training forward process ``x_t = alpha_t x0 + sigma_t eps``; never mutates the scheduler.

        Args:
            original_samples: clean data ``x0`` (B, C, *spatial).
            noise: standard normal noise of the same shape.
            timesteps: a scalar or one time per sample, shape (B,); fractional times are allowed.

        Returns:
            the noised samples, in the dtype of ``original_samples``.
        """
        if original_samples.shape != noise.shape:
            raise ValueError(f"original_samples {tuple(original_samples.shape)} and noise {tuple(noise.shape)} differ")
        alpha, sigma = self.marginal_coefficients(timesteps)
        x = original_samples.float()
        a = as_batch_coefficient(alpha.float().to(x.device), x)
        s = as_batch_coefficient(sigma.float().to(x.device), x)
        return (a * x + s * noise.float()).to(original_samples.dtype)

    def get_velocity(
        self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor | float | int
    ) -> torch.Tensor:
        """The v-prediction target ``v = alpha eps - sigma x0`` (Salimans & Ho 2022), never mutating the scheduler."""
        alpha, sigma = self.marginal_coefficients(timesteps)
        v = PredictionType.V_PREDICTION.from_x0_eps(sample.float(), noise.float(), alpha.float(), sigma.float())
        return v.to(sample.dtype)

    def predict_x0_eps(
        self,
        model_output: torch.Tensor,
        sample: torch.Tensor,
        alpha: float | torch.Tensor,
        sigma: float | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` from the network output, with the configured clipping or thresholding applied to x0.

        When x0 is clipped, eps is recomputed from the clipped x0 so that the pair stays consistent with ``x_t``.
        """
        x0, eps = PredictionType(self.prediction_type).to_x0_eps(model_output, sample, alpha, sigma)
        if self.clip_sample or self.thresholding:
            if self.clip_sample:
                x0 = x0.clamp(self.clip_sample_min, self.clip_sample_max)
            else:
                x0 = dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
            a = as_batch_coefficient(alpha, sample)
            s = as_batch_coefficient(sigma, sample)
            eps = (sample - a * x0) / s
        return x0, eps

    @property
    def begin_index(self) -> int:
        """The entry of ``timesteps`` the current run starts at (0 unless ``set_begin_index`` moved it)."""
        return self._begin_index

    def set_begin_index(self, index: int) -> None:
        """Start the next run at entry ``index`` of ``timesteps`` (partial noising: SDEdit, AnoDDPM).

        Call right after ``set_timesteps`` (which resets the position to 0). Stateful samplers keep their position in
        ``_step_index`` and start with an empty multistep history (first order there, as at the start of a full
        run). An entry where no step can start (a correction stage) moves to the next entry at the same time, see
        ``_step_start``; ``begin_index`` tells where the run starts. ``DiffusionInferer`` calls this when ``sample``
        starts mid-grid.

        Raises:
            ValueError: ``index`` outside ``timesteps``, or a sampling run already under way.
        """
        n = len(self.timesteps)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise ValueError(f"begin index must be an int in [0, {n}), got {index!r}")
        if self._step_index != self._begin_index:
            raise ValueError(
                f"{type(self).__name__}: a sampling run is under way; call set_timesteps before set_begin_index"
            )
        self._begin_index = self._step_index = self._step_start(index)

    def _step_start(self, index: int) -> int:
        """The entry at or after ``index``, at the same time, where a step can start (every entry by default)."""
        return index


class DiscreteTimeScheduler(BaseScheduler):
    """Base for samplers of a discrete-time variance-preserving (VP) process (DDPM, DDIM, DPM-Solver, Karras).

    Holds ``betas``, ``alphas`` and ``alphas_cumprod`` as registered buffers (float32), with
    ``abar_t = prod_{s<=t} (1 - beta_s)`` and ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` (Ho et al. 2020, Eq. 4).
    Fractional times (used by log-SNR and Karras spacings and by Heun's extra evaluations) are those of
    :func:`~.process.table_coefficients`: linear interpolation of ``log sigma_t = 0.5 log((1 - abar_t)/abar_t)``
    between integer times, so the forward process, the sampler and any network evaluated at fractional times agree.

    Args:
        num_train_timesteps: number of training steps ``T``.
        schedule: a MONAI ``NoiseSchedules`` name or alias (``"linear_beta"``, ``"scaled_linear_beta"``,
            ``"cosine"``, ...).
        prediction_type, clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value:
            see :class:`BaseScheduler`.
        timestep_spacing: one of :data:`TIMESTEP_SPACINGS`; see :func:`spaced_timesteps`.
        steps_offset: offset added to ``leading`` timesteps.
        lambda_min: with ``timestep_spacing="log_snr"``, the lowest half log-SNR ``log(alpha / sigma)`` of the grid
            after its first point at ``T-1`` (see :func:`spaced_timesteps`); ``None`` (default): the schedule's own.
        clip_sample_min, clip_sample_max: MONAI's keywords, taken from ``schedule_args`` (see :class:`BaseScheduler`).
        trained_with: optionally the scheduler the model was trained with (``"@train_scheduler"`` in a bundle); a
            ``ValueError`` naming both forward processes unless they agree (see ``check_forward_process``).
        schedule_args: keyword arguments of the schedule function, e.g. ``beta_start``, ``beta_end``.
    """

    #: whether this sampler can evaluate the model at fractional times (otherwise timesteps are rounded)
    allows_fractional_timesteps: bool = False
    #: default spacing when ``timestep_spacing`` is not given
    default_spacing: str = "linspace"
    #: whether ``linspace``/``log_snr``/``karras`` grids end with an evaluation at ``t = 0``; solvers whose last
    #: step jumps to clean data from the predicted x0 set it False and spend that evaluation higher up instead
    last_timestep_zero: bool = True

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        prediction_type: str = "epsilon",
        timestep_spacing: str | None = None,
        steps_offset: int = 0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        lambda_min: float | None = None,
        trained_with: Any = None,
        **schedule_args,
    ) -> None:
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            clip_sample_min=schedule_args.pop("clip_sample_min", None),
            clip_sample_max=schedule_args.pop("clip_sample_max", None),
        )
        spacing = timestep_spacing or self.default_spacing
        if spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
        self.schedule = schedule
        self.timestep_spacing = spacing
        if lambda_min is not None and spacing != "log_snr":
            raise ValueError(f"lambda_min applies to timestep_spacing='log_snr', not {spacing!r}")
        self.lambda_min = None if lambda_min is None else float(lambda_min)
        self.steps_offset = int(steps_offset)
        betas, alphas, alphas_cumprod = make_schedule(schedule, num_train_timesteps, **schedule_args)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alphas", alphas.float())
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        if trained_with is not None:
            check_forward_process(trained_with, self)

    # --------------------------------------------------------------------------------------- forward process
    def log_sigmas(self) -> torch.Tensor:
        """``log sigma_t`` at the integer training times (float64), see :func:`log_sigma_table`."""
        return log_sigma_table(self.alphas_cumprod)

    def marginal_coefficients(self, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(abar_t), sqrt(1 - abar_t))`` at (possibly fractional) ``timesteps``, float64, same shape, on the
        tables' device; fractional times as defined by :func:`~.process.table_coefficients`.

        Raises:
            ValueError: if a time lies outside ``[0, T-1]``.
        """
        return table_coefficients(self.alphas_cumprod, self._timestep_tensor(timesteps))

    def sigma_to_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional training time whose VE noise level ``sqrt((1 - abar)/abar)`` equals ``sigma`` (float64)."""
        return log_sigma_to_timestep(self.alphas_cumprod, torch.as_tensor(sigma, dtype=torch.float64).log())

    # --------------------------------------------------------------------------------------- timesteps
    def _make_timesteps(
        self, num_inference_steps: int | None, timesteps: Sequence[float] | torch.Tensor | None
    ) -> torch.Tensor:
        """Decreasing float64 model times from a step count (with the configured spacing) or a custom list."""
        if timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("pass either num_inference_steps or timesteps, not both")
            t = torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1)
            if t.numel() == 0:
                raise ValueError("custom timesteps must not be empty")
            if (t[1:] >= t[:-1]).any():
                raise ValueError(f"custom timesteps must be strictly decreasing, got {t.tolist()}")
            if t[0] > self.num_train_timesteps - 1 or t[-1] < 0:
                raise ValueError(f"custom timesteps must lie in [0, {self.num_train_timesteps - 1}], got {t.tolist()}")
            if not self.allows_fractional_timesteps and (t != t.round()).any():
                raise ValueError(f"{type(self).__name__} needs integer timesteps, got {t.tolist()}")
            return t
        if num_inference_steps is None:
            raise ValueError("pass num_inference_steps or timesteps")
        if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
            raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        # solvers whose final step jumps to clean data need no evaluation at t=0: place N+1 points, drop the last
        drop_last = not self.last_timestep_zero and self.timestep_spacing in ("linspace", "log_snr", "karras")
        if drop_last and num_inference_steps >= self.num_train_timesteps:
            raise ValueError(f"num_inference_steps must be < {self.num_train_timesteps}, got {num_inference_steps}")
        t = spaced_timesteps(
            num_inference_steps + int(drop_last),
            self.num_train_timesteps,
            self.timestep_spacing,
            alphas_cumprod=self.alphas_cumprod.cpu(),
            steps_offset=self.steps_offset,
            rho=float(getattr(self, "rho", 7.0)),
            lambda_min=self.lambda_min,
        )
        if drop_last:
            t = t[:-1]
        if not self.allows_fractional_timesteps:
            t = t.round()
        if (t[1:] >= t[:-1]).any():
            raise ValueError(
                f"{num_inference_steps} steps with spacing {self.timestep_spacing!r} give repeated integer timesteps "
                f"({int(t.unique().numel())} distinct); use fewer steps or another spacing"
            )
        return t

    def _publish_timesteps(self, t: torch.Tensor, device: str | torch.device | None) -> None:
        """Store the public ``timesteps`` (int64 when integral, else float32) and ``num_inference_steps``."""
        self.num_inference_steps = int(t.numel())
        public = t.long() if bool((t == t.round()).all()) else t.float()
        self.timesteps = public.to(device) if device is not None else public
        self._step_index = self._begin_index = 0  # a new grid starts a new run

    def _index_of(self, timestep: torch.Tensor | float | int) -> int:
        """Position of ``timestep`` in ``self.timesteps`` (the first match)."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0]) if torch.is_tensor(timestep) else float(timestep)
        hits = (self.timesteps.double().cpu() - t).abs() < 1e-4
        if not hits.any():
            raise ValueError(f"timestep {t} is not one of this scheduler's timesteps; call set_timesteps first")
        return int(hits.nonzero()[0])

    def _check_counter(self, counter: int, timestep: torch.Tensor | float | int) -> None:
        """For stateful samplers that advance a step counter: ``timestep`` must be ``self.timesteps[counter]``.

        Raises:
            ValueError: when the loop ran past the end, or ``timestep`` is not the expected entry (out of order,
                or ``set_timesteps`` was not called before a new sampling run).
        """
        if counter >= len(self.timesteps):
            raise ValueError(
                f"{type(self).__name__}: all {len(self.timesteps)} timesteps were used; call set_timesteps to restart"
            )
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        expected = float(self.timesteps[counter])
        if abs(t - expected) > 1e-3 * max(1.0, abs(expected)):
            raise ValueError(
                f"{type(self).__name__} expected timestep {expected} (entry {counter} of timesteps), got {t}; "
                "steps must follow scheduler.timesteps in order after set_timesteps"
            )
