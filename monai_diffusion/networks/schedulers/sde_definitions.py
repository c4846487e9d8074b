"""Forward SDEs of Song et al. (2021), continuous time ``t`` in ``[0, 1]``, with Gaussian marginals.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling through Stochastic
Differential Equations", ICLR 2021 (arXiv:2011.13456), referred to below as [SDE].

* :class:`VPSDE` (eq. 11): ``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw`` with ``beta(t) = beta_min + t (beta_max -
  beta_min)``. Marginal ``x_t = alpha x0 + sigma eps`` with ``alpha = exp(-1/2 B(t))``, ``sigma^2 = 1 - alpha^2``,
  ``B(t) = int_0^t beta``. With ``beta_min = 0.1``, ``beta_max = 20`` this is the continuum limit of DDPM's linear
  schedule (``beta_i`` from 1e-4 to 0.02 over 1000 steps, ``beta(t) = N beta_i``).
* :class:`SubVPSDE` (eq. 12): same drift, ``g(t)^2 = beta(t) (1 - exp(-2 B(t)))``; ``sigma = 1 - alpha^2``.
* :class:`VESDE` (eq. 9): ``dx = sqrt(d[sigma^2(t)]/dt) dw`` with ``sigma(t) = sigma_min (sigma_max /
  sigma_min)^t``; ``alpha = 1``, ``sigma = sigma(t)``; prior ``N(0, sigma_max^2)``. NCSN's geometric noise levels
  (:mod:`.ncsn`) are this process at discrete times.

:func:`build_sde` makes one from a bundle-config value and :func:`sde_from_training_scheduler` finds the one that
matches a training scheduler. The samplers are in :mod:`.sde` (on :class:`~.continuous.ContinuousTimeScheduler`),
the step maths in :mod:`.sde_steps`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from monai_diffusion.networks.schedulers.process import as_batch_coefficient, marginal_coefficients

__all__ = ["SDE", "VPSDE", "SubVPSDE", "VESDE", "SDE_REGISTRY", "build_sde", "sde_from_training_scheduler"]


def _t64(t: float | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


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
        return as_batch_coefficient(self.drift_coef(t), x) * x

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


def sde_from_training_scheduler(scheduler: Any) -> SDE:
    """The SDE matching the forward process of a training scheduler.

    * a score-SDE or NCSN scheduler: its own SDE;
    * a discrete VP scheduler (``monai_diffusion``, MONAI or diffusers DDPM/DDIM) with a *linear* beta schedule:
      ``VPSDE(N beta_1, N beta_N)`` ([SDE] Appendix B);
    * any other discrete schedule (cosine, scaled-linear, ...) has no SDE here: ``ValueError``.

    Raises:
        ValueError: if no SDE matches, or the matching one deviates by more than
            :func:`~.process.check_forward_process` admits.
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
    a1, s1 = marginal_coefficients(scheduler, ts)
    a2, s2 = out.marginal(ts / (n - 1))
    worst = float(torch.maximum((a1 - a2).abs(), (s1 - s2).abs()).max())
    if worst > 0.02:
        raise ValueError(f"{type(scheduler).__name__}'s schedule deviates from {out!r} by {worst:.3g} (> 0.02)")
    return out
