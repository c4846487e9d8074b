"""DPM-Solver++ multistep (Lu et al. 2022b), a fast ODE solver for the probability-flow ODE in data prediction.

With ``lambda = log(alpha / sigma)`` (half the log-SNR) and ``h = lambda_next - lambda_cur``, the exact solution of
the diffusion ODE in data-prediction form (Lu et al. 2022b, Eq. 9) is approximated by a multistep Taylor expansion
of the predicted x0 in ``lambda``:

* order 1 (DDIM): ``x_next = (sigma_next / sigma) x - alpha_next (e^{-h} - 1) x0``;
* order 2 (Alg. 2, "2M"): the same with ``x0`` replaced by ``x0 + (x0 - x0_prev) / (2 r)``, ``r = h_prev / h``;
* order 3 ("3M"): adds the second divided difference of the last three x0 predictions.

The final step lands on clean data (``sigma = 0``), where the update reduces to the predicted x0; it is always
first order. With fewer than 15 steps and ``lower_order_final``, the second-to-last step is at most second order,
which stabilises very short schedules (Lu et al. 2022b, Sec. 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.networks.schedulers.base import DiscreteTimeScheduler

__all__ = ["DPMSolverMultistepScheduler", "dpm_solver_pp_update"]


def dpm_solver_pp_update(
    sample: torch.Tensor,
    x0_history: Sequence[torch.Tensor],
    lambdas: Sequence[float],
    alpha_next: float,
    sigma_next: float,
    sigma_cur: float,
    lambda_next: float,
) -> torch.Tensor:
    """One DPM-Solver++ multistep update of order ``len(x0_history)`` (1, 2 or 3).

    Args:
        sample: the current ``x`` at the newest time.
        x0_history: predicted x0 at the newest time first, then older ones.
        lambdas: ``lambda = log(alpha/sigma)`` at the same times, newest first.
        alpha_next, sigma_next: coefficients of the target time (``sigma_next > 0``).
        sigma_cur: ``sigma`` at the newest time.
        lambda_next: ``lambda`` at the target time.

    Returns:
        ``x`` at the target time (Lu et al. 2022b, Alg. 2 and its third-order extension).
    """
    order = len(x0_history)
    h = lambda_next - lambdas[0]
    phi1 = math.expm1(-h)  # e^{-h} - 1
    m0 = x0_history[0]
    x = (sigma_next / sigma_cur) * sample - (alpha_next * phi1) * m0
    if order == 1:
        return x
    r0 = (lambdas[0] - lambdas[1]) / h
    d1_0 = (m0 - x0_history[1]) / r0
    if order == 2:
        return x - (0.5 * alpha_next * phi1) * d1_0
    if order != 3:
        raise ValueError(f"order must be 1, 2 or 3, got {order}")
    r1 = (lambdas[1] - lambdas[2]) / h
    d1_1 = (x0_history[1] - x0_history[2]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    phi2 = phi1 / h + 1.0
    phi3 = (phi1 + h) / h**2 - 0.5
    return x + (alpha_next * phi2) * d1 - (alpha_next * phi3) * d2


class DPMSolverMultistepScheduler(DiscreteTimeScheduler):
    """DPM-Solver++ (multistep, data prediction) on a discrete-time VP schedule.

    Evaluates the model once per step (NFE = ``len(timesteps)`` = ``num_inference_steps``); the last step lands on
    clean data. Fractional timesteps (``log_snr`` and ``karras`` spacings) are allowed: the network is evaluated at
    fractional times, which sinusoidal time embeddings accept.

    Args:
        solver_order: 1 (DDIM), 2 (DPM-Solver++ 2M, recommended for guided sampling) or 3 (3M).
        lower_order_final: lower the order over the last steps of schedules shorter than 15 steps.
        last_timestep_zero: if False (default), ``linspace``/``log_snr``/``karras`` grids are built with ``N + 1``
            points and the last (``t = 0``) is dropped: the final step jumps to clean data from the lowest remaining
            level instead of spending an evaluation at ``t = 0``, where the x0 prediction barely differs from ``x``.
        timestep_spacing: default ``"log_snr"`` (uniform in log-SNR, Lu et al. 2022a, Sec. 3.3); ``"karras"``,
            ``"linspace"``, ``"leading"`` and ``"trailing"`` also work.
        rho: exponent of the Karras spacing.
        All other arguments: see :class:`~monai_diffusion.networks.schedulers.base.DiscreteTimeScheduler`.
    """

    allows_fractional_timesteps = True
    default_spacing = "log_snr"
    last_timestep_zero = False
    x0_prev: torch.Tensor | None
    x0_prev2: torch.Tensor | None

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        solver_order: int = 2,
        lower_order_final: bool = True,
        last_timestep_zero: bool = False,
        prediction_type: str = "epsilon",
        timestep_spacing: str | None = None,
        rho: float = 7.0,
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
        if solver_order not in (1, 2, 3):
            raise ValueError(f"solver_order must be 1, 2 or 3, got {solver_order!r}")
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.solver_order = int(solver_order)
        self.lower_order_final = bool(lower_order_final)
        self.last_timestep_zero = bool(last_timestep_zero)
        self.rho = float(rho)
        self.register_buffer("x0_prev", None, persistent=False)
        self.register_buffer("x0_prev2", None, persistent=False)
        self.set_timesteps(20)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Choose the inference timesteps and reset the multistep history."""
        self._publish_timesteps(self._make_timesteps(num_inference_steps, timesteps), device)
        alpha, sigma = self.marginal_coefficients(self.timesteps.double().cpu())
        self._alphas_seq = [float(a) for a in alpha] + [1.0]
        self._sigmas_seq = [float(s) for s in sigma] + [0.0]
        self._lambdas_seq = [math.log(a / s) for a, s in zip(self._alphas_seq[:-1], self._sigmas_seq[:-1])]
        self.x0_prev = None
        self.x0_prev2 = None

    def _order_at(self, index: int) -> int:
        n = len(self.timesteps)
        order = min(self.solver_order, index - self._begin_index + 1)
        if self.lower_order_final and n - self._begin_index < 15:  # a short run (counted from its first entry)
            order = min(order, n - index)
        return order

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DPM-Solver++ step from ``timestep`` to the next entry of ``timesteps`` (clean data after the last).

        Args:
            model_output: network output at ``(sample, timestep)``.
            timestep: must be ``self.timesteps[k]`` for the k-th call since ``set_timesteps``.
            sample: the current ``x``.
            generator: unused (the solver is deterministic); accepted for protocol compatibility.

        Returns:
            ``(prev_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        i = self._step_index
        self._check_counter(i, timestep)
        dtype = sample.dtype
        x = sample.float()
        a_s, s_s = self._alphas_seq[i], self._sigmas_seq[i]
        x0, _ = self.predict_x0_eps(model_output.float(), x, a_s, s_s)
        if i == len(self.timesteps) - 1:
            prev = x0
        else:
            order = self._order_at(i)
            history = [h for h in (x0, self.x0_prev, self.x0_prev2) if h is not None][:order]
            lambdas = self._lambdas_seq[i - order + 1 : i + 1][::-1]
            prev = dpm_solver_pp_update(
                x,
                history,
                lambdas,
                alpha_next=self._alphas_seq[i + 1],
                sigma_next=self._sigmas_seq[i + 1],
                sigma_cur=s_s,
                lambda_next=self._lambdas_seq[i + 1],
            )
        self.x0_prev2 = self.x0_prev
        self.x0_prev = x0
        self._step_index = i + 1
        return prev.to(dtype), x0.to(dtype)
