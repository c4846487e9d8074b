"""Euler and Heun samplers on Karras noise levels (Karras et al. 2022, "EDM"), for a VP-trained network.

The VP process ``x_t = alpha_t x0 + sigma_t eps`` is the VE process ``y = x0 + s eps`` scaled by ``alpha_t``, with
``s = sigma_t / alpha_t``. The probability-flow ODE in ``y`` is ``dy/ds = (y - x0(y)) / s = eps`` (Karras et al.
2022, Eq. 3 with ``sigma(t) = t``). The samplers integrate it over the decreasing noise levels of Eq. 5 (``rho = 7``
by default) and keep the state in VP coordinates ``x = alpha y``, so the network sees exactly the inputs it was
trained on and the loop needs no input scaling: ``init_noise_sigma`` is 1.

* :class:`EulerKarrasScheduler`: explicit Euler (first order; with the x0 parameterisation this is DDIM on the
  Karras grid). One model evaluation per step.
* :class:`HeunKarrasScheduler`: Heun's second-order method (Karras et al. 2022, Alg. 1). Each step evaluates the
  model twice except the last one (to ``s = 0``), which is an Euler step; the second evaluations are listed in
  ``timesteps``, so ``num_inference_steps = N`` gives ``2N - 1`` entries and NFE = ``len(timesteps)``.

Which grid (measured 2026-11-30, ``docs/samplers.md``): Eq. 5 with ``rho = 7`` between a linear-beta schedule's
extreme levels (``s`` 157 to 0.01) spends its fine steps at small ``s``. That suits images: driven by the trained
``brain_prior`` network, Heun on it was 1.5x closer to a converged ODE solution than on ``"linspace"`` (evenly spaced
training times, the default grid of diffusers' ``HeunDiscreteScheduler``) at 19 and 39 evaluations. It does not suit
smooth low-dimensional data: on Gaussian mixtures whose modes form at ``s`` 0.3-4 the Eq. 5 grid crosses that range
in a few coarse steps and had 1.4x-3.4x the W1 of ``"linspace"`` at 5-20 steps
(``python benchmarks/samplers.py --heun``). ``timestep_spacing="linspace"`` reproduces diffusers' default Heun.

Timesteps are the fractional training times whose noise level is each ``s``, obtained by interpolating
``log s_t`` over the integer training times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.networks.schedulers.base import DiscreteTimeScheduler

__all__ = ["EulerKarrasScheduler", "HeunKarrasScheduler"]


class _KarrasBase(DiscreteTimeScheduler):
    """Common construction and noise-level bookkeeping of the Karras samplers (see the module docstring).

    Args:
        rho: exponent of the Karras noise levels (Eq. 5), used by ``timestep_spacing="karras"``.
        timestep_spacing: default ``"karras"``; ``"log_snr"``, ``"linspace"``, ... also work (see the module
            docstring for Heun).
        All other arguments: see :class:`~monai_diffusion.networks.schedulers.base.DiscreteTimeScheduler`.
    """

    allows_fractional_timesteps = True
    default_spacing = "karras"

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        rho: float = 7.0,
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
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.rho = float(rho)

    def _levels(self, num_inference_steps: int | None, timesteps: Sequence[float] | torch.Tensor | None):
        """Step times (float64, decreasing) and their VE noise levels ``s`` with a final 0 appended."""
        t = self._make_timesteps(num_inference_steps, timesteps)
        alpha, sigma = self.marginal_coefficients(t.float().double())
        levels = [float(s / a) for a, s in zip(alpha, sigma)] + [0.0]
        return t, levels

    @staticmethod
    def _vp_alpha(level: float) -> float:
        """``alpha`` of the VP point with VE noise level ``level``: ``1 / sqrt(1 + s^2)``."""
        return 1.0 / math.sqrt(1.0 + level * level)

    def _eps(self, model_output: torch.Tensor, x: torch.Tensor, level: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, eps)`` at VE level ``level`` for VP-coordinate input ``x``."""
        a = self._vp_alpha(level)
        return self.predict_x0_eps(model_output.float(), x, a, a * level)


class EulerKarrasScheduler(_KarrasBase):
    """Euler solver of the probability-flow ODE on Karras noise levels (Karras et al. 2022, Alg. 1 without the
    correction). NFE = ``num_inference_steps``. See the module docstring."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.set_timesteps(20)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Choose the inference timesteps (Karras levels by default) and reset the step counter."""
        t, _ = self._levels(num_inference_steps, timesteps)
        self._publish_timesteps(t, device)
        _, self._levels_seq = self._levels(None, self.timesteps.double().cpu())

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Euler step to the next noise level (clean data after the last).

        Returns:
            ``(prev_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        i = self._step_index
        self._check_counter(i, timestep)
        dtype = sample.dtype
        x = sample.float()
        s_cur, s_next = self._levels_seq[i], self._levels_seq[i + 1]
        x0, eps = self._eps(model_output, x, s_cur)
        y_next = x / self._vp_alpha(s_cur) + (s_next - s_cur) * eps
        self._step_index = i + 1
        return (self._vp_alpha(s_next) * y_next).to(dtype), x0.to(dtype)


class HeunKarrasScheduler(_KarrasBase):
    """Heun (second-order) solver of the probability-flow ODE on Karras noise levels (Karras et al. 2022, Alg. 1).

    ``set_timesteps(N)`` lists ``2N - 1`` model times ``[t_0, t_1, t_1, t_2, t_2, ..., t_{N-1}, t_{N-1}]``: the
    first entry of each pair is the Euler (predictor) evaluation, the second the correction at the next level; the
    last step is a plain Euler step to clean data. Between the two calls of a step, the loop's ``x`` is the Euler
    prediction at the next level. ``timestep_spacing="linspace"`` gives the grid of diffusers'
    ``HeunDiscreteScheduler`` (and its samples); see the module docstring for which grid suits which data.
    """

    sample_prev: torch.Tensor | None
    eps_prev: torch.Tensor | None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("sample_prev", None, persistent=False)
        self.register_buffer("eps_prev", None, persistent=False)
        self.set_timesteps(10)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Choose ``N`` noise levels (``2N - 1`` model evaluations) and reset the Heun state.

        A custom ``timesteps`` list gives the ``N`` step times; the evaluation list is built from it.
        """
        t, _ = self._levels(num_inference_steps, timesteps)
        t = t.float().double()
        expanded = torch.cat([t[:1], t[1:].repeat_interleave(2)])
        self._publish_timesteps(expanded, device)
        _, self._levels_seq = self._levels(None, t)
        self.num_inference_steps = int(t.numel())
        self.sample_prev = None
        self.eps_prev = None

    def _step_start(self, index: int) -> int:
        """A level's first entry is the corrector stage of the step ending there: start at its predictor stage."""
        return index + index % 2

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictor (even entries) or corrector (odd entries) stage of a Heun step.

        Returns:
            ``(next_sample, pred_original_sample)`` in the dtype of ``sample``; after a predictor stage
            ``next_sample`` is the Euler prediction at the next level, after a corrector stage the Heun result.
        """
        self._check_pair(model_output, sample)
        k = self._step_index
        self._check_counter(k, timestep)
        dtype = sample.dtype
        x = sample.float()
        i = (k + 1) // 2  # step index of the level this evaluation sits on
        if k % 2 == 0:
            s_cur, s_next = self._levels_seq[i], self._levels_seq[i + 1]
            x0, eps = self._eps(model_output, x, s_cur)
            y = x / self._vp_alpha(s_cur)
            y_next = y + (s_next - s_cur) * eps
            if s_next > 0:
                self.sample_prev = y
                self.eps_prev = eps
        else:
            s_prev, s_cur = self._levels_seq[i - 1], self._levels_seq[i]
            x0, eps = self._eps(model_output, x, s_cur)
            if self.sample_prev is None or self.eps_prev is None:
                raise RuntimeError("Heun corrector stage without a predictor stage; call set_timesteps")
            y_next = self.sample_prev + (s_cur - s_prev) * 0.5 * (self.eps_prev + eps)
            s_next = s_cur
            self.sample_prev = None
            self.eps_prev = None
        self._step_index = k + 1
        return (self._vp_alpha(s_next) * y_next).to(dtype), x0.to(dtype)
