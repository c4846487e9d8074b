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

__all__ = ["DDPMScheduler", "VARIANCE_TYPES", "VARIANCE_FLOOR", "posterior_coefficients", "reverse_variance"]

#: reverse-process variances: posterior (beta-tilde), beta, learned log-variance, learned interpolation
VARIANCE_TYPES: tuple[str, ...] = ("fixed_small", "fixed_large", "learned", "learned_range")

#: smallest posterior variance used where ``beta_tilde`` is zero (the step onto clean data), MONAI's floor, so that
#: logarithms stay finite
VARIANCE_FLOOR = 1e-20


def posterior_coefficients(
    abar_t: float | torch.Tensor, abar_prev: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Gaussian posterior ``q(x_s | x_t, x0)`` between two noise levels of a VP process, ``abar_t < abar_prev``.

    With the step's beta ``beta' = 1 - abar_t / abar_prev`` (the respacing of Nichol & Dhariwal 2021, Sec. 4; one
    training step gives ``beta_t``), Ho et al. (2020), Eqs. 6-7 read

        mean = sqrt(abar_prev) beta' / (1 - abar_t) x0 + sqrt(1 - beta') (1 - abar_prev) / (1 - abar_t) x_t,
        beta_tilde = (1 - abar_prev) / (1 - abar_t) beta'.

    ``abar_prev = 1`` is the step onto clean data (mean ``x0``, ``beta_tilde = 0``).

    Args:
        abar_t: ``abar`` at the current (noisier) time.
        abar_prev: ``abar`` at the time the step lands on.

    Returns:
        ``(coef_x0, coef_xt, beta, beta_tilde)`` as float64 tensors.

    Raises:
        ValueError: unless ``0 < abar_t < abar_prev <= 1``.
    """
    a_t = torch.as_tensor(abar_t, dtype=torch.float64)
    a_prev = torch.as_tensor(abar_prev, dtype=torch.float64).to(a_t.device)
    if not bool(((a_t > 0) & (a_t < a_prev) & (a_prev <= 1)).all()):
        raise ValueError(f"need 0 < abar_t < abar_prev <= 1, got abar_t={a_t.tolist()}, abar_prev={a_prev.tolist()}")
    beta = 1.0 - a_t / a_prev
    coef_x0 = a_prev.sqrt() * beta / (1.0 - a_t)
    coef_xt = (1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a_t)
    beta_tilde = (1.0 - a_prev) / (1.0 - a_t) * beta
    return coef_x0, coef_xt, beta, beta_tilde


def reverse_variance(
    variance_type: str,
    beta: float | torch.Tensor,
    beta_tilde: float | torch.Tensor,
    values: torch.Tensor | None = None,
) -> torch.Tensor:
    """Variance of the reverse step ``p(x_s | x_t)`` for a variance type (Nichol & Dhariwal 2021, Sec. 3.1).

    ``fixed_small``: ``beta_tilde``; ``fixed_large``: ``beta``; ``learned``: ``exp(values)`` (a log-variance);
    ``learned_range``: ``exp((v + 1)/2 log beta + (1 - v)/2 log beta_tilde)`` with ``v = values`` clamped to
    ``[-1, 1]`` (Eq. 15). ``beta_tilde`` is floored at :data:`VARIANCE_FLOOR` (it is zero on the step to clean data).
    The learned types without ``values`` give the floored ``beta_tilde``, as MONAI's ``_get_variance``.

    Returns:
        float64: a 0-d tensor for the fixed types, the shape of ``values`` for the learned ones.

    Raises:
        ValueError: for an unknown variance type.
    """
    if variance_type not in VARIANCE_TYPES:
        raise ValueError(f"variance_type must be one of {VARIANCE_TYPES}, got {variance_type!r}")
    b = torch.as_tensor(beta, dtype=torch.float64)
    b_tilde = torch.as_tensor(beta_tilde, dtype=torch.float64).to(b.device).clamp_min(VARIANCE_FLOOR)
    if variance_type == "fixed_large":
        return b
    if variance_type == "fixed_small" or values is None:
        return b_tilde
    v = values.to(device=b.device, dtype=torch.float64)
    if variance_type == "learned":
        return v.exp()
    frac = (v.clamp(-1, 1) + 1) / 2
    return torch.exp(frac * b.log() + (1 - frac) * b_tilde.log())


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
        # ``abar`` of clean data: MONAI's ``Scheduler.one``, read by its ``get_likelihood`` at t = 0 (not saved)
        self.one: torch.Tensor
        self.register_buffer("one", torch.ones(()), persistent=False)
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

    # ------------------------------------------------------------------ posterior (likelihood evaluation)
    def _posterior_abar(
        self, timestep: int | torch.Tensor, prev_timestep: int | torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(abar_t, abar_prev)`` in float64 for one training time and the time it steps to (-1: clean data)."""
        last = self.num_train_timesteps - 1
        values: list[int] = []
        for name, value in (("timestep", timestep), ("prev_timestep", prev_timestep)):
            if value is None:
                values.append(int(values[0]) - 1)
                continue
            v = torch.as_tensor(value)
            if v.numel() != 1 or v.is_complex() or v.dtype == torch.bool or float(v) != round(float(v)):
                raise ValueError(f"{name} must be one integer training time, got {value!r}")
            values.append(int(round(float(v))))
        t, s = values
        if not 0 <= t <= last or not -1 <= s < t:
            raise ValueError(f"need 0 <= timestep <= {last} and -1 <= prev_timestep < timestep, got {t} and {s}")
        table = self.alphas_cumprod.double()
        return table[t], (table[s] if s >= 0 else torch.ones((), dtype=torch.float64, device=table.device))

    def posterior_mean(
        self,
        timestep: int | torch.Tensor,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        prev_timestep: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of the posterior ``q(x_{t-1} | x_t, x0)`` (Ho et al. 2020, Eq. 7), see :func:`posterior_coefficients`.

        Args:
            timestep: the training time ``t`` of ``x_t``.
            x0: the clean image (B, C, *spatial).
            x_t: the image noised to ``t``, same shape.
            prev_timestep: the time the step lands on; default ``t - 1`` (one training step, MONAI's ``_get_mean``),
                ``-1`` for clean data, or an earlier time for a respaced step.

        Returns:
            the mean, in the dtype of ``x_t``.

        Raises:
            ValueError: timesteps out of range or not integers, or ``x0`` and ``x_t`` of different shapes.
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 {tuple(x0.shape)} and x_t {tuple(x_t.shape)} must have the same shape")
        coef_x0, coef_xt, _, _ = posterior_coefficients(*self._posterior_abar(timestep, prev_timestep))
        dtype = x_t.dtype
        mean = coef_x0.to(x_t.device) * x0.double() + coef_xt.to(x_t.device) * x_t.double()
        return mean.to(dtype)

    def posterior_variance(
        self,
        timestep: int | torch.Tensor,
        predicted_variance: torch.Tensor | None = None,
        prev_timestep: int | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Variance of the reverse step from ``timestep`` for this scheduler's ``variance_type``, see
        :func:`reverse_variance` (``fixed_small``: the posterior variance ``beta_tilde`` of ``q(x_{t-1} | x_t, x0)``,
        floored at :data:`VARIANCE_FLOOR`).

        Args:
            timestep: the training time ``t``.
            predicted_variance: for the learned types, the network's variance channels, read as :meth:`step` reads
                them (``learned``: log-variance; ``learned_range``: ``v`` in ``[-1, 1]``).
            prev_timestep: as in :meth:`posterior_mean`.

        Returns:
            a 0-d tensor (fixed types, in the tables' dtype) or a tensor shaped like ``predicted_variance``.
        """
        _, _, beta, beta_tilde = posterior_coefficients(*self._posterior_abar(timestep, prev_timestep))
        variance = reverse_variance(self.variance_type, beta, beta_tilde, predicted_variance)
        return variance.to(self.alphas_cumprod.dtype if predicted_variance is None else predicted_variance.dtype)

    def _get_mean(self, timestep: int, x_0: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """MONAI's name and signature for :meth:`posterior_mean` (one training step), read by MONAI's
        ``DiffusionInferer.get_likelihood``."""
        return self.posterior_mean(timestep, x_0, x_t)

    def _get_variance(self, timestep: int, predicted_variance: torch.Tensor | None = None) -> torch.Tensor:
        """MONAI's name and signature for :meth:`posterior_variance` (one training step). Equal to MONAI's for the
        fixed types; the learned types read ``predicted_variance`` as :meth:`step` does, where MONAI's take it as the
        variance (``learned``) or interpolate variances linearly (``learned_range``)."""
        return self.posterior_variance(timestep, predicted_variance)
