"""Posterior sampling for inverse problems with an unconditional diffusion prior, through the one sampling loop.

A posterior method never runs a loop of its own. :meth:`PosteriorSampler.bind` wraps the prior network and the
measurement into a :class:`PosteriorModel`, which :meth:`~monai_diffusion.inferers.DiffusionInferer.sample` (and
:class:`~monai_diffusion.inferers.LatentDiffusionInferer`) drive like any network or guidance wrapper::

    dps = DPSSampler(operator, step_size=1.0)
    x = inferer.sample(noise, dps.bind(unet, y), scheduler, num_inference_steps=50)

so every sampler (MONAI's or ours), partial starts (``start_image``/``strength``: start from a zero-filled
reconstruction), conditioning, guidance wrappers inside, callbacks, intermediates and latent priors work with every
method. The measurement enters in two places, by composition and never by a flag inside a scheduler:

* the **model output**: the wrapper may correct the network's clean-image estimate before ``step`` sees it (DDNM)
  or differentiate it (DPS, MCG);
* the **state after each step**: the loop calls the wrapper's ``after_step`` hook, which may correct ``x``
  (Score-MRI data consistency, the DPS gradient step, the MCG projection). The hook protocol is documented in
  :mod:`monai_diffusion.inferers.diffusion`.

The methods:

* :class:`DataConsistencySampler` acts on ``x`` after every ``step`` (Score-MRI: Chung & Ye, "Score-based
  diffusion models for accelerated MRI", MedIA 2022, Alg. 1, with hard or soft data consistency; with a
  predictor-corrector scheduler it runs after predictor and corrector steps alike). On VP processes the data are
  noise-matched to the current level, ``y_t = alpha_t y + sigma_t A eps`` (Song et al., "Solving inverse problems
  in medical imaging with score-based generative models", ICLR 2022, eq. 9).
* :class:`NullSpaceSampler` projects the model's x0 estimate before ``step`` (DDNM: Wang et al., "Zero-shot image
  restoration using denoising diffusion null-space model", ICLR 2023, eq. 13). It needs no hook, so its wrapper
  also runs inside MONAI's own inferer.
* :class:`DPSSampler` subtracts the gradient of ``||y - A x0(x_t)||`` after ``step`` (Chung et al., "Diffusion
  posterior sampling for general noisy inverse problems", ICLR 2023, Alg. 1; our step size multiplies the gradient
  of the norm, the form of the reference implementation, i.e. ``zeta_i = 2 step_size / ||y - A x0||`` in Alg. 1).
* :class:`MCGSampler` adds the noise-matched projection after the DPS step (Chung et al., "Improving diffusion
  models for inverse problems using manifold constraints", NeurIPS 2022, eq. 14-16).

Domains: the network sees real tensors; the operator may want something else. :class:`ComplexChannels` reads an
image of ``2C`` channels as ``C`` complex channels (real parts first), for operators on complex images (multi-coil
MRI); :class:`LatentDomain` decodes latents of an autoencoder (a latent prior). Data consistency on the noisy state
(Score-MRI, MCG) needs a linear map between the two and is refused for latents; DDNM (decode, project, encode the
clean estimate) and DPS (the gradient flows through the decoder) work in latent space.

:meth:`PosteriorSampler.sample` keeps the one-call form ``sampler.sample(model, y, noise, steps, generator)`` (it
calls the inferer), and :meth:`PosteriorSampler.sample_moments` draws several samples per measurement and returns
the mean and the per-pixel standard deviation (the uncertainty map).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from monai_diffusion.inferers.guidance import GuidedModel, call_model
from monai_diffusion.networks.schedulers.process import PredictionType, marginal_coefficients, prediction_type_of
from monai_diffusion.operators.base import LinearOperator

__all__ = [
    "PosteriorSampler",
    "PosteriorModel",
    "DataConsistencySampler",
    "NullSpaceSampler",
    "DPSSampler",
    "MCGSampler",
    "ImageDomain",
    "ComplexChannels",
    "LatentDomain",
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


# ---------------------------------------------------------------------- domains
class ImageDomain:
    """The network image is the operator's image (real-domain operators). ``linear``: maps noisy states too."""

    linear = True

    def to_operator(self, x: torch.Tensor) -> torch.Tensor:
        """Network image -> operator image."""
        return x

    def from_operator(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Operator image -> network image (real, ``like``'s dtype)."""
        return (z.real if z.is_complex() else z).to(like.dtype)


class ComplexChannels(ImageDomain):
    """``2C`` real network channels read as ``C`` complex channels: ``x[:, :C] + 1j * x[:, C:]``."""

    def to_operator(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"complex_channels needs an even channel count (real, then imaginary), got {x.shape[1]}")
        c = x.shape[1] // 2
        return torch.complex(x[:, :c], x[:, c:])

    def from_operator(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.cat([z.real, z.imag], 1).to(like.dtype)


class LatentDomain(ImageDomain):
    """Latents ``z = scale_factor * E(x)`` of a first-stage autoencoder (a latent prior).

    ``to_operator`` decodes ``D(z / scale_factor)`` (differentiable, for DPS); ``from_operator`` encodes (the
    posterior mean of an ``AutoencoderKL``). Not linear: data consistency on the noisy state is refused.

    Args:
        autoencoder: MONAI's ``AutoencoderKL`` or ``VQVAE`` (run in eval mode).
        scale_factor: the latent diffusion inferer's scale factor.
    """

    linear = False

    def __init__(self, autoencoder: nn.Module, scale_factor: float = 1.0) -> None:
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor}")
        self.autoencoder = autoencoder
        self.scale_factor = float(scale_factor)

    def to_operator(self, x: torch.Tensor) -> torch.Tensor:
        from monai_diffusion.inferers.latent import decode_latent, frozen

        with frozen(self.autoencoder):
            return decode_latent(self.autoencoder, x / self.scale_factor)

    def from_operator(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        from monai_diffusion.inferers.latent import encode_latent, frozen

        z = z.real if z.is_complex() else z
        with torch.no_grad(), frozen(self.autoencoder):
            return (encode_latent(self.autoencoder, z.to(like.dtype)) * self.scale_factor).to(like.dtype)


# ---------------------------------------------------------------------- the bound model
class _WithKeywords(nn.Module):
    """A network called with fixed extra keywords (the ``**model_kwargs`` of :meth:`PosteriorSampler.sample`)."""

    def __init__(self, network: Callable, kwargs: Mapping[str, Any]) -> None:
        super().__init__()
        self.network = network
        self.kwargs = dict(kwargs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.network(x, timesteps, **{**self.kwargs, **kwargs})


class PosteriorModel(GuidedModel):
    """A prior network bound to a measurement by a posterior method: what the sampling loop drives.

    ``forward(x, t, conditioning)`` returns the (possibly corrected) network output; ``begin_sampling`` and
    ``after_step`` are the loop's hooks. Built by :meth:`PosteriorSampler.bind`; it wraps networks and guidance
    wrappers alike (guidance goes inside, e.g. ``dps.bind(ClassifierFreeGuidance(unet, 2.0, null), y)``).

    Raises:
        RuntimeError: a method that corrects the state is driven by a loop without the hooks (e.g. MONAI's
            inferer), or no scheduler is known.
    """

    def __init__(self, network: Callable, method: PosteriorSampler, measurement: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.method = method
        self.measurement = measurement
        self.scheduler = method.scheduler
        self.timesteps: torch.Tensor | None = None
        self.generator: torch.Generator | None = None
        self._carry: Any = None
        self._pending = False
        self._checked = False

    def begin_sampling(self, scheduler, timesteps: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Hook: the loop's scheduler, its model-evaluation times and generator, before the first step."""
        self.scheduler = scheduler
        self.timesteps = torch.as_tensor(timesteps)
        self.generator = generator
        self._carry, self._pending = None, False

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: Mapping[str, torch.Tensor] | None = None,
        context: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The output for ``step``; ``context``/``class_labels`` are the keywords MONAI's inferer passes."""
        if context is not None or class_labels is not None:
            conditioning = dict(conditioning or {})
            if context is not None:
                conditioning["crossattn"] = context
            if class_labels is not None:
                conditioning["class_label"] = class_labels
        if self.scheduler is None:
            raise RuntimeError(
                f"{type(self.method).__name__} has no scheduler: give one to the sampler, or run this model through "
                "monai_diffusion's DiffusionInferer.sample (which announces its scheduler)"
            )
        if self.method.needs_step_hook and self._pending:
            raise RuntimeError(
                f"{type(self.method).__name__} corrects the state after every step, but the loop driving it did not "
                "call after_step: run it through monai_diffusion.inferers.DiffusionInferer.sample (MONAI's inferer "
                "has no step hook; only NullSpaceSampler works there)"
            )
        if not self._checked:
            self.method.check_measurement(self.measurement, x)
            self._checked = True
        out, self._carry = self.method.model_output(self.network, x, timesteps, conditioning, self)
        self._pending = True
        return out

    def after_step(self, index: int, timestep: torch.Tensor, x_prev: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """Hook: the state after ``step`` at ``timesteps[index]``, corrected by the method."""
        if self.timesteps is None:
            raise RuntimeError("after_step called before begin_sampling")
        i = int(index)
        level = noise_level(self.scheduler, self.timesteps[i + 1]) if i + 1 < len(self.timesteps) else (1.0, 0.0)
        x = self.method.state_correction(x_prev, self.measurement, level, self._carry, self.generator)
        self._carry, self._pending = None, False
        return x

    def output_and_x0(
        self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float], PredictionType]:
        """The network output at ``(x, t)``, its clean estimate, ``(alpha, sigma)`` and the prediction type."""
        out = call_model(self.network, x, timesteps, conditioning)
        a, s = noise_level(self.scheduler, timesteps)
        ptype = prediction_type_of(self.scheduler)
        return out, ptype.to_x0_eps(out, x, a, s)[0], (a, s), ptype


# ---------------------------------------------------------------------- methods
def _check_mode(mode: str, weight: float) -> None:
    if mode not in ("hard", "soft"):
        raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
    if not weight >= 0:
        raise ValueError(f"weight must be non-negative, got {weight}")


class PosteriorSampler(nn.Module):
    """Base of posterior methods: domain conversion, the measurement check and the two correction points.

    Subclasses override :meth:`model_output` (correct or differentiate the network's output) and/or
    :meth:`state_correction` (correct ``x`` after each step, at the noise level the model next sees it: that of
    ``timesteps[i + 1]``, and clean ``(1, 0)`` after the last step).

    Args:
        operator: the forward operator ``A``.
        scheduler: the scheduler of the one-call :meth:`sample` (and the default of a bound model outside our
            inferer); inside :meth:`DiffusionInferer.sample` the loop's scheduler is used.
        complex_channels: read ``2C`` real network channels as ``C`` complex ones (a :class:`ComplexChannels`
            domain).
        progress: show a tqdm progress bar in :meth:`sample`.
        domain: the network-to-operator map (default: the identity, or complex channels); a
            :class:`LatentDomain` for a latent prior.
    """

    #: whether the method corrects the state after each step (needs the loop's ``after_step`` hook)
    needs_step_hook = True
    #: whether the method needs a linear domain (it maps noisy states)
    needs_linear_domain = False

    def __init__(
        self,
        operator: LinearOperator,
        scheduler=None,
        complex_channels: bool = False,
        progress: bool = False,
        domain: ImageDomain | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(operator, LinearOperator):
            raise TypeError(f"operator must be a LinearOperator, got {type(operator).__name__}")
        if domain is not None and complex_channels:
            raise ValueError("give either complex_channels=True or a domain, not both")
        self.operator = operator
        self.scheduler = scheduler
        self.complex_channels = bool(complex_channels)
        self.progress = bool(progress)
        self.domain = domain if domain is not None else (ComplexChannels() if complex_channels else ImageDomain())
        if self.needs_linear_domain and not self.domain.linear:
            raise ValueError(
                f"{type(self).__name__} corrects the noisy state and needs a linear map to the operator's domain; "
                f"with a {type(self.domain).__name__} use NullSpaceSampler or DPSSampler"
            )

    # ------------------------------------------------------------------ domains
    def to_operator(self, x: torch.Tensor) -> torch.Tensor:
        """Network image -> operator image."""
        return self.domain.to_operator(x)

    def from_operator(self, z: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Operator image -> network image (``like``'s dtype)."""
        return self.domain.from_operator(z, like)

    def check_measurement(self, y: torch.Tensor, x: torch.Tensor) -> None:
        """Check that ``y`` has the shape and the (real or complex) kind the operator produces from ``x``.

        Raises:
            TypeError: ``y`` is not a tensor, or is real where the operator produces complex measurements (e.g.
                k-space: a real tensor would silently drop the imaginary part of the data).
            ValueError: ``y``'s shape differs from the operator's output for ``x``, or ``y`` is not finite.
        """
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"measurement must be a torch.Tensor, got {type(y).__name__}")
        with torch.no_grad():
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
        if not bool(torch.isfinite(y).all()):
            raise ValueError("measurement holds NaN or infinite values")

    # ------------------------------------------------------------------ data consistency pieces
    def measurement_noise(self, y: torch.Tensor, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``A eps`` for fresh white noise ``eps`` in the network domain (used for noise-matched data)."""
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        return self.operator.A(self.to_operator(eps))

    def project(self, x: torch.Tensor, y: torch.Tensor, mode: str, weight: float) -> torch.Tensor:
        """Hard (``x + A^+(y - A x)``) or soft (``argmin ||z - x||^2 + weight ||A z - y||^2``) consistency."""
        _check_mode(mode, weight)
        z = self.to_operator(x)
        if mode == "hard":
            out = self.operator.project(z, y.to(self._meas_dtype(z, y)))
        else:
            out = self.operator.soft_project(z, y.to(self._meas_dtype(z, y)), weight)
        return self.from_operator(out, x)

    def matched_data(self, y: torch.Tensor, x: torch.Tensor, level: tuple[float, float], generator) -> torch.Tensor:
        """``y_t = alpha y + sigma A eps`` at ``level = (alpha, sigma)`` (``y`` itself when clean)."""
        a, s = level
        return a * y + (s * self.measurement_noise(y, x, generator) if s > 0 else 0)

    @staticmethod
    def _meas_dtype(z: torch.Tensor, y: torch.Tensor) -> torch.dtype:
        if y.is_complex():
            return torch.complex128 if z.dtype in (torch.float64, torch.complex128) else torch.complex64
        return z.real.dtype

    # ------------------------------------------------------------------ the two correction points
    def model_output(
        self, network: Callable, x: torch.Tensor, timesteps: torch.Tensor, conditioning, bound: PosteriorModel
    ) -> tuple[torch.Tensor, Any]:
        """The output handed to ``step`` and what :meth:`state_correction` needs from this evaluation."""
        return call_model(network, x, timesteps, conditioning), None

    def state_correction(
        self, x: torch.Tensor, y: torch.Tensor, level: tuple[float, float], carry: Any, generator
    ) -> torch.Tensor:
        """``x`` after ``step``, corrected; ``level`` is ``(alpha, sigma)`` of ``x`` now."""
        return x

    # ------------------------------------------------------------------ use
    def bind(self, network: Callable, measurement: torch.Tensor) -> PosteriorModel:
        """Wrap ``network`` (a network or guidance wrapper) and the measurement ``y`` into a model for the loop."""
        if not isinstance(measurement, torch.Tensor):
            raise TypeError(f"measurement must be a torch.Tensor, got {type(measurement).__name__}")
        return PosteriorModel(network, self, measurement)

    def sample(
        self,
        model: Callable,
        measurement: torch.Tensor,
        noise: torch.Tensor,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        **model_kwargs,
    ) -> torch.Tensor:
        """Draw one posterior sample per measurement (one call of :meth:`DiffusionInferer.sample`).

        Args:
            model: the prior network ``model(x, timesteps, **model_kwargs)`` in the scheduler's units.
            measurement: ``y`` (B, ...), the operator's output layout.
            noise: the initial noise (B, C, *spatial) in the network domain; its dtype is the sampling dtype.
            num_inference_steps: if given, ``scheduler.set_timesteps`` is called with it.
            generator: random generator for the scheduler's and the sampler's noise.
            model_kwargs: passed to the model as keywords.

        Returns:
            The final sample (B, C, *spatial), network domain.
        """
        from monai_diffusion.inferers.diffusion import DiffusionInferer

        if self.scheduler is None:
            raise ValueError(f"{type(self).__name__}.sample needs a scheduler (give one to the constructor)")
        self.check_measurement(measurement, noise)
        network = _WithKeywords(model, model_kwargs) if model_kwargs else model
        out = DiffusionInferer(self.scheduler).sample(
            noise,
            self.bind(network, measurement),
            num_inference_steps=num_inference_steps,
            generator=generator,
            progress=self.progress,
        )
        return out  # type: ignore[return-value]

    def sample_moments(
        self,
        model: Callable,
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
        operator, scheduler, complex_channels, progress, domain: see :class:`PosteriorSampler` (the domain must be
            linear).
    """

    needs_linear_domain = True

    def __init__(
        self,
        operator: LinearOperator,
        scheduler=None,
        mode: str = "hard",
        weight: float = 1.0,
        noise_matched: bool = True,
        complex_channels: bool = False,
        progress: bool = False,
        domain: ImageDomain | None = None,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress, domain)
        _check_mode(mode, weight)
        self.mode = mode
        self.weight = float(weight)
        self.noise_matched = bool(noise_matched)

    def model_output(self, network, x, timesteps, conditioning, bound):
        with torch.no_grad():
            return call_model(network, x, timesteps, conditioning), None

    def state_correction(self, x, y, level, carry, generator):
        with torch.no_grad():
            yt = self.matched_data(y, x, level, generator) if self.noise_matched else y
            return self.project(x, yt, self.mode, self.weight)


class NullSpaceSampler(PosteriorSampler):
    """DDNM: the model's x0 estimate is replaced by its range-null-space correction before every ``step``.

    ``x0 <- x0 + A^+(y - A x0)`` (hard, noiseless) or the soft projection with ``weight`` (noisy data), and the
    network output handed to the scheduler is recomputed from the corrected x0. It needs no step hook, so the bound
    model also runs inside MONAI's inferer (give the scheduler to the constructor). In a :class:`LatentDomain` the
    clean latent estimate is decoded, projected and encoded again.
    """

    needs_step_hook = False

    def __init__(
        self,
        operator: LinearOperator,
        scheduler=None,
        mode: str = "hard",
        weight: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
        domain: ImageDomain | None = None,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress, domain)
        _check_mode(mode, weight)
        self.mode = mode
        self.weight = float(weight)

    def model_output(self, network, x, timesteps, conditioning, bound):
        with torch.no_grad():
            _, x0, (a, s), ptype = bound.output_and_x0(x, timesteps, conditioning)
            x0 = self.project(x0, bound.measurement, self.mode, self.weight)
            return ptype.from_x0(x0, x, a, s), None


class DPSSampler(PosteriorSampler):
    """Diffusion posterior sampling: ``x_{t'} = step(x_t) - step_size * grad_{x_t} ||y - A x0(x_t)||`` per sample.

    Approximate by design (it replaces ``p(y | x_t)`` by ``p(y | E[x0 | x_t])``): the exact-posterior test and the
    benchmark report its gap. The gradient flows through the network (and a :class:`LatentDomain`'s decoder).
    """

    def __init__(
        self,
        operator: LinearOperator,
        scheduler=None,
        step_size: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
        domain: ImageDomain | None = None,
    ) -> None:
        super().__init__(operator, scheduler, complex_channels, progress, domain)
        if not step_size >= 0 or step_size == float("inf"):
            raise ValueError(f"step_size must be finite and non-negative, got {step_size}")
        self.step_size = float(step_size)

    def model_output(self, network, x, timesteps, conditioning, bound):
        y = bound.measurement
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out, x0, _, _ = bound.output_and_x0(xg, timesteps, conditioning)
            z = self.to_operator(x0)
            res = self.operator.A(z) - y.to(self._meas_dtype(z, y))
            norm = res.abs().pow(2).reshape(res.shape[0], -1).sum(-1).sqrt()
            (grad,) = torch.autograd.grad(norm.sum(), xg)
        return out.detach(), grad

    def state_correction(self, x, y, level, carry, generator):
        return x - self.step_size * carry


class MCGSampler(DPSSampler):
    """Manifold-constrained gradient: the DPS step followed by noise-matched data consistency on ``x``.

    Args:
        mode, weight: hard or soft consistency of the projection step (see :class:`DataConsistencySampler`).
    """

    needs_linear_domain = True

    def __init__(
        self,
        operator: LinearOperator,
        scheduler=None,
        step_size: float = 1.0,
        mode: str = "hard",
        weight: float = 1.0,
        complex_channels: bool = False,
        progress: bool = False,
        domain: ImageDomain | None = None,
    ) -> None:
        super().__init__(operator, scheduler, step_size, complex_channels, progress, domain)
        _check_mode(mode, weight)
        self.mode = mode
        self.weight = float(weight)

    def state_correction(self, x, y, level, carry, generator):
        x = super().state_correction(x, y, level, carry, generator)
        with torch.no_grad():
            return self.project(x, self.matched_data(y, x, level, generator), self.mode, self.weight)
