"""DDPM ancestral sampling (Ho et al. 2020), correct on any subset of the training timesteps.

For inference times ``t_0 > t_1 > ... > t_{N-1}`` the process is respaced as in Nichol & Dhariwal (2021), Sec. 4:
the step from ``t_i`` to ``t_{i+1}`` uses ``beta'_i = 1 - abar(t_i) / abar(t_{i+1})``, and the reverse step is the
Gaussian posterior ``q(x_{t_{i+1}} | x_{t_i}, x0)`` (Ho et al. 2020, Eqs. 6-7) with the predicted x0. With all 1000
training steps this is the original sampler; with fewer it stays correct (MONAI 1.6.1's ``DDPMScheduler`` applies
the one-step formula to strided timesteps, see ``REFERENCES.md`` defect 1). The last step lands on clean data
(``abar = 1``) and returns the predicted x0 without noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.networks.schedulers.base import DiscreteTimeScheduler, randn_like

__all__ = ["DDPMScheduler", "VARIANCE_TYPES"]

#: reverse-process variances: posterior (beta-tilde), beta, learned log-variance, learned interpolation
VARIANCE_TYPES: tuple[str, ...] = ("fixed_small", "fixed_large", "learned", "learned_range")


class DDPMScheduler(DiscreteTimeScheduler):
    """Ancestral DDPM sampler with respacing and fixed or learned variances.

    Variances (Nichol & Dhariwal 2021, Sec. 3.1), with ``beta'`` the respaced beta and
    ``beta_tilde = (1 - abar_prev) / (1 - abar_t) * beta'`` the posterior variance:

    * ``fixed_small``: ``beta_tilde`` (Ho et al. 2020, the posterior of ``q``);
    * ``fixed_large``: ``beta'``;
    * ``learned``: the network returns ``2C`` channels; channels ``[C:2C]`` are the log-variance;
    * ``learned_range``: channels ``[C:2C]`` hold ``v`` in ``[-1, 1]`` and the log-variance is
      ``(v + 1)/2 log beta' + (1 - v)/2 log beta_tilde`` (Nichol & Dhariwal 2021, Eq. 15).

    For the learned types the first ``C`` channels are the prediction (``prediction_type``) and the last ``C`` the
    variance values, the layout of improved-DDPM. The final step (to clean data) is always noise-free.

    Args:
        variance_type: one of :data:`VARIANCE_TYPES`.
        All other arguments: see :class:`~monai_diffusion.networks.schedulers.base.DiscreteTimeScheduler`.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        variance_type: str = "fixed_small",
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
        if variance_type not in VARIANCE_TYPES:
            raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
        self.variance_type = variance_type
        self._publish_timesteps(torch.arange(num_train_timesteps - 1, -1, -1, dtype=torch.float64), None)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        """Choose the inference timesteps: ``num_inference_steps`` with the configured spacing, or a custom
        strictly decreasing list of integer training times. DDPM keeps no other state."""
        self._publish_timesteps(self._make_timesteps(num_inference_steps, timesteps), device)

    def _abar_pair(self, index: int) -> tuple[float, float]:
        """``(abar(t_i), abar(t_{i+1}))`` with ``abar = 1`` after the last inference time."""
        table = self.alphas_cumprod.double()
        abar_t = float(table[int(self.timesteps[index])])
        nxt = index + 1
        abar_prev = float(table[int(self.timesteps[nxt])]) if nxt < len(self.timesteps) else 1.0
        return abar_t, abar_prev

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One respaced ancestral step from ``timestep`` to the next inference time.

        Args:
            model_output: network output at ``(sample, timestep)``: C channels, or 2C for learned variances.
            timestep: the current entry of ``self.timesteps``.
            sample: the current ``x_t`` (B, C, *spatial).
            generator: random generator for the step noise.

        Returns:
            ``(prev_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        dtype = sample.dtype
        channels = sample.shape[1]
        learned = self.variance_type in ("learned", "learned_range")
        if learned:
            if model_output.shape[1] != 2 * channels or model_output.shape[2:] != sample.shape[2:]:
                raise ValueError(
                    f"variance_type {self.variance_type!r} needs {2 * channels} output channels (prediction, then "
                    f"variance values), got model_output {tuple(model_output.shape)} for sample {tuple(sample.shape)}"
                )
            pred, var_values = model_output[:, :channels].float(), model_output[:, channels:].float()
        else:
            pred, var_values = model_output.float(), None
        x = sample.float()
        index = self._index_of(timestep)
        abar_t, abar_prev = self._abar_pair(index)
        beta = 1.0 - abar_t / abar_prev
        x0, _ = self.predict_x0_eps(pred, x, math.sqrt(abar_t), math.sqrt(1.0 - abar_t))
        # posterior mean, Ho et al. (2020) Eq. 7 with the respaced beta
        coef_x0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - abar_prev) / (1.0 - abar_t)
        prev = coef_x0 * x0 + coef_xt * x
        if index + 1 < len(self.timesteps):
            beta_tilde = (1.0 - abar_prev) / (1.0 - abar_t) * beta
            if self.variance_type == "fixed_small":
                std: float | torch.Tensor = math.sqrt(beta_tilde)
            elif self.variance_type == "fixed_large":
                std = math.sqrt(beta)
            elif self.variance_type == "learned":
                assert var_values is not None
                std = torch.exp(0.5 * var_values)
            else:
                assert var_values is not None
                frac = (var_values.clamp(-1, 1) + 1) / 2
                std = torch.exp(0.5 * (math.log(beta) * frac + math.log(beta_tilde) * (1 - frac)))
            prev = prev + std * randn_like(x, generator)
        return prev.to(dtype), x0.to(dtype)
