"""Noise-conditioned score networks sampled by annealed Langevin dynamics (Song & Ermon, 2019).

Song & Ermon, "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019
(arXiv:1907.05600), Algorithm 1; step-size and final-denoising choices from Song & Ermon, "Improved Techniques for
Training Score-Based Generative Models", NeurIPS 2020 (arXiv:2006.09011), Techniques 4 and Appendix (denoising).

Forward process: ``x = x0 + sigma_tau eps`` with geometric noise levels over the network timesteps
``tau = 0 .. N-1``: ``sigma_tau = sigma_min (sigma_max / sigma_min)^(tau / (N - 1))``. This is exactly the VE SDE
(:class:`~monai_diffusion.networks.schedulers.sde_definitions.VESDE`) at ``t = tau / (N - 1)``, so a model trained for NCSN is
also sampled by the score-SDE samplers with ``sde="ve"`` (same ``sigma_min``, ``sigma_max``) and vice versa. As
everywhere in this package the network predicts ``epsilon`` (or ``sample`` / ``v_prediction``) and the score is
``-eps / sigma``; a network trained by denoising score matching on ``s(x, sigma)`` is the same network with
``eps = -sigma s``.

Sampling (Algorithm 1): for the noise levels ``sigma_1 > ... > sigma_L`` chosen by ``set_timesteps``, run ``T``
Langevin steps ``x <- x + alpha_i / 2 * score(x, sigma_i) + sqrt(alpha_i) z`` with ``alpha_i = epsilon sigma_i^2 /
sigma_L^2``, then (optionally) return the denoised ``x + sigma_L^2 score(x, sigma_L)`` (Tweedie). Each Langevin
step and the final denoising step are one model evaluation and one entry of ``timesteps`` (repeated timesteps).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from monai_diffusion.networks.schedulers.base import randn_like
from monai_diffusion.networks.schedulers.continuous import CORRECT, FINAL, ContinuousTimeScheduler
from monai_diffusion.networks.schedulers.process import num_train_timesteps_of, prediction_type_of
from monai_diffusion.networks.schedulers.sde_definitions import VESDE, sde_from_training_scheduler

__all__ = ["NCSNScheduler", "geometric_sigmas", "langevin_step", "langevin_variance_ratio", "optimal_step_ratio"]


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """``num_levels`` noise levels in geometric progression from ``sigma_max`` down to ``sigma_min`` (float64).

    Raises:
        ValueError: unless ``0 < sigma_min < sigma_max`` and ``num_levels >= 1``.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64)


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size: float, noise: torch.Tensor) -> torch.Tensor:
    """One Langevin step ``x + step_size / 2 * score + sqrt(step_size) z`` (Song & Ermon 2019, Algorithm 1)."""
    return x + 0.5 * step_size * score + math.sqrt(step_size) * noise


def langevin_variance_ratio(ratio: torch.Tensor, gamma: float, num_steps: int) -> torch.Tensor:
    """``Var(x_T) / sigma_i^2`` after ``num_steps`` Langevin steps at level ``sigma_i`` on Gaussian data.

    The model of Song & Ermon 2020, Technique 4: data collapse to a point, so ``p_i = N(0, sigma_i^2)``; the chain
    starts at the previous level's variance ``gamma^2 sigma_i^2`` (``gamma = sigma_{i-1} / sigma_i``) and takes steps
    of size ``alpha_i = ratio * sigma_i^2`` (``ratio = epsilon / sigma_L^2``). The update ``x <- (1 - ratio/2) x +
    sqrt(ratio) sigma_i z`` has the fixed point ``A = 1 / (1 - ratio/4)``, hence
    ``A + (1 - ratio/2)^(2T) (gamma^2 - A)`` (our derivation for Algorithm 1's ``alpha/2`` convention).
    """
    fixed = 1.0 / (1.0 - ratio / 4.0)
    return fixed + (1.0 - ratio / 2.0) ** (2 * num_steps) * (gamma**2 - fixed)


def optimal_step_ratio(gamma: float, num_steps: int) -> float:
    """The ``epsilon / sigma_L^2`` that brings :func:`langevin_variance_ratio` closest to 1 (Technique 4).

    Searched on a log grid of ratios in ``[1e-5, 2]``; the ratio always exceeds 1, so this minimises it.
    """
    if gamma <= 1.0:
        raise ValueError(f"gamma (ratio of successive noise levels) must exceed 1, got {gamma}")
    ratios = torch.logspace(-5, math.log10(2.0), 4000, dtype=torch.float64)
    return float(ratios[langevin_variance_ratio(ratios, gamma, num_steps).argmin()])


class NCSNScheduler(ContinuousTimeScheduler):
    """Annealed Langevin dynamics over geometric noise levels (Song & Ermon 2019, Algorithm 1).

    ``set_timesteps(n)`` spends ``n`` model evaluations: ``M = n - 1`` Langevin steps (``n`` without ``denoise``) on
    ``L = max(min(M, 2), ceil(M / T))`` levels at the network timesteps ``linspace(N - 1, 0, L)`` (so
    ``sigma_1 = sigma_max``, ``sigma_L = sigma_min``), split as evenly as possible, plus the final denoising step.
    ``T = max(1, min(steps_per_level, M // min_levels))``: small budgets keep at least ``min_levels`` levels rather
    than ``steps_per_level`` steps on too few (two levels cannot bridge 50 -> 0.01: W1 54 at NFE 10, against 0.46
    with nine). A custom list of decreasing network timesteps (one per level) may be passed instead.

    Args:
        num_train_timesteps: ``N``; the training noise level at timestep ``tau`` is
            ``sigma_min (sigma_max / sigma_min)^(tau / (N - 1))``.
        sigma_min: smallest noise level ``sigma_L`` (timestep 0).
        sigma_max: largest noise level ``sigma_1`` (timestep ``N - 1``); also ``init_noise_sigma``.
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``.
        steps_per_level: the largest ``T``, Langevin steps per noise level (the last levels get fewer when ``M``
            does not divide).
        min_levels: the number of levels kept, budget permitting, before ``T`` grows.
        step_lr: ``epsilon`` in ``alpha_i = epsilon sigma_i^2 / sigma_L^2``; ``None`` picks it per schedule with
            :func:`optimal_step_ratio` (``epsilon = ratio * sigma_L^2``), so any NFE gets a sensible step.
        denoise: end with the Tweedie denoising step ``x + sigma_L^2 score`` (Song & Ermon 2020).
        clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value: x0
            post-processing of ``pred_original_sample`` and the final step, see ``BaseScheduler``.
        trained_with: optionally the training scheduler; a ``ValueError`` unless it is VE with the same range.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        sigma_min: float = 0.01,
        sigma_max: float = 50.0,
        prediction_type: str = "epsilon",
        steps_per_level: int = 5,
        min_levels: int = 8,
        step_lr: float | None = None,
        denoise: bool = True,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        trained_with: Any = None,
    ) -> None:
        if not isinstance(steps_per_level, int) or steps_per_level < 1:
            raise ValueError(f"steps_per_level must be a positive int, got {steps_per_level!r}")
        if not isinstance(min_levels, int) or min_levels < 2:
            raise ValueError(f"min_levels must be an int >= 2, got {min_levels!r}")
        if step_lr is not None and not step_lr > 0:
            raise ValueError(f"step_lr must be positive or None, got {step_lr}")
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            sde=VESDE(sigma_min=sigma_min, sigma_max=sigma_max),
            prediction_type=prediction_type,
            t_min=0.0,
            denoise=denoise,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            trained_with=trained_with,
        )
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.steps_per_level = steps_per_level
        self.min_levels = min_levels
        self.step_lr = None if step_lr is None else float(step_lr)
        # the sampling schedule's noise levels and Langevin step sizes (set by set_timesteps)
        self.register_buffer("sigmas", torch.empty(0, dtype=torch.float64), persistent=False)
        self.register_buffer("step_sizes", torch.empty(0, dtype=torch.float64), persistent=False)
        self.set_timesteps(num_train_timesteps)

    @classmethod
    def from_training_scheduler(cls, scheduler: Any, **kwargs: Any) -> NCSNScheduler:
        """An NCSN sampler for a model trained with a VE forward process (an NCSN or a ``sde="ve"`` scheduler).

        Raises:
            ValueError: if the training process is not VE (e.g. a DDPM/VP-trained model).
        """
        sde = sde_from_training_scheduler(scheduler)
        if not isinstance(sde, VESDE):
            raise ValueError(
                f"NCSNScheduler samples VE-trained models (x = x0 + sigma eps), but {type(scheduler).__name__} "
                f"trains with {sde!r}; use the DDPM/DDIM/DPM-Solver samplers or the SDE samplers with sde='vp'"
            )
        kwargs.setdefault("num_train_timesteps", num_train_timesteps_of(scheduler))
        kwargs.setdefault("prediction_type", prediction_type_of(scheduler).value)
        return cls(sigma_min=sde.sigma_min, sigma_max=sde.sigma_max, **kwargs)

    def _num_points(self, num_inference_steps: int) -> int:
        m = num_inference_steps - int(self.denoise)
        if m < 1:
            raise ValueError(f"NCSN needs at least {1 + int(self.denoise)} evaluations, got {num_inference_steps}")
        self._langevin_budget = m
        steps = max(1, min(self.steps_per_level, m // self.min_levels))
        return max(min(m, 2), math.ceil(m / steps))

    def _custom_grid(self, timesteps: Any) -> torch.Tensor:
        grid = super()._custom_grid(timesteps)
        self._langevin_budget = grid.numel() * self.steps_per_level
        return grid

    def _build_plan(self, grid: torch.Tensor) -> list[tuple[int, float, float]]:
        levels = grid.tolist()
        n_levels = len(levels)
        budget = getattr(self, "_langevin_budget", n_levels * self.steps_per_level)
        counts = [budget // n_levels + (1 if i < budget % n_levels else 0) for i in range(n_levels)]
        sigmas = self.sde.marginal(grid)[1]  # VE: alpha = 1, sigma = sigma_min (sigma_max / sigma_min)^t
        sigma_last = float(sigmas[-1])
        if self.step_lr is not None:
            ratio = self.step_lr / sigma_last**2
        elif n_levels > 1:
            gamma = float((sigmas[:-1] / sigmas[1:]).mean())
            ratio = optimal_step_ratio(gamma, max(1, min(counts)))
        else:
            ratio = 0.5
        device = self._table_device()
        self.sigmas = sigmas.to(device)
        self.step_sizes = (ratio * sigmas**2).to(device)
        plan: list[tuple[int, float, float]] = []
        for level, (t, count) in enumerate(zip(levels, counts)):
            plan += [(CORRECT, t, ratio * float(sigmas[level]) ** 2)] * count
        if self.denoise:
            plan.append((FINAL, levels[-1], 0.0))
        return plan

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
            return x0  # Tweedie: x + sigma_L^2 score (with the configured x0 post-processing)
        return langevin_step(x, score, s, randn_like(x, generator))
