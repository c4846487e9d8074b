"""Samplers of the score SDEs (Song et al., 2021), in the shared scheduler protocol.

Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-Based Generative Modeling through Stochastic
Differential Equations", ICLR 2021 (arXiv:2011.13456), referred to below as [SDE].

Each one is a ``monai.networks.schedulers.Scheduler`` on :class:`~.continuous.ContinuousTimeScheduler` (units,
timestep plan), driven by the plain loop
``x = noise * s.init_noise_sigma; for t in s.timesteps: x, x0 = s.step(model(x, t), t, x)``:

* :class:`EulerMaruyamaScheduler`: the reverse-time SDE (eq. 6) with Euler-Maruyama steps.
* :class:`PredictorCorrectorScheduler`: [SDE] Algorithm 1 (PC sampling); predictor "reverse_diffusion" (eq. 46/47),
  "euler_maruyama" or "none"; corrector: Langevin MCMC with step size set by a signal-to-noise ratio ``snr``
  (Algorithms 4 and 5). Every corrector model evaluation is its own entry of ``timesteps``.
* :class:`ProbabilityFlowScheduler`: the probability-flow ODE (eq. 13) with Heun's second-order method; the
  second evaluation of each Heun step is its own entry of ``timesteps``.

The forward SDEs (:class:`VPSDE`, :class:`SubVPSDE`, :class:`VESDE`) are defined in :mod:`.sde_definitions`, the step
maths in :mod:`.sde_steps`, and which sampler may sample which trained model (the table of shared forward processes
and :func:`check_forward_process`) in :mod:`.process`; every sampler runs that check at construction when given
``trained_with=<training scheduler>`` (``"@train_scheduler"`` in a bundle), and ``from_training_scheduler`` builds a
sampler with the SDE that matches a training scheduler. Those names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from monai_diffusion.networks.schedulers.base import randn_like
from monai_diffusion.networks.schedulers.continuous import (
    CORRECT,
    FINAL,
    HEUN,
    PREDICT,
    TIMESTEP_SPACINGS,
    ContinuousTimeScheduler,
)
from monai_diffusion.networks.schedulers.process import (
    check_forward_process,
    describe_forward_process,
    num_train_timesteps_of,
)
from monai_diffusion.networks.schedulers.sde_definitions import (
    SDE,
    SDE_REGISTRY,
    VESDE,
    VPSDE,
    SubVPSDE,
    build_sde,
    sde_from_training_scheduler,
)
from monai_diffusion.networks.schedulers.sde_steps import (
    euler_maruyama_step,
    langevin_corrector_step,
    probability_flow_derivative,
    reverse_diffusion_step,
)

__all__ = [
    "SDE",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "SDE_REGISTRY",
    "build_sde",
    "sde_from_training_scheduler",
    "check_forward_process",
    "describe_forward_process",
    "num_train_timesteps_of",
    "ContinuousTimeScheduler",
    "EulerMaruyamaScheduler",
    "PredictorCorrectorScheduler",
    "ProbabilityFlowScheduler",
    "euler_maruyama_step",
    "reverse_diffusion_step",
    "langevin_corrector_step",
    "probability_flow_derivative",
    "PREDICT",
    "CORRECT",
    "HEUN",
    "FINAL",
    "PREDICTORS",
    "TIME_SPACINGS",
]

#: the former name of :data:`~.continuous.TIMESTEP_SPACINGS`
TIME_SPACINGS = TIMESTEP_SPACINGS


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
