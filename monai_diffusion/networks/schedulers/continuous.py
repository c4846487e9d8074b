"""The common base of the score-SDE and NCSN samplers: an SDE forward process in network-timestep units.

Units: the network is conditioned on ``timestep = t * (num_train_timesteps - 1)`` (floats between 0 and 999 by
default) for continuous time ``t`` in ``[0, 1]``, so a network trained with DDPM's integer timesteps and linear
schedule is sampled by the VP samplers (the label mapping the reference code of Song et al. 2021 uses for discretely
trained VP models). The two forward processes agree to within 0.0017 in ``alpha`` and 0.0101 in ``sigma`` at every
integer timestep (largest near t = 0, where DDPM's first step already has sigma = 0.01);
``tests/networks/schedulers/test_sde.py`` holds them to that. The network predicts ``epsilon`` (default),
``sample`` (x0) or ``v_prediction``; the score is ``-eps / sigma`` (``eps`` recovered from x0 or v through the
marginal ``(alpha, sigma)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from monai_diffusion.networks.schedulers.base import BaseScheduler, karras_sigmas
from monai_diffusion.networks.schedulers.process import (
    check_forward_process,
    num_train_timesteps_of,
    prediction_type_of,
)
from monai_diffusion.networks.schedulers.sde_definitions import SDE, VPSDE, build_sde, sde_from_training_scheduler
from monai_diffusion.utils.deprecation import renamed_keyword

__all__ = ["ContinuousTimeScheduler", "TIMESTEP_SPACINGS", "PREDICT", "CORRECT", "HEUN", "FINAL"]

#: kinds of entries of ``timesteps``: a step to the next time, a Langevin corrector step at the current time,
#: the second evaluation of a Heun step, and the last entry (denoise, or a noise-free step to t = 0)
PREDICT, CORRECT, HEUN, FINAL = 0, 1, 2, 3
#: how the time grid is placed on ``[t_min, 1]``: evenly in ``t``, evenly in log-SNR, or on Karras noise levels
TIMESTEP_SPACINGS: tuple[str, ...] = ("linspace", "log_snr", "karras")
#: the former names of those spacings
_SPACING_ALIASES = {"uniform": "linspace"}


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
        timestep_spacing: ``"linspace"`` (evenly spaced in ``t``, [SDE]; default), ``"log_snr"`` (evenly spaced in
            ``log(alpha^2/sigma^2)``) or ``"karras"`` (the VE-equivalent noise levels ``sigma / alpha`` spaced as in
            Karras et al. 2022, Eq. 5): the same names as the discrete samplers' ``timestep_spacing``.
        rho: the exponent of the ``"karras"`` spacing.
        clip_sample, clip_sample_range, thresholding, dynamic_thresholding_ratio, sample_max_value: x0
            post-processing, see :class:`~monai_diffusion.networks.schedulers.base.BaseScheduler`.
        trained_with: optionally the scheduler the model was trained with (e.g. ``"@train_scheduler"`` in a bundle
            config); construction then fails with a ``ValueError`` unless both share the forward process
            (:func:`~.process.check_forward_process`). It is not stored.
        time_spacing: deprecated name of ``timestep_spacing`` (and ``"uniform"`` of ``"linspace"``); a
            ``DeprecationWarning``.
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
        timestep_spacing: str = "linspace",
        rho: float = 7.0,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        sample_max_value: float = 1.0,
        trained_with: Any = None,
        time_spacing: str | None = None,
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
        spacing = renamed_keyword(
            type(self).__name__, "time_spacing", time_spacing, "timestep_spacing", timestep_spacing, "linspace"
        )
        if spacing in _SPACING_ALIASES:
            warnings.warn(
                f"timestep_spacing={spacing!r} is deprecated, use {_SPACING_ALIASES[spacing]!r}",
                DeprecationWarning,
                stacklevel=2,
            )
            spacing = _SPACING_ALIASES[spacing]
        if spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
        self.timestep_spacing = spacing
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
        kwargs.setdefault("prediction_type", prediction_type_of(scheduler).value)
        return cls(sde=sde_from_training_scheduler(scheduler), **kwargs)

    @property
    def time_spacing(self) -> str:
        """Deprecated name of ``timestep_spacing``."""
        warnings.warn("time_spacing is deprecated, use timestep_spacing", DeprecationWarning, stacklevel=2)
        return self.timestep_spacing

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
        configured ``timestep_spacing``, float64."""
        t_end = self.t_min if t_end is None else float(t_end)
        if num_points < 1:
            raise ValueError(f"need at least one time point, got {num_points}")
        if num_points == 1:
            return torch.full((1,), float(t_start), dtype=torch.float64)
        if self.timestep_spacing == "linspace":
            return torch.linspace(float(t_start), t_end, num_points, dtype=torch.float64)
        lam_start, lam_end = float(self.sde.log_snr(t_start)), float(self.sde.log_snr(t_end))
        if self.timestep_spacing == "log_snr":
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
        if index == 0:
            self._check_start_scale(sample, float(self.sde.marginal(t)[1]))
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
