"""Score SDEs (Song et al., 2021) and their samplers, in the shared scheduler protocol.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling through Stochastic
Differential Equations", ICLR 2021 (arXiv:2011.13456), referred to below as [SDE].

Forward processes (the SDE objects, continuous time ``t`` in ``[0, 1]``):

* :class:`VPSDE` (eq. 11): ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` with ``beta(t) = beta_min + t (beta_max -
  beta_min)``. Marginal ``x_t = alpha x0 + sigma eps`` with ``alpha = exp(-1/2 B(t))``, ``sigma^2 = 1 - alpha^2``,
  ``B(t) = int_0^t beta``. With ``beta_min = 0.1``, ``beta_max = 20`` this is the continuum limit of DDPM's linear
  schedule (``beta_i`` from 1e-4 to 0.02 over 1000 steps, ``beta(t) = N beta_i``).
* :class:`SubVPSDE` (eq. 12): same drift, ``g(t)^2 = beta(t) (1 - exp(-2 B(t)))``; ``sigma = 1 - alpha^2``.
* :class:`VESDE` (eq. 9): ``dx = sqrt(d[sigma^2(t)]/dt) dw`` with ``sigma(t) = sigma_min (sigma_max /
  sigma_min)^t``; ``alpha = 1``, ``sigma = sigma(t)``; prior ``N(0, sigma_max^2)``. NCSN's geometric noise levels
  (:mod:`.ncsn`) are this process at discrete times.

Samplers (each one a ``monai.networks.schedulers.Scheduler``, driven by the plain loop
``x = noise * s.init_noise_sigma; for t in s.timesteps: x, x0 = s.step(model(x, t), t, x)``):

* :class:`EulerMaruyamaScheduler`: the reverse-time SDE (eq. 6) with Euler-Maruyama steps.
* :class:`PredictorCorrectorScheduler`: [SDE] Algorithm 1 (PC sampling); predictor "reverse_diffusion" (eq. 46/47),
  "euler_maruyama" or "none"; corrector: Langevin MCMC with step size set by a signal-to-noise ratio ``snr``
  (Algorithms 4 and 5). Every corrector model evaluation is its own entry of ``timesteps``.
* :class:`ProbabilityFlowScheduler`: the probability-flow ODE (eq. 13) with Heun's second-order method; the
  second evaluation of each Heun step is its own entry of ``timesteps``.

Units and conventions shared with the rest of ``monai_diffusion.networks.schedulers``:

* The network is conditioned on ``timestep = t * (num_train_timesteps - 1)`` (floats between 0 and 999 by default),
  so a network trained with DDPM's integer timesteps and linear schedule is sampled by the VP samplers (the
  label mapping the [SDE] reference code uses for discretely trained VP models). The two forward processes agree
  to within 0.0017 in ``alpha`` and 0.0101 in ``sigma`` at every integer timestep (largest near t = 0, where DDPM's
  first step already has sigma = 0.01); ``tests/networks/schedulers/test_sde.py`` holds them to that.
* The network predicts ``epsilon`` (default), ``sample`` (x0) or ``v_prediction`` in every framework; the score is
  ``-eps / sigma`` (``eps`` recovered from x0 or v through the marginal ``(alpha, sigma)``).
* Shared forward processes (a model trained with one may be sampled by every sampler listed with it):

  ====================================  =============================================================
  forward process used in training      samplers that share it
  ====================================  =============================================================
  DDPM linear betas (1e-4..0.02, N)     the discrete samplers (DDPM, DDIM, DPM-Solver++, UniPC, ...) and every SDE
                                        sampler with ``sde="vp"`` (``beta_min = N 1e-4``, ``beta_max = N 0.02``)
  ``VPSDE``                             the same as above
  ``SubVPSDE``                          the SDE samplers with ``sde="subvp"`` only
  ``VESDE`` / NCSN (same sigma range)   the SDE samplers with ``sde="ve"`` and ``NCSNScheduler``
  ====================================  =============================================================

  :func:`check_forward_process` compares a training scheduler with a sampler and raises a ``ValueError`` naming
  both processes when they differ (e.g. a VE sampler for a VP-trained model); every sampler here runs it at
  construction when given ``trained_with=<training scheduler>`` (``"@train_scheduler"`` in a bundle), and
  ``from_training_scheduler`` builds a sampler with the SDE that matches a training scheduler.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai_diffusion.networks.schedulers.base import BaseScheduler, karras_sigmas, randn_like

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "build_sde",
    "sde_from_training_scheduler",
    "check_forward_process",
    "EulerMaruyamaScheduler",
    "PredictorCorrectorScheduler",
    "ProbabilityFlowScheduler",
]


def _t64(t: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


def _bcast(coef: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample (B,) coefficient against ``x`` of shape (B, ...), in ``x``'s dtype."""
    c = torch.as_tensor(coef, device=x.device).to(x.dtype)
    if c.ndim == 0:
        return c
    if c.ndim != 1 or c.shape[0] != x.shape[0]:
        raise ValueError(f"coefficient must be a scalar or have shape ({x.shape[0]},), got {tuple(c.shape)}")
    return c.reshape(-1, *([1] * (x.ndim - 1)))


# ---------------------------------------------------------------------------------------------------- SDE objects
class SDE:
    """A linear forward SDE ``dx = f(t) x dt + g(t) dw`` on ``t`` in ``[0, 1]`` with Gaussian marginals.

    Subclasses define :meth:`marginal`, :meth:`drift_coef` and :meth:`diffusion`; everything else (the drift, the
    exact one-step transition used by the reverse-diffusion predictor, the prior) follows from them. Times may be
    Python floats or float tensors; results are float64 tensors.
    """

    #: short name used by :func:`build_sde` and in error messages
    name: str = "sde"
    #: smallest time the samplers integrate to (``eps`` in [SDE]); the last step denoises from there
    default_t_min: float = 1e-3

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha(t), sigma(t))`` such that ``x_t = alpha x0 + sigma eps`` ([SDE] eq. 29/33)."""
        raise NotImplementedError

    def drift_coef(self, t: float | torch.Tensor) -> torch.Tensor:
        """``f(t)`` in the linear drift ``f(x, t) = f(t) x``."""
        raise NotImplementedError

    def diffusion(self, t: float | torch.Tensor) -> torch.Tensor:
        """The diffusion coefficient ``g(t)``."""
        raise NotImplementedError

    @property
    def prior_std(self) -> float:
        """Standard deviation of the prior ``p_1`` the samplers start from."""
        raise NotImplementedError

    def config(self) -> dict[str, float]:
        """JSON-serialisable constructor arguments."""
        raise NotImplementedError

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """A draw from the prior ``N(0, prior_std^2 I)`` (drawn on the generator's device, then moved)."""
        gen_device = generator.device if generator is not None else device
        z = torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
        return (z * self.prior_std).to(device) if device is not None else z * self.prior_std

    def drift(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``f(x, t)``, broadcast over a batch when ``t`` has shape (B,)."""
        return _bcast(self.drift_coef(t), x) * x

    def transition(self, t: float | torch.Tensor, s: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact forward transition from time ``s`` to ``t > s``: ``x_t = a x_s + b z``; returns ``(a, b)``.

        For a linear SDE with marginals ``(alpha, sigma)``: ``a = alpha_t / alpha_s`` and
        ``b^2 = sigma_t^2 - a^2 sigma_s^2``. This is the discretisation of [SDE] Appendix E (``f_i``, ``G_i``) for
        VE (``b^2 = sigma_t^2 - sigma_s^2``) and VP (``b^2 = 1 - a^2``, the DDPM step), and its exact analogue for
        sub-VP.
        """
        a_t, s_t = self.marginal(t)
        a_s, s_s = self.marginal(s)
        a = a_t / a_s
        b2 = (s_t**2 - (a * s_s) ** 2).clamp_min(0.0)
        return a, b2.sqrt()

    def langevin_alpha(self, t: float | torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        """The ``alpha_i`` factor of the Langevin corrector step size ([SDE] Algorithms 4/5).

        1 for VE; for VP and sub-VP the per-step DDPM ``alpha_i = 1 - beta_i`` of an ``N``-step discretisation,
        ``1 - beta(t) / N``.
        """
        return torch.ones((), dtype=torch.float64)

    def log_snr(self, t: float | torch.Tensor) -> torch.Tensor:
        """``lambda(t) = log(alpha^2 / sigma^2)``, decreasing in ``t`` (Kingma et al., 2021)."""
        a, s = self.marginal(t)
        return 2.0 * (torch.log(a) - torch.log(s))

    def time_of_log_snr(self, lam: torch.Tensor, iterations: int = 60) -> torch.Tensor:
        """Inverse of :meth:`log_snr` on ``[0, 1]`` by bisection (vectorised; exact to ``2^-iterations``)."""
        lam = torch.as_tensor(lam, dtype=torch.float64)
        lo = torch.zeros_like(lam)
        hi = torch.ones_like(lam)
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            above = self.log_snr(mid) > lam  # log-SNR decreases with t: the root lies to the right
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return 0.5 * (lo + hi)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self.config().items())))


class VPSDE(SDE):
    """Variance-preserving SDE ([SDE] eq. 11), the continuous DDPM.

    Args:
        beta_min: ``beta(0)``; DDPM's ``beta_1 = 1e-4`` times ``N = 1000``.
        beta_max: ``beta(1)``; DDPM's ``beta_N = 0.02`` times ``N``.
    """

    name = "vp"
    default_t_min = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not (0 <= float(beta_min) < float(beta_max)):
            raise ValueError(f"need 0 <= beta_min < beta_max, got beta_min={beta_min}, beta_max={beta_max}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def beta(self, t: float | torch.Tensor) -> torch.Tensor:
        """``beta(t) = beta_min + t (beta_max - beta_min)``."""
        return self.beta_min + _t64(t) * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: float | torch.Tensor) -> torch.Tensor:
        """``B(t) = int_0^t beta(s) ds``."""
        t = _t64(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        big_b = self.integrated_beta(t)
        return torch.exp(-0.5 * big_b), torch.sqrt(-torch.expm1(-big_b))

    def drift_coef(self, t: float | torch.Tensor) -> torch.Tensor:
        return -0.5 * self.beta(t)

    def diffusion(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.beta(t).sqrt()

    @property
    def prior_std(self) -> float:
        return 1.0

    def langevin_alpha(self, t: float | torch.Tensor, num_train_timesteps: int) -> torch.Tensor:
        return 1.0 - self.beta(t) / num_train_timesteps

    def config(self) -> dict[str, float]:
        return {"beta_min": self.beta_min, "beta_max": self.beta_max}


class SubVPSDE(VPSDE):
    """Sub-VP SDE ([SDE] eq. 12): the VP drift with ``g(t)^2 = beta(t) (1 - exp(-2 B(t)))``.

    Its marginal has the VP mean ``alpha = exp(-B/2)`` and the smaller standard deviation ``sigma = 1 - alpha^2``.
    """

    name = "subvp"

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        big_b = self.integrated_beta(t)
        return torch.exp(-0.5 * big_b), -torch.expm1(-big_b)

    def diffusion(self, t: float | torch.Tensor) -> torch.Tensor:
        return (self.beta(t) * -torch.expm1(-2.0 * self.integrated_beta(t))).sqrt()


class VESDE(SDE):
    """Variance-exploding SDE ([SDE] eq. 9), the continuous NCSN.

    Args:
        sigma_min: noise level at ``t = 0`` (NCSN's smallest ``sigma_L``).
        sigma_max: noise level at ``t = 1`` and prior standard deviation (about the largest distance between
            training points, Song & Ermon 2020, Technique 1).
    """

    name = "ve"
    default_t_min = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not (0 < float(sigma_min) < float(sigma_max)):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def sigma(self, t: float | torch.Tensor) -> torch.Tensor:
        """``sigma(t) = sigma_min (sigma_max / sigma_min)^t``."""
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** _t64(t)

    def marginal(self, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.sigma(t)
        return torch.ones_like(s), s

    def drift_coef(self, t: float | torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(_t64(t))

    def diffusion(self, t: float | torch.Tensor) -> torch.Tensor:
        return self.sigma(t) * math.sqrt(2.0 * math.log(self.sigma_max / self.sigma_min))

    def time_of_sigma(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`sigma`: the time at which the noise level is ``sigma``."""
        return torch.log(_t64(sigma) / self.sigma_min) / math.log(self.sigma_max / self.sigma_min)

    @property
    def prior_std(self) -> float:
        return self.sigma_max

    def config(self) -> dict[str, float]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}


SDE_REGISTRY: dict[str, type[SDE]] = {"vp": VPSDE, "subvp": SubVPSDE, "ve": VESDE}


def build_sde(sde: str | SDE | Mapping[str, Any] = "vp", sde_args: Mapping[str, Any] | None = None) -> SDE:
    """An SDE object from a name (``"vp"``, ``"subvp"``, ``"ve"``) plus arguments, or an SDE object.

    Bundle configs may give ``"sde": "ve", "sde_args": {"sigma_max": 20}`` or a nested
    ``{"_target_": "monai_diffusion.networks.schedulers.VESDE", "sigma_max": 20}`` (which the config parser
    instantiates before it reaches here). A plain mapping ``{"name": "ve", ...}`` is accepted too.

    Raises:
        ValueError: unknown name, or ``sde_args`` given together with an SDE object.
        TypeError: anything else.
    """
    if isinstance(sde, SDE):
        if sde_args:
            raise ValueError(f"sde_args {dict(sde_args)} given together with an SDE object {sde!r}")
        return sde
    if isinstance(sde, Mapping):
        args = dict(sde)
        name = args.pop("name", None)
        if name is None:
            raise ValueError(f"an SDE mapping needs a 'name' key (one of {sorted(SDE_REGISTRY)}), got {dict(sde)}")
        return build_sde(str(name), {**args, **dict(sde_args or {})})
    if isinstance(sde, str):
        key = sde.lower().replace("-", "").replace("_", "")
        if key not in SDE_REGISTRY:
            raise ValueError(f"unknown SDE {sde!r}; expected one of {sorted(SDE_REGISTRY)} or an SDE object")
        return SDE_REGISTRY[key](**dict(sde_args or {}))
    raise TypeError(f"sde must be a name, a mapping or an SDE object, got {type(sde).__name__}")


# ---------------------------------------------------------------------------------------------------- pure maths
def euler_maruyama_step(
    x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse-time SDE ([SDE] eq. 6) from ``t`` down to ``s < t``.

    ``x_s = x_t - [f(x_t, t) - g(t)^2 score] (t - s) + g(t) sqrt(t - s) z``; no noise term when ``noise`` is None.
    """
    dt = t - s
    g = sde.diffusion(t)
    out = x - (sde.drift(x, t) - _bcast(g**2, x) * score) * _bcast(dt, x)
    if noise is not None:
        out = out + _bcast(g * dt.sqrt(), x) * noise
    return out


def reverse_diffusion_step(
    x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """The reverse-diffusion predictor ([SDE] eq. 46/47) from ``t`` down to ``s``.

    With the forward step ``x_t = x_s + f_i + G_i z`` (``f_i = (a - 1) x``, ``G_i = b`` from
    :meth:`SDE.transition`): ``x_s = x_t - f_i + G_i^2 score + G_i z``.
    """
    a, b = sde.transition(t, s)
    out = x - _bcast(a - 1.0, x) * x + _bcast(b**2, x) * score
    if noise is not None:
        out = out + _bcast(b, x) * noise
    return out


def langevin_corrector_step(
    x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, snr: float, alpha: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """One Langevin MCMC step with the step size set by a signal-to-noise ratio ([SDE] Algorithms 4 and 5).

    ``eps = 2 alpha (snr ||z|| / ||score||)^2`` per sample (norms over all non-batch dimensions), then
    ``x + eps score + sqrt(2 eps) z``. A sample whose score is exactly zero (e.g. a freshly built MONAI UNet, whose
    output layer starts at zero) has no step size: it is left unchanged instead of turning into ``inf * 0 = NaN``.
    """
    dims = tuple(range(1, x.ndim))
    grad_norm = torch.linalg.vector_norm(score, dim=dims)
    noise_norm = torch.linalg.vector_norm(noise, dim=dims)
    ratio = torch.where(grad_norm > 0, noise_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny), 0.0)
    step = 2.0 * _bcast(alpha, noise_norm) * (snr * ratio) ** 2
    step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
    step = step.reshape(-1, *([1] * (x.ndim - 1)))
    return x + step * score + (2.0 * step).sqrt() * noise


def probability_flow_derivative(x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """``dx/dt`` of the probability-flow ODE ([SDE] eq. 13): ``f(x, t) - 1/2 g(t)^2 score``."""
    return sde.drift(x, t) - 0.5 * _bcast(sde.diffusion(t) ** 2, x) * score


# ---------------------------------------------------------------------------------------------------- compatibility
def _training_coefficients(scheduler: Any, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, sigma)`` of any training scheduler at integer ``timesteps`` (float64, CPU)."""
    if hasattr(scheduler, "marginal_coefficients"):
        a, s = scheduler.marginal_coefficients(timesteps)
        return torch.as_tensor(a, dtype=torch.float64).cpu(), torch.as_tensor(s, dtype=torch.float64).cpu()
    if hasattr(scheduler, "alphas_cumprod"):
        abar = torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64).cpu()[timesteps.long()]
        return abar.sqrt(), (1.0 - abar).sqrt()
    raise TypeError(
        f"{type(scheduler).__name__} describes no forward process: expected marginal_coefficients() or alphas_cumprod"
    )


def num_train_timesteps_of(scheduler: Any) -> int:
    """``num_train_timesteps`` of a MONAI-style scheduler or of a diffusers one (in its ``config``)."""
    n = getattr(scheduler, "num_train_timesteps", None)
    if n is None and hasattr(scheduler, "config"):
        n = getattr(scheduler.config, "num_train_timesteps", None)
    if n is None:
        raise TypeError(f"{type(scheduler).__name__} has no num_train_timesteps")
    return int(n)


def describe_forward_process(scheduler: Any) -> str:
    """A short human-readable name of a scheduler's forward process, for error messages."""
    sde = getattr(scheduler, "sde", None)
    if isinstance(sde, SDE):
        return repr(sde)
    schedule = getattr(scheduler, "schedule", None)
    if hasattr(scheduler, "alphas_cumprod"):
        return f"discrete VP ({type(scheduler).__name__}, schedule={schedule!r})"
    return type(scheduler).__name__


def check_forward_process(training_scheduler: Any, sampler: Any, atol: float = 0.02) -> float:
    """Check that ``sampler`` shares the forward process a model was trained with; return the largest deviation.

    Both are compared through ``(alpha, sigma)`` at every integer training timestep: the deviation is
    ``max(|alpha_1 - alpha_2|, |sigma_1 - sigma_2| / max(1, sigma_1))``. The default tolerance admits DDPM's linear
    schedule against :class:`VPSDE` (largest deviation 0.010, the continuum-limit error) and rejects the cosine
    schedule (0.2) and any VP/VE or VP/sub-VP mix.

    Args:
        training_scheduler: the scheduler whose ``add_noise`` trained the model (``monai_diffusion``, MONAI or
            diffusers: anything with ``marginal_coefficients`` or ``alphas_cumprod``).
        sampler: the scheduler meant to sample that model.
        atol: largest admissible deviation.

    Raises:
        ValueError: if the training-step counts or the forward processes differ, naming both processes.
    """
    n_train, n_sampler = num_train_timesteps_of(training_scheduler), num_train_timesteps_of(sampler)
    if n_train != n_sampler:
        raise ValueError(
            f"the model was trained with num_train_timesteps={n_train} but {type(sampler).__name__} uses {n_sampler}"
        )
    ts = torch.arange(n_train, dtype=torch.float64)
    a1, s1 = _training_coefficients(training_scheduler, ts)
    a2, s2 = _training_coefficients(sampler, ts)
    dev = torch.maximum((a1 - a2).abs(), (s1 - s2).abs() / s1.clamp_min(1.0))
    worst = float(dev.max())
    if not worst <= atol:
        k = int(dev.argmax())
        raise ValueError(
            f"{type(sampler).__name__} with {describe_forward_process(sampler)} cannot sample a model trained with "
            f"{describe_forward_process(training_scheduler)}: at timestep {k} the training process has "
            f"(alpha, sigma) = ({float(a1[k]):.4g}, {float(s1[k]):.4g}) and the sampler "
            f"({float(a2[k]):.4g}, {float(s2[k]):.4g}). Use a sampler that shares the forward process "
            "(see the table in monai_diffusion.networks.schedulers.sde)."
        )
    return worst


def sde_from_training_scheduler(scheduler: Any) -> SDE:
    """The SDE matching the forward process of a training scheduler.

    * a score-SDE or NCSN scheduler: its own SDE;
    * a discrete VP scheduler (``monai_diffusion``, MONAI or diffusers DDPM/DDIM) with a *linear* beta schedule:
      ``VPSDE(N beta_1, N beta_N)`` ([SDE] Appendix B);
    * any other discrete schedule (cosine, scaled-linear, ...) has no SDE here: ``ValueError``.

    Raises:
        ValueError: if no SDE matches, or the matching one deviates by more than :func:`check_forward_process`
            admits.
    """
    sde = getattr(scheduler, "sde", None)
    if isinstance(sde, SDE):
        return sde
    betas = getattr(scheduler, "betas", None)
    if betas is None:
        raise ValueError(
            f"cannot infer an SDE from {type(scheduler).__name__}: it has neither an `sde` nor a `betas` table"
        )
    b = torch.as_tensor(betas, dtype=torch.float64).cpu()
    n = b.numel()
    linear = torch.linspace(float(b[0]), float(b[-1]), n, dtype=torch.float64)
    if not torch.allclose(b, linear, rtol=1e-4, atol=1e-7):
        raise ValueError(
            f"{type(scheduler).__name__} does not use a linear beta schedule; only linear-beta DDPM schedules have a "
            "VP SDE counterpart here. Sample it with the discrete samplers (DDPM, DDIM, DPM-Solver++, Euler/Heun)."
        )
    # float32 tables: round N * beta to 6 significant digits (0.1 and 20 rather than 0.09999999747 and 19.9999995)
    out = VPSDE(beta_min=float(f"{float(b[0]) * n:.6g}"), beta_max=float(f"{float(b[-1]) * n:.6g}"))
    ts = torch.arange(n, dtype=torch.float64)
    a1, s1 = _training_coefficients(scheduler, ts)
    a2, s2 = out.marginal(ts / (n - 1))
    worst = float(torch.maximum((a1 - a2).abs(), (s1 - s2).abs()).max())
    if worst > 0.02:
        raise ValueError(f"{type(scheduler).__name__}'s schedule deviates from {out!r} by {worst:.3g} (> 0.02)")
    return out


# ---------------------------------------------------------------------------------------------------- samplers
#: kinds of entries of ``timesteps``: a step to the next time, a Langevin corrector step at the current time,
#: the second evaluation of a Heun step, and the last entry (denoise, or a noise-free step to t = 0)
PREDICT, CORRECT, HEUN, FINAL = 0, 1, 2, 3
TIME_SPACINGS = ("uniform", "log_snr", "karras")


class ContinuousTimeScheduler(BaseScheduler):
    """Common base of the score-SDE and NCSN samplers: an SDE forward process in network-timestep units.

    The network timestep of continuous time ``t`` is ``t * (num_train_timesteps - 1)``. Every entry of
    ``timesteps`` is one model evaluation; an internal plan records, per entry, its kind (predictor, corrector,
    Heun correction, final) and its times, and ``step`` follows it in order. ``step`` therefore must be called with
    the entries of ``timesteps`` in order (it checks, and raises ``ValueError`` otherwise); ``set_timesteps`` resets
    the position and any saved multistep state.

    Args:
        num_train_timesteps: ``N``; network timesteps lie in ``[0, N - 1]``.
        sde: the forward process (an :class:`SDE`, a name ``"vp"``/``"subvp"``/``"ve"`` or a mapping with ``name``).
        sde_args: arguments of the SDE when ``sde`` is a name, e.g. ``{"sigma_max": 20.0}``.
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        t_min: smallest time integrated to (``eps`` in [SDE]); default the SDE's (1e-3 VP/sub-VP, 1e-5 VE).
        denoise: make the last entry return the denoised ``E[x0 | x_{t_min}]`` (Tweedie) instead of a noise-free
            step to ``t = 0``.
        time_spacing: ``"uniform"`` in ``t`` ([SDE]), ``"log_snr"`` (uniform in ``log(alpha^2/sigma^2)``) or
            ``"karras"`` (the VE-equivalent noise levels ``sigma / alpha`` spaced as in Karras et al. 2022, Eq. 5).
        rho: the exponent of the ``"karras"`` spacing.
        clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value: x0
            post-processing, see :class:`~monai_diffusion.networks.schedulers.base.BaseScheduler`.
        trained_with: optionally the scheduler the model was trained with (e.g. ``"@train_scheduler"`` in a bundle
            config); construction then fails with a ``ValueError`` unless both share the forward process
            (:func:`check_forward_process`). It is not stored.
    """

    #: Heun's saved Euler-stage sample and derivative (registered buffers, None between steps)
    _saved_sample: torch.Tensor | None
    _saved_derivative: torch.Tensor | None

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sde: str | SDE | Mapping[str, Any] = "vp",
        sde_args: Mapping[str, Any] | None = None,
        prediction_type: str = "epsilon",
        t_min: float | None = None,
        denoise: bool = True,
        time_spacing: str = "uniform",
        rho: float = 7.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        trained_with: Any = None,
    ) -> None:
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            prediction_type=prediction_type,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
        )
        self.sde = build_sde(sde, sde_args)
        self.t_min = float(self.sde.default_t_min if t_min is None else t_min)
        if not 0.0 <= self.t_min < 1.0 or float(self.sde.marginal(self.t_min)[1]) <= 0:
            raise ValueError(f"t_min must lie in [0, 1) with sigma(t_min) > 0 for {self.sde!r}, got {t_min}")
        if time_spacing not in TIME_SPACINGS:
            raise ValueError(f"time_spacing must be one of {TIME_SPACINGS}, got {time_spacing!r}")
        self.time_spacing = time_spacing
        if not rho > 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.rho = float(rho)
        self.denoise = bool(denoise)
        self.init_noise_sigma = float(self.sde.prior_std)
        grid = torch.arange(num_train_timesteps, dtype=torch.float64)
        alpha, sigma = self.sde.marginal(grid / (num_train_timesteps - 1))
        # the forward process at the integer training timesteps; VP also exposes MONAI's alphas_cumprod
        self.register_buffer("marginal_alphas", alpha.float())
        self.register_buffer("marginal_sigmas", sigma.float())
        if type(self.sde) is VPSDE:
            self.register_buffer("alphas_cumprod", (alpha**2).float())
        # multistep state (Heun): saved sample and derivative, reset by set_timesteps
        self.register_buffer("_saved_sample", None, persistent=False)
        self.register_buffer("_saved_derivative", None, persistent=False)
        self._plan: list[tuple[int, float, float]] = []
        self._plan_timesteps: list[float] = []
        self._step_index = 0
        if trained_with is not None:
            check_forward_process(trained_with, self)

    @classmethod
    def from_training_scheduler(cls, scheduler: Any, **kwargs: Any) -> ContinuousTimeScheduler:
        """A sampler for a model trained with ``scheduler``'s forward process (see :func:`sde_from_training_scheduler`).

        ``num_train_timesteps`` and ``prediction_type`` default to the training scheduler's.
        """
        kwargs.setdefault("num_train_timesteps", num_train_timesteps_of(scheduler))
        kwargs.setdefault("prediction_type", getattr(scheduler, "prediction_type", "epsilon"))
        return cls(sde=sde_from_training_scheduler(scheduler), **kwargs)

    # ------------------------------------------------------------------------------------------ time units
    def time_to_timestep(self, t: float | torch.Tensor) -> torch.Tensor:
        """Network timestep ``t (N - 1)`` of continuous time ``t``."""
        return torch.as_tensor(t, dtype=torch.float64) * (self.num_train_timesteps - 1)

    def marginal_coefficients(self, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` of the SDE marginal at network ``timesteps`` (fractional allowed), float64.

        Raises:
            ValueError: for timesteps outside ``[0, N - 1]``.
        """
        t = self._timestep_tensor(timesteps)
        return self.sde.marginal(t / (self.num_train_timesteps - 1))

    # ------------------------------------------------------------------------------------------ timesteps
    def time_grid(self, num_points: int, t_start: float = 1.0, t_end: float | None = None) -> torch.Tensor:
        """``num_points`` decreasing continuous times from ``t_start`` to ``t_end`` (default ``t_min``) with the
        configured spacing (uniform in ``t`` or in log-SNR), float64."""
        t_end = self.t_min if t_end is None else float(t_end)
        if num_points < 1:
            raise ValueError(f"need at least one time point, got {num_points}")
        if num_points == 1:
            return torch.full((1,), float(t_start), dtype=torch.float64)
        if self.time_spacing == "uniform":
            return torch.linspace(float(t_start), t_end, num_points, dtype=torch.float64)
        lam_start, lam_end = float(self.sde.log_snr(t_start)), float(self.sde.log_snr(t_end))
        if self.time_spacing == "log_snr":
            lam = torch.linspace(lam_start, lam_end, num_points, dtype=torch.float64)
        else:  # "karras": rho-spaced VE-equivalent noise levels sigma / alpha = exp(-lambda / 2)
            sig = karras_sigmas(num_points, math.exp(-0.5 * lam_end), math.exp(-0.5 * lam_start), self.rho)
            lam = -2.0 * torch.log(sig)
        grid = self.sde.time_of_log_snr(lam)
        grid[0], grid[-1] = float(t_start), t_end
        return grid

    def _custom_grid(self, timesteps: Any) -> torch.Tensor:
        t = torch.as_tensor(timesteps, dtype=torch.float64).reshape(-1) / (self.num_train_timesteps - 1)
        if t.numel() == 0 or (t[1:] >= t[:-1]).any():
            raise ValueError(f"custom timesteps must be a non-empty strictly decreasing list, got {timesteps}")
        if float(t[0]) > 1.0 or float(t[-1]) < self.t_min - 1e-12:
            raise ValueError(
                f"custom timesteps must lie in [{self.t_min * (self.num_train_timesteps - 1):.4g}, "
                f"{self.num_train_timesteps - 1}] (t_min={self.t_min}), got {timesteps}"
            )
        return t

    def _num_points(self, num_inference_steps: int) -> int:
        """Time-grid points for an evaluation budget (subclasses with several entries per point override)."""
        return num_inference_steps

    def _build_plan(self, grid: torch.Tensor) -> list[tuple[int, float, float]]:
        """``[(kind, t, s)]`` per entry for the decreasing time grid (t: evaluation time, s: the other time)."""
        raise NotImplementedError

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Any = None,
    ) -> None:
        """Plan the sampling run for a budget of ``num_inference_steps`` model evaluations, or a custom time grid.

        ``len(self.timesteps)`` is the number of model evaluations (NFE) and never exceeds the budget (except when
        the budget is below the minimum one step of the method needs). Resets the step position and saved state.

        Args:
            num_inference_steps: the evaluation budget.
            device: device of the public ``timesteps``.
            timesteps: alternatively, a strictly decreasing list of network timesteps for the predictor grid
                (in ``[t_min (N - 1), N - 1]``).

        Raises:
            ValueError: for a non-positive budget, both or neither arguments, or a bad custom list.
        """
        if (num_inference_steps is None) == (timesteps is None):
            raise ValueError("pass exactly one of num_inference_steps and timesteps")
        if timesteps is not None:
            grid = self._custom_grid(timesteps)
        else:
            if not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool):
                raise TypeError(f"num_inference_steps must be an int, got {type(num_inference_steps).__name__}")
            if num_inference_steps < 1:
                raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
            grid = self.time_grid(self._num_points(num_inference_steps))
        self._plan = self._build_plan(grid)
        self._step_index = 0
        self._begin_index = 0
        self._saved_sample = None
        self._saved_derivative = None
        self.num_inference_steps = len(self._plan)
        self._plan_timesteps = [p[1] * (self.num_train_timesteps - 1) for p in self._plan]
        public = torch.tensor(self._plan_timesteps, dtype=torch.float32)
        self.timesteps = public if device is None else public.to(device)

    def _step_start(self, index: int) -> int:
        """A probability-flow Heun correction needs its Euler stage: start at the next entry (same time)."""
        while self._plan[index][0] == HEUN:
            index += 1
        return index

    # ------------------------------------------------------------------------------------------ stepping
    def _check_timestep(self, timestep: Any, index: int) -> None:
        n = len(self._plan)
        if index >= n:
            raise ValueError(
                f"all {n} entries of timesteps have been stepped through; call set_timesteps before sampling again"
            )
        got = torch.as_tensor(timestep).detach().to("cpu", torch.float64).reshape(-1)
        expected = float(self._plan_timesteps[index])
        if got.numel() == 0 or bool(((got - expected).abs() > 1e-4 * max(1.0, abs(expected))).any()):
            raise ValueError(
                f"{type(self).__name__}.step expected timestep {expected:.6g} (entry {index} of timesteps), got "
                f"{got.tolist()}; step through `scheduler.timesteps` in order after set_timesteps"
            )

    def _update(
        self,
        kind: int,
        x: torch.Tensor,
        x0: torch.Tensor,
        score: torch.Tensor,
        t: float,
        s: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The new sample for one plan entry of ``kind`` at time ``t`` (``s``: the entry's other time)."""
        raise NotImplementedError

    def step(
        self,
        model_output: torch.Tensor,
        timestep: torch.Tensor | float | int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance by one entry of ``timesteps``.

        Args:
            model_output: the network output at ``(sample, timestep)``.
            timestep: the current entry of ``timesteps`` (checked).
            sample: the current sample ``x`` (B, C, *spatial); float16/bfloat16 are computed in float32.
            generator: optional random generator for the noise of stochastic steps.

        Returns:
            ``(next_sample, pred_original_sample)``, in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        if model_output.shape != sample.shape:
            raise ValueError(f"model_output {tuple(model_output.shape)} and sample {tuple(sample.shape)} must match")
        index = self._step_index
        self._check_timestep(timestep, index)
        kind, t, s = self._plan[index]
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x = sample.to(dtype)
        alpha, sigma = self.sde.marginal(t)
        x0, eps = self.predict_x0_eps(model_output.to(dtype), x, alpha.to(dtype), sigma.to(dtype))
        score = -eps / sigma.to(device=x.device, dtype=dtype)
        prev = self._update(kind, x, x0, score, t, s, generator)
        self._step_index = index + 1
        return prev.to(sample.dtype), x0.to(sample.dtype)

    def extra_repr(self) -> str:
        return f"sde={self.sde!r}, num_train_timesteps={self.num_train_timesteps}, nfe={len(self._plan)}"


def _t(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


class EulerMaruyamaScheduler(ContinuousTimeScheduler):
    """Reverse-time SDE ([SDE] eq. 6) integrated by Euler-Maruyama on ``n`` times from 1 to ``t_min``.

    ``set_timesteps(n)`` gives NFE = ``n``: ``n - 1`` stochastic steps and the final entry (denoise at ``t_min``,
    or a noise-free step to ``t = 0`` when ``denoise=False``). Arguments: see :class:`ContinuousTimeScheduler`.
    """

    def __init__(self, num_train_timesteps: int = 1000, sde: str | SDE | Mapping[str, Any] = "vp", **kwargs: Any):
        super().__init__(num_train_timesteps=num_train_timesteps, sde=sde, **kwargs)
        self.set_timesteps(num_train_timesteps)

    def _build_plan(self, grid: torch.Tensor) -> list[tuple[int, float, float]]:
        times = grid.tolist()
        plan = [(PREDICT, times[i], times[i + 1]) for i in range(len(times) - 1)]
        return plan + [(FINAL, times[-1], 0.0)]

    def _update(
        self,
        kind: int,
        x: torch.Tensor,
        x0: torch.Tensor,
        score: torch.Tensor,
        t: float,
        s: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if kind == FINAL:
            return x0 if self.denoise else euler_maruyama_step(x, score, self.sde, _t(t), _t(s), None)
        return euler_maruyama_step(x, score, self.sde, _t(t), _t(s), randn_like(x, generator))


PREDICTORS = ("reverse_diffusion", "euler_maruyama", "none")


class PredictorCorrectorScheduler(ContinuousTimeScheduler):
    """Predictor-corrector sampling ([SDE] Algorithm 1; Algorithms 2-5 for the VE/VP instances).

    At each time ``t_i`` (1 to ``t_min``): ``n_corrector`` Langevin corrector steps (each a model evaluation and an
    entry of ``timesteps``, step size ``2 alpha_i (snr ||z|| / ||score||)^2``), then one predictor step to
    ``t_{i+1}``; at ``t_min`` the predictor is replaced by the final entry (denoise, or noise-free step to 0).

    ``set_timesteps(n)`` uses ``P = max(1, n // (n_corrector + 1))`` times, so NFE = ``P (n_corrector + 1)`` <= n;
    with ``predictor="none"`` (corrector-only sampling) ``P = max(1, (n - 1) // n_corrector)`` and NFE =
    ``P n_corrector + 1``.

    Args:
        num_train_timesteps, sde: see :class:`ContinuousTimeScheduler`.
        predictor: ``"reverse_diffusion"`` ([SDE] eq. 46/47; exact transition coefficients), ``"euler_maruyama"``
            or ``"none"``.
        n_corrector: Langevin steps per time (0 gives the predictor alone).
        snr: the signal-to-noise ratio ``r`` of the corrector.
        kwargs: other arguments of :class:`ContinuousTimeScheduler`.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sde: str | SDE | Mapping[str, Any] = "vp",
        predictor: str = "reverse_diffusion",
        n_corrector: int = 1,
        snr: float = 0.16,
        **kwargs: Any,
    ) -> None:
        if predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {predictor!r}")
        if not isinstance(n_corrector, int) or n_corrector < 0:
            raise ValueError(f"n_corrector must be a non-negative int, got {n_corrector!r}")
        if predictor == "none" and n_corrector == 0:
            raise ValueError("predictor='none' needs n_corrector >= 1 (otherwise nothing is sampled)")
        if not snr > 0:
            raise ValueError(f"snr must be positive, got {snr}")
        super().__init__(num_train_timesteps=num_train_timesteps, sde=sde, **kwargs)
        self.predictor = predictor
        self.n_corrector = n_corrector
        self.snr = float(snr)
        self.set_timesteps(num_train_timesteps)

    def _num_points(self, num_inference_steps: int) -> int:
        if self.predictor == "none":
            return max(1, (num_inference_steps - 1) // self.n_corrector)
        return max(1, num_inference_steps // (self.n_corrector + 1))

    def _build_plan(self, grid: torch.Tensor) -> list[tuple[int, float, float]]:
        times = grid.tolist()
        plan: list[tuple[int, float, float]] = []
        for i, t in enumerate(times):
            plan += [(CORRECT, t, t)] * self.n_corrector
            if i + 1 < len(times):
                if self.predictor != "none":
                    plan.append((PREDICT, t, times[i + 1]))
            else:
                plan.append((FINAL, t, 0.0))
        return plan

    def _predict(
        self, x: torch.Tensor, score: torch.Tensor, t: float, s: float, noise: torch.Tensor | None
    ) -> torch.Tensor:
        fn = reverse_diffusion_step if self.predictor == "reverse_diffusion" else euler_maruyama_step
        return fn(x, score, self.sde, _t(t), _t(s), noise)

    def _update(
        self,
        kind: int,
        x: torch.Tensor,
        x0: torch.Tensor,
        score: torch.Tensor,
        t: float,
        s: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        if kind == CORRECT:
            alpha = self.sde.langevin_alpha(t, self.num_train_timesteps)
            return langevin_corrector_step(x, score, randn_like(x, generator), self.snr, alpha)
        if kind == FINAL:
            if self.denoise:
                return x0
            return x if self.predictor == "none" else self._predict(x, score, t, s, None)
        if self.predictor == "none":  # pragma: no cover - the plan has no predictor entries then
            return x
        return self._predict(x, score, t, s, randn_like(x, generator))


class ProbabilityFlowScheduler(ContinuousTimeScheduler):
    """The probability-flow ODE ([SDE] eq. 13) ``dx/dt = f(x, t) - 1/2 g(t)^2 score``, integrated by Heun's method.

    Deterministic: the same noise gives the same sample (and the ODE maps data to noise and back). Each Heun step
    from ``t_i`` to ``t_{i+1}`` evaluates the model at ``t_i`` and, as an extra entry of ``timesteps``, at the Euler
    prediction at ``t_{i+1}`` (Karras et al. 2022, Algorithm 1). ``set_timesteps(n)`` uses ``S = (n + 1) // 2``
    times, NFE = ``2 S - 1`` (``n`` for odd ``n``): ``S - 1`` Heun steps and the final entry.

    Args:
        num_train_timesteps, sde: see :class:`ContinuousTimeScheduler`.
        solver: ``"heun"`` (second order) or ``"euler"`` (first order, NFE = ``n``).
        kwargs: other arguments of :class:`ContinuousTimeScheduler`.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sde: str | SDE | Mapping[str, Any] = "vp",
        solver: str = "heun",
        **kwargs: Any,
    ) -> None:
        if solver not in ("heun", "euler"):
            raise ValueError(f"solver must be 'heun' or 'euler', got {solver!r}")
        super().__init__(num_train_timesteps=num_train_timesteps, sde=sde, **kwargs)
        self.solver = solver
        self.set_timesteps(num_train_timesteps)

    def _num_points(self, num_inference_steps: int) -> int:
        return (num_inference_steps + 1) // 2 if self.solver == "heun" else num_inference_steps

    def _build_plan(self, grid: torch.Tensor) -> list[tuple[int, float, float]]:
        times = grid.tolist()
        plan: list[tuple[int, float, float]] = []
        for i in range(len(times) - 1):
            plan.append((PREDICT, times[i], times[i + 1]))
            if self.solver == "heun":
                plan.append((HEUN, times[i + 1], times[i]))
        return plan + [(FINAL, times[-1], 0.0)]

    def encode(
        self,
        model: Callable[..., torch.Tensor],
        sample: torch.Tensor,
        num_inference_steps: int,
        start_timestep: float | None = None,
        end_timestep: float | None = None,
        **model_kwargs: Any,
    ) -> torch.Tensor:
        """Deterministic encoding: integrate the probability-flow ODE forward in time ([SDE] Sec. 4.3).

        Heun steps on the configured spacing from ``start_timestep`` (default ``t_min``, i.e. clean data) to
        ``end_timestep`` (default ``N - 1``, the prior), ``2 (num_inference_steps // 2)`` model evaluations. Decoding
        with ``set_timesteps(timesteps=<the same grid, decreasing>)`` and ``denoise=False``, starting the loop from
        the encoding itself (not scaled by ``init_noise_sigma``), inverts it up to the solver error; partial encoding
        to an intermediate timestep works the same way.

        Args:
            model: called as ``model(x, timesteps, **model_kwargs)`` with ``timesteps`` of shape (B,).
            sample: the data (or the sample at ``start_timestep``), (B, C, *spatial).
            num_inference_steps: evaluation budget (at least 2).
            start_timestep, end_timestep: network timesteps to integrate between (start < end).
            model_kwargs: passed to the model (e.g. conditioning).

        Returns:
            the encoding at ``end_timestep``, in the dtype of ``sample``.
        """
        n = self.num_train_timesteps - 1
        t_start = self.t_min if start_timestep is None else float(start_timestep) / n
        t_stop = 1.0 if end_timestep is None else float(end_timestep) / n
        if not self.t_min - 1e-12 <= t_start < t_stop <= 1.0:
            raise ValueError(
                f"need {self.t_min * n:.4g} <= start_timestep < end_timestep <= {n}, got {start_timestep}, {end_timestep}"
            )
        if num_inference_steps < 2:
            raise ValueError(f"encoding needs at least 2 evaluations (one Heun step), got {num_inference_steps}")
        grid = self.time_grid(num_inference_steps // 2 + 1, t_start=t_stop, t_end=t_start).flip(0).tolist()
        dtype = torch.float64 if sample.dtype == torch.float64 else torch.float32
        x = sample.to(dtype)

        def derivative(y: torch.Tensor, t: float) -> torch.Tensor:
            stamp = torch.full((y.shape[0],), t * n, dtype=torch.float32, device=y.device)
            alpha, sigma = self.sde.marginal(t)
            _, eps = self.predict_x0_eps(model(y, stamp, **model_kwargs).to(dtype), y, alpha, sigma)
            return probability_flow_derivative(y, -eps / float(sigma), self.sde, _t(t))

        for t_a, t_b in zip(grid[:-1], grid[1:]):
            d_a = derivative(x, t_a)
            d_b = derivative(x + (t_b - t_a) * d_a, t_b)
            x = x + (t_b - t_a) * 0.5 * (d_a + d_b)
        return x.to(sample.dtype)

    def _update(
        self,
        kind: int,
        x: torch.Tensor,
        x0: torch.Tensor,
        score: torch.Tensor,
        t: float,
        s: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        deriv = probability_flow_derivative(x, score, self.sde, _t(t))
        if kind == FINAL:
            return x0 if self.denoise else x + (s - t) * deriv
        if kind == PREDICT:
            if self.solver == "heun":
                self._saved_sample = x
                self._saved_derivative = deriv
            return x + (s - t) * deriv
        # HEUN: t is t_{i+1} (where the Euler prediction x was evaluated), s is t_i
        if self._saved_sample is None or self._saved_derivative is None:
            raise RuntimeError("Heun correction without a preceding Euler stage; call set_timesteps")
        out = self._saved_sample + (t - s) * 0.5 * (self._saved_derivative + deriv)
        self._saved_sample = None
        self._saved_derivative = None
        return out
