"""UniPC (Zhao et al. 2023): a unified predictor-corrector multistep solver of the diffusion ODE, data prediction.

With ``lambda = log(alpha / sigma)``, ``h = lambda_t - lambda_s`` and ``hh = -h``, both stages share the exact
linear part ``(sigma_t / sigma_s) x_s - alpha_t (e^{hh} - 1) m_0`` (DDIM) and add ``- alpha_t B(h) sum_j a_j D_j``
where ``D_j = (m_j - m_0) / r_j`` are scaled differences of x0 predictions at ``r_j = (lambda_j - lambda_s) / h``
and the weights solve ``sum_j a_j r_j^{k-1} = k! hh phi_{k+1}(hh) / B(h)`` for ``k = 1..p`` (Zhao et al. 2023,
Thm. 3.1 and Alg. 2/3; ``phi_1(z) = (e^z - 1)/z``, ``phi_{k+1}(z) = (phi_k(z) - 1/k!)/z``).

* UniP-p (predictor) uses the ``p - 1`` previous x0 predictions;
* UniC-p (corrector) re-uses the model evaluation at the new point, which the next step needs anyway, to correct
  the step just taken, raising its order by one at no extra model evaluation. The model output is kept as is
  (evaluated at the uncorrected point), as in the paper.

``B(h)`` is ``e^{hh} - 1`` (``"bh2"``, recommended for few steps) or ``hh`` (``"bh1"``). The final step lands on
clean data and returns the x0 prediction, as for DPM-Solver++.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.networks.schedulers.base import DiscreteTimeScheduler

__all__ = ["UniPCMultistepScheduler", "unipc_weights"]


def unipc_weights(
    ratios: Sequence[float], hh: float, variant: str = "bh2", half_first: bool = True
) -> tuple[list[float], float]:
    """Weights ``a_j`` and ``B(h)`` of a UniPC update with difference points at ``ratios`` (``r_j``).

    Args:
        ratios: ``r_j = (lambda_j - lambda_s) / h`` for each difference used (length ``p``).
        hh: ``-h``, minus the log-SNR/2 step.
        variant: ``"bh1"`` (``B = hh``) or ``"bh2"`` (``B = e^{hh} - 1``).
        half_first: with a single difference, use ``a_1 = 1/2`` (the paper's choice, which satisfies the order
            condition up to ``O(h)`` and makes ``B(h)`` matter) instead of solving the condition exactly.

    Returns:
        ``(weights, B)``; empty weights for ``p = 0``.
    """
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
    big_b = hh if variant == "bh1" else math.expm1(hh)
    p = len(ratios)
    if p == 0:
        return [], big_b
    rhs = []
    phi = math.expm1(hh) / hh  # phi_1
    fact = 1.0
    for k in range(1, p + 1):
        phi = (phi - 1.0 / fact) / hh  # phi_{k+1}
        rhs.append(fact * hh * phi / big_b)
        fact *= k + 1
    if p == 1 and half_first:
        return [0.5], big_b
    mat = torch.tensor([[r**k for r in ratios] for k in range(p)], dtype=torch.float64)
    sol = torch.linalg.solve(mat, torch.tensor(rhs, dtype=torch.float64))
    return [float(a) for a in sol], big_b


class UniPCMultistepScheduler(DiscreteTimeScheduler):
    """UniPC multistep sampler (UniP-p predictor with UniC corrector) on a discrete-time VP schedule.

    One model evaluation per step (NFE = ``len(timesteps)``); the last step lands on clean data.

    Args:
        solver_order: predictor order ``p`` (1 to 3); the corrector adds one order.
        variant: ``"bh2"`` (default) or ``"bh1"``, the choice of ``B(h)``.
        use_corrector: apply UniC (set False for the plain UniP predictor).
        lower_order_final: lower the order over the last steps (step ``k`` from the end uses order ``<= k``).
        last_timestep_zero: if False (default), ``linspace``/``log_snr``/``karras`` grids are built with ``N + 1``
            points and the last (``t = 0``) is dropped: the final step jumps to clean data from the lowest remaining
            level instead of spending an evaluation at ``t = 0``, where the x0 prediction barely differs from ``x``.
        timestep_spacing: default ``"log_snr"``; any of :data:`~monai_diffusion.networks.schedulers.base.TIMESTEP_SPACINGS`.
        rho: exponent of the Karras spacing.
        All other arguments: see :class:`~monai_diffusion.networks.schedulers.base.DiscreteTimeScheduler`.
    """

    allows_fractional_timesteps = True
    default_spacing = "log_snr"
    last_timestep_zero = False
    x0_hist0: torch.Tensor | None
    x0_hist1: torch.Tensor | None
    x0_hist2: torch.Tensor | None
    last_sample: torch.Tensor | None

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        solver_order: int = 2,
        variant: str = "bh2",
        use_corrector: bool = True,
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
        if variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2', got {variant!r}")
        if rho <= 0:
            raise ValueError(f"rho must be positive, got {rho}")
        self.solver_order = int(solver_order)
        self.variant = variant
        self.half_first = True
        self.use_corrector = bool(use_corrector)
        self.lower_order_final = bool(lower_order_final)
        self.last_timestep_zero = bool(last_timestep_zero)
        self.rho = float(rho)
        for name in ("x0_hist0", "x0_hist1", "x0_hist2", "last_sample"):
            self.register_buffer(name, None, persistent=False)
        self.set_timesteps(20)

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        """Choose the inference timesteps and reset the multistep history and corrector state."""
        self._publish_timesteps(self._make_timesteps(num_inference_steps, timesteps), device)
        alpha, sigma = self.marginal_coefficients(self.timesteps.double().cpu())
        self._alphas_seq = [float(a) for a in alpha] + [1.0]
        self._sigmas_seq = [float(s) for s in sigma] + [0.0]
        self._lambdas_seq = [math.log(a / s) for a, s in zip(self._alphas_seq[:-1], self._sigmas_seq[:-1])]
        self._last_order = 0
        self.x0_hist0 = self.x0_hist1 = self.x0_hist2 = self.last_sample = None

    def _order_at(self, index: int) -> int:
        order = min(self.solver_order, index - self._begin_index + 1)
        if self.lower_order_final:
            order = min(order, len(self.timesteps) - index)
        return order

    def _history(self) -> list[torch.Tensor]:
        return [h for h in (self.x0_hist0, self.x0_hist1, self.x0_hist2) if h is not None]

    def _update(
        self, x_s: torch.Tensor, s_index: int, t_index: int, history: list[torch.Tensor], new: torch.Tensor | None
    ) -> torch.Tensor:
        """UniP (``new is None``) or UniC (``new`` = x0 at the target) update from time ``s_index`` to ``t_index``.

        ``history[0]`` is the x0 prediction at ``s_index``, ``history[j]`` the one ``j`` steps earlier.
        """
        a_t, s_t, s_s = self._alphas_seq[t_index], self._sigmas_seq[t_index], self._sigmas_seq[s_index]
        lam_s = self._lambdas_seq[s_index]
        h = self._lambdas_seq[t_index] - lam_s
        hh = -h
        m0 = history[0]
        ratios = [(self._lambdas_seq[s_index - j] - lam_s) / h for j in range(1, len(history))]
        diffs = [(history[j] - m0) / r for j, r in zip(range(1, len(history)), ratios)]
        if new is not None:
            ratios.append(1.0)
            diffs.append(new - m0)
        weights, big_b = unipc_weights(ratios, hh, self.variant, self.half_first)
        x = (s_t / s_s) * x_s - (a_t * math.expm1(hh)) * m0
        for w, d in zip(weights, diffs):
            x = x - (a_t * big_b * w) * d
        return x

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | float | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Correct the previous step with this evaluation (UniC), then predict the next point (UniP).

        Args:
            model_output: network output at ``(sample, timestep)``.
            timestep: must be ``self.timesteps[k]`` for the k-th call since ``set_timesteps``.
            sample: the current (uncorrected) ``x``.
            generator: unused (deterministic); accepted for protocol compatibility.

        Returns:
            ``(prev_sample, pred_original_sample)`` in the dtype of ``sample``.
        """
        self._check_pair(model_output, sample)
        i = self._step_index
        self._check_counter(i, timestep)
        n = len(self.timesteps)
        dtype = sample.dtype
        x = sample.float()
        x0 = self.predict_x0_eps(model_output.float(), x, self._alphas_seq[i], self._sigmas_seq[i])[0]
        if self.use_corrector and self._begin_index < i < n - 1 and self.last_sample is not None:
            x = self._update(self.last_sample, i - 1, i, self._history()[: self._last_order], new=x0)
        self.x0_hist2, self.x0_hist1, self.x0_hist0 = self.x0_hist1, self.x0_hist0, x0
        if i == n - 1:
            prev = x0
        else:
            order = self._order_at(i)
            prev = self._update(x, i, i + 1, self._history()[:order], new=None)
            self._last_order = order
        self.last_sample = x
        self._step_index = i + 1
        return prev.to(dtype), x0.to(dtype)
