"""DDIM (Song et al. 2021a) with ``eta`` in [0, 1] and full-range deterministic inversion.

Each step goes from the current inference time exactly to the next one in ``timesteps`` (MONAI 1.6.1 moves to
``t - T // N`` instead, ``REFERENCES.md`` defect 2), and the last step lands on clean data. Inversion
(:meth:`DDIMScheduler.reversed_step`) walks the same grid upwards from clean data to the first inference time
without index errors (defect 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.networks.schedulers.base import DiscreteTimeScheduler, randn_like
from monai_diffusion.networks.schedulers.process import PredictionType

__all__ = ["DDIMScheduler"]


class DDIMScheduler(DiscreteTimeScheduler):
    """Denoising diffusion implicit models, Song et al. (2021a), Eq. 12, with the stochasticity of Eq. 16.

    ``x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - s^2) eps + s z`` with
    ``s = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)``; ``eta = 0`` is the deterministic DDIM,
    ``eta = 1`` the DDPM posterior variance.

    Args:
        eta: stochasticity in [0, 1].
        set_alpha_to_one: the step after the last inference time lands on ``abar = 1`` (clean data); if False, on
            ``abar_0`` of the training table (MONAI/diffusers option).
        All other arguments: see :class:`~monai_diffusion.networks.schedulers.base.DiscreteTimeScheduler`.

    Inversion loop (encode ``x0`` to ``x_{t_0}`` at the first inference time ``t_0``)::

        x = x0
        for t in scheduler.timesteps.flip(0):
            x, _ = scheduler.reversed_step(model(x, t), t, x)
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        eta: float = 0.0,
        set_alpha_to_one: bool = True,
        prediction_type: str = "epsilon",
        timestep_spacing: str | None = None,
        steps_offset: int = 0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        **schedule_args,
    ) -> None:
        super().__init__(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            prediction_type=prediction_type,
            timestep_spacing=timestep_spacing,
            steps_offset=steps_offset,
            clip_sample=clip_sample,
            clip_sample_range=clip_sample_range,
            thresholding=thresholding,
            dynamic_thresholding_ratio=dynamic_thresholding_ratio,
            sample_max_value=sample_max_value,
            **schedule_args,
        )
        self.eta = self._check_eta(eta)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self._publish_timesteps(torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float64), None)

    @staticmethod
    def _check_eta(eta: float) -> float:
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        return float(eta)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Choose the inference timesteps (configured spacing or a custom decreasing integer list)."""
        self._publish_timesteps(self._make_timesteps(num_inference_steps, timesteps), device)

    def _final_abar(self) -> float:
        return 1.0 if self.set_alpha_to_one else float(self.alphas_cumprod[0])

    def _abar_at(self, index: int) -> float:
        """``abar`` at inference index ``index``; past the end, the final (clean) level."""
        if index >= len(self.timesteps):
            return self._final_abar()
        return float(self.alphas_cumprod.double()[int(self.timesteps[index])])

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        eta: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step from ``timestep`` to the next entry of ``timesteps`` (clean data after the last).

        Args:
            model_output: network output at ``(sample, timestep)``.
            timestep: the current entry of ``self.timesteps``.
            sample: the current ``x_t``.
            generator: random generator (used when ``eta > 0``).
            eta: overrides the constructor's ``eta`` for this step.

        Returns:
            ``(prev_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        eta = self.eta if eta is None else self._check_eta(eta)
        dtype = sample.dtype
        x = sample.float()
        index = self._index_of(timestep)
        abar_t, abar_prev = self._abar_at(index), self._abar_at(index + 1)
        x0, eps = self.predict_x0_eps(model_output.float(), x, math.sqrt(abar_t), math.sqrt(1.0 - abar_t))
        var = (1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)
        std = eta * math.sqrt(max(var, 0.0))
        prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - std**2, 0.0)) * eps
        if std > 0:
            prev = prev + std * randn_like(x, generator)
        return prev.to(dtype), x0.to(dtype)

    def reversed_step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One deterministic DDIM inversion step, up to ``timestep`` from the inference time just below it.

        ``sample`` lies at the next lower entry of ``timesteps`` (at clean data when ``timestep`` is the last
        entry), and ``model_output`` is the network evaluated at ``(sample, timestep)``, the usual approximation of
        DDIM inversion (Song et al. 2021a, Sec. 4.3; Dhariwal & Nichol 2021, App. F); no clipping is applied. Walking
        ``timesteps.flip(0)`` encodes clean data to the first inference time, over the full range.

        Returns:
            ``(next_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        dtype = sample.dtype
        x = sample.float()
        index = self._index_of(timestep)
        abar_t, abar_src = self._abar_at(index), self._abar_at(index + 1)
        # the network saw level `timestep`: read its noise estimate there, then re-anchor x0 at the source level
        ptype = PredictionType(self.prediction_type)
        _, eps = ptype.to_x0_eps(model_output.float(), x, math.sqrt(abar_t), math.sqrt(1.0 - abar_t))
        x0 = (x - math.sqrt(1.0 - abar_src) * eps) / math.sqrt(abar_src)
        nxt = math.sqrt(abar_t) * x0 + math.sqrt(1.0 - abar_t) * eps
        return nxt.to(dtype), x0.to(dtype)
