"""Posterior sampling for linear inverse problems with an unconditional diffusion prior.

Every sampler runs MONAI's loop ``x = noise * init_noise_sigma; for t in timesteps: x, x0 = step(model(x, t), t, x)``
with any scheduler of the project protocol (or MONAI's own), and adds the measurement by composition, never by a
flag inside the scheduler:

* :class:`DataConsistencySampler` acts on ``x`` after every ``step`` (Score-MRI: Chung & Ye, "Score-based
  diffusion models for accelerated MRI", MedIA 2022, Alg. 1, with hard or soft data consistency; with a
  predictor-corrector scheduler it runs after predictor and corrector steps alike). On VP processes the data are
  noise-matched to the current level, ``y_t = alpha_t y + sigma_t A eps`` (Song et al., "Solving inverse problems
  in medical imaging with score-based generative models", ICLR 2022, eq. 9).
* :class:`NullSpaceSampler` projects the model's x0 estimate before ``step`` by wrapping the model (DDNM: Wang et
  al., "Zero-shot image restoration using denoising diffusion null-space model", ICLR 2023, eq. 13).
* :class:`DPSSampler` subtracts the gradient of ``||y - A x0(x_t)||`` after ``step`` (Chung et al., "Diffusion
  posterior sampling for general noisy inverse problems", ICLR 2023, Alg. 1; our step size multiplies the gradient
  of the norm, the form of the reference implementation, i.e. ``zeta_i = 2 step_size / ||y - A x0||`` in Alg. 1).
* :class:`MCGSampler` adds the noise-matched projection after the DPS step (Chung et al., "Improving diffusion
  models for inverse problems using manifold constraints", NeurIPS 2022, eq. 14-16).

:meth:`PosteriorSampler.sample_moments` draws several samples per measurement and returns the mean and the per-pixel
standard deviation (the uncertainty map).

Complex data: the network sees real tensors. With ``complex_channels=True`` an image of ``2C`` channels is read as
``C`` complex channels, real parts first (``x[:, :C] + 1j * x[:, C:]``), for operators on complex images (e.g.
multi-coil MRI); otherwise the network image is passed to the operator as is (real-domain operators).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from monai_diffusion.inferers.utils import timestep_batch
from monai_diffusion.networks.schedulers.process import PredictionType, marginal_coefficients, prediction_type_of
from monai_diffusion.operators.base import LinearOperator

__all__ = [
    "PosteriorSampler",
    "DataConsistencySampler",
    "NullSpaceSampler",
    "DPSSampler",
    "MCGSampler",
    "noise_level",
    "x0_from_output",
    "output_from_x0",
]


def noise_level(scheduler, timestep) -> tuple[float, float]:
    """``(alpha, sigma)`` of ``x_t = alpha x0 + sigma eps`` at one model timestep, for any scheduler, as floats.

    The first entry of ``timestep`` through :func:`~monai_diffusion.networks.schedulers.process.marginal_coefficients`
    (so fractional times of a MONAI/diffusers table are interpolated like everywhere else, not rounded).
    """
    t = torch.as_tensor(timestep).reshape(-1)[:1]
    alpha, sigma = marginal_coefficients(scheduler, t)
    return float(alpha[0]), float(sigma[0])


def x0_from_output(
    out: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str
) -> torch.Tensor:
    """The clean-image estimate from a network output (see :class:`~.process.PredictionType`)."""
    return PredictionType.of(prediction_type).to_x0_eps(out, x, alpha, sigma)[0]


def output_from_x0(x0: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, prediction_type: str) -> torch.Tensor:
    """The network output consistent with ``(x_t, x0)``: inverse of :func:`x0_from_output`."""
    return PredictionType.of(prediction_type).from_x0(x0, x, alpha, sigma)


class PosteriorSampler(nn.Module):
    """Base of posterior samplers: the sampling loop, domain conversion and noise-level bookkeeping.

    The noise level of ``x`` after step ``i`` is that of ``timesteps[i + 1]`` (the time the model next sees it),
    and clean (``alpha = 1, sigma = 0``) after the last step; data consistency on ``x`` uses that level.

    Args:
        operator: the forward operator ``A``.
        scheduler: a scheduler following the project protocol (or MONAI's ``DDPMScheduler``/``DDIMScheduler``).
        complex_channels: read ``2C`` real network channels as ``C`` complex ones (see module docs).
        progress: show a tqdm progress bar.
    """

    def __init__(
        self, operator: LinearOperator, scheduler, complex_channels: bool = False, progress: bool = False
    ) -> None:
        super().__init__()
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
        self.operator = operator
        self.scheduler = scheduler
        self.complex_channels = bool(complex_channels)
        self.progress = bool(progress)

    # ------------------------------------------------------------------ domains
    def to_operator(self, x: torch.Tensor) -> torch.Tensor:
        """Network image -> operator image (complex if ``complex_channels``)."""
        if not self.complex_channels:
            return x
        if x.shape[1] % 2:
            raise ValueError(f"complex_channels needs an even channel count (real, then imaginary), got {x.shape[1]}")
        c = x.shape[1] // 2
        return torch.complex(x[:, :c], x[:, c:])

    def from_operator(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Operator image -> network image (real, ``like``'s dtype)."""
        if self.complex_channels:
            return torch.cat([z.real, z.imag], 1).to(like.dtype)
        return (z.real if z.is_complex() else z).to(like.dtype)

    def check_measurement(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """Check that ``y`` has the shape and the (real or complex) kind the operator produces from ``x``.

        Raises:
            TypeError: ``y`` is not a tensor, or is real where the operator produces complex measurements (e.g.
                k-space: a real tensor would silently drop the imaginary part of the data).
            ValueError: ``y``'s shape differs from the operator's output for ``x``.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"measurement must be a torch.Tensor, got {type(y).__name__}")
        ref = self.operator.A(self.to_operator(x[:1]))
        want = tuple(ref.shape[1:])
        if ref.is_complex() and not y.is_complex():
            raise TypeError(
                f"{type(self.operator).__name__} produces complex measurements; got a real tensor of dtype {y.dtype}"
            )
        if tuple(y.shape[1:]) != want or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"measurement shape {tuple(y.shape)} does not match the operator's ({x.shape[0]}, *{want})"
            )

    # ------------------------------------------------------------------ data consistency pieces
    def measurement_noise(self, y: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``A eps`` for fresh white noise ``eps`` in the network domain (used for noise-matched data)."""
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        return self.operator.A(self.to_operator(eps))

    def project(self, x: torch.Tensor, y: torch.Tensor, mode: str, weight: float) -> torch.Tensor:
        """Hard (``x + A^+(y - A x)``) or soft (``argmin ||z - x||^2 + weight ||A z - y||^2``) consistency."""
        z = self.to_operator(x)
        if mode == "hard":
            out = self.operator.project(z, y.to(self._meas_dtype(z, y)))
        elif mode == "soft":
            out = self.operator.soft_project(z, y.to(self._meas_dtype(z, y)), weight)
        else:
            raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
        return self.from_operator(out, x)

    @staticmethod
    def _meas_dtype(z: torch.Tensor, y: torch.Tensor) -> torch.dtype:
        if y.is_complex():
            return torch.complex128 if z.dtype in (torch.float64, torch.complex128) else torch.complex64
        return z.real.dtype

    # ------------------------------------------------------------------ loop
    def _timesteps(self, num_inference_steps: int | None, device: torch.device) -> torch.Tensor:
        if num_inference_steps is not None:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        return torch.as_tensor(self.scheduler.timesteps)

    def next_level(self, timesteps: torch.Tensor, i: int) -> tuple[float, float]:
        return noise_level(self.scheduler, timesteps[i + 1]) if i + 1 < len(timesteps) else (1.0, 0.0)

    def sample(
        self,
        model: nn.Module,
        measurement: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        **model_kwargs,
    ) -> torch.Tensor:
        """Draw one posterior sample per measurement.

        Args:
            model: the prior network ``model(x, timesteps, **model_kwargs)`` in the scheduler's units.
            measurement: ``y`` (B, ...), the operator's output layout.
            noise: the initial noise (B, C, *spatial) in the network domain; its dtype is the sampling dtype.
            num_inference_steps: if given, ``scheduler.set_timesteps`` is called with it.
            generator: random generator for the scheduler's and the sampler's noise.
            model_kwargs: passed to the model (conditioning).

        Returns:
            The final sample (B, C, *spatial), network domain.
        """
        self.check_measurement(measurement, noise)
        timesteps = self._timesteps(num_inference_steps, noise.device)
        x = noise * float(getattr(self.scheduler, "init_noise_sigma", 1.0))
        it = range(len(timesteps))
        if self.progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(timesteps))
        for i in it:
            x = self.sample_step(model, measurement, x, timesteps, i, generator, model_kwargs)
        return x

    def sample_step(self, model, y, x, timesteps, i, generator, model_kwargs) -> torch.Tensor:
        raise NotImplementedError

    def _call_model(self, model, x, t, model_kwargs):
        return model(x, timestep_batch(t, x.shape[0], x.device), **model_kwargs)

    def _step(self, out, t, x, generator):
        return self.scheduler.step(out, t, x, generator=generator)

    def sample_moments(
        self,
        model: nn.Module,
        measurement: torch.Tensor,
        num_samples: int,
        shape: Sequence[int],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        **model_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and per-pixel standard deviation from ``num_samples`` samples per measurement.

        All samples run as one batch of ``num_samples * B`` (sample index major).

        Args:
            shape: the network image shape of one measurement's sample, (C, *spatial).

        Returns:
            ``(mean, std)`` each (B, C, *spatial); ``std`` uses the unbiased estimator (``num_samples >= 2``).
        """
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2 for a standard deviation, got {num_samples}")
        b = measurement.shape[0]
        y = measurement.repeat(num_samples, *([1] * (measurement.ndim - 1)))
        noise = torch.randn((num_samples * b, *shape), generator=generator, dtype=dtype).to(measurement.device)
        xs = self.sample(model, y, noise, num_inference_steps, generator, **model_kwargs)
        xs = xs.reshape(num_samples, b, *xs.shape[1:])
        return xs.mean(0), xs.std(0)


class DataConsistencySampler(PosteriorSampler):
    """Score-MRI-style sampling: data consistency on ``x`` after every scheduler step.

    Args:
        mode: ``"hard"`` (replace the measured part, noiseless data) or ``"soft"`` (weighted, noisy data).
        weight: the soft-consistency weight (``||z - x||^2 + weight ||A z - y_t||^2``).
        noise_matched: use ``y_t = alpha_t y + sigma_t A eps`` at intermediate levels (VP-correct); ``False``
            uses ``y`` itself at every level (the original Score-MRI on a VE process, where ``alpha = 1``).
        operator, scheduler, complex_channels, progress: see :class:`PosteriorSampler`.
    """

    def __init__(
        self,
        operator: LinearOperator,
        scheduler,
        mode: str = "hard",
        weight: float = 1.0,
        noise_matched: bool = True,
        complex_channels: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress)
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.mode = mode
        self.weight = float(weight)
        self.noise_matched = bool(noise_matched)

    def sample_step(self, model, y, x, timesteps, i, generator, model_kwargs):
        t = timesteps[i]
        with torch.no_grad():
            out = self._call_model(model, x, t, model_kwargs)
            x, _ = self._step(out, t, x, generator)
            a, s = self.next_level(timesteps, i)
            yt = y
            if self.noise_matched:
                yt = a * y + (s * self.measurement_noise(y, x, generator) if s > 0 else 0)
            return self.project(x, yt, self.mode, self.weight)


class NullSpaceSampler(PosteriorSampler):
    """DDNM: the model's x0 estimate is replaced by its range-null-space correction before every ``step``.

    ``x0 <- x0 + A^+(y - A x0)`` (hard, noiseless) or the soft projection with ``weight`` (noisy data), and the
    network output handed to the scheduler is recomputed from the corrected x0 (a wrapped model).
    """

    def __init__(
        self,
        operator: LinearOperator,
        scheduler,
        mode: str = "hard",
        weight: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress)
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.mode = mode
        self.weight = float(weight)

    def sample_step(self, model, y, x, timesteps, i, generator, model_kwargs):
        t = timesteps[i]
        ptype = prediction_type_of(self.scheduler)
        with torch.no_grad():
            out = self._call_model(model, x, t, model_kwargs)
            a, s = noise_level(self.scheduler, t)
            x0 = ptype.to_x0_eps(out, x, a, s)[0]
            x0 = self.project(x0, y, self.mode, self.weight)
            x, _ = self._step(ptype.from_x0(x0, x, a, s), t, x, generator)
            return x


class DPSSampler(PosteriorSampler):
    """Diffusion posterior sampling: ``x_{t'} = step(x_t) - step_size * grad_{x_t} ||y - A x0(x_t)||`` per sample.

    Approximate by design (it replaces ``p(y | x_t)`` by ``p(y | E[x0 | x_t])``): the exact-posterior test and the
    benchmark report its gap.
    """

    def __init__(
        self,
        operator: LinearOperator,
        scheduler,
        step_size: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress)
        if step_size < 0:
            raise ValueError(f"step_size must be non-negative, got {step_size}")
        self.step_size = float(step_size)

    def guided_step(self, model, y, x, t, generator, model_kwargs) -> torch.Tensor:
        ptype = prediction_type_of(self.scheduler)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = self._call_model(model, xg, t, model_kwargs)
            a, s = noise_level(self.scheduler, t)
            x0 = ptype.to_x0_eps(out, xg, a, s)[0]
            res = self.operator.A(self.to_operator(x0)) - y.to(self._meas_dtype(self.to_operator(x0), y))
            norm = res.abs().pow(2).reshape(res.shape[0], -1).sum(-1).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), xg)
        with torch.no_grad():
            x_next, _ = self._step(out.detach(), t, x.detach(), generator)
            return x_next - self.step_size * grad

    def sample_step(self, model, y, x, timesteps, i, generator, model_kwargs):
        return self.guided_step(model, y, x, timesteps[i], generator, model_kwargs)


class MCGSampler(DPSSampler):
    """Manifold-constrained gradient: the DPS step followed by noise-matched data consistency on ``x``.

    Args:
        mode, weight: hard or soft consistency of the projection step (see :class:`DataConsistencySampler`).
    """

    def __init__(
        self,
        operator: LinearOperator,
        scheduler,
        step_size: float = 1.0,
        mode: str = "hard",
        weight: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(operator, scheduler, step_size, complex_channels, progress)
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.mode = mode
        self.weight = float(weight)

    def sample_step(self, model, y, x, timesteps, i, generator, model_kwargs):
        x = self.guided_step(model, y, x, timesteps[i], generator, model_kwargs)
        with torch.no_grad():
            a, s = self.next_level(timesteps, i)
            yt = a * y + (s * self.measurement_noise(y, x, generator) if s > 0 else 0)
            return self.project(x, yt, self.mode, self.weight)
