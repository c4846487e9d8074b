"""Latent diffusion (Rombach et al., 2022, "High-Resolution Image Synthesis with Latent Diffusion Models").

The diffusion process runs on ``z = scale_factor * E(x)`` of a first-stage autoencoder (MONAI's ``AutoencoderKL`` or
``VQVAE``), and samples are decoded with ``D(z / scale_factor)``. The scale factor makes the latents roughly unit
variance (Rombach et al., Sec. 4.3.2 / App. G: ``1 / std`` of the latents of a training batch);
:func:`estimate_scale_factor` computes it from data. Everything else (conditioning, guidance wrappers, partial
noising, DDIM inversion) is :class:`~monai_diffusion.inferers.diffusion.DiffusionInferer` applied to latents.

The first stage is frozen here: it is encoded and decoded in eval mode (its previous mode is restored afterwards),
because a MONAI ``VQVAE`` in training mode updates its codebook on every forward pass, also when it only encodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from monai_diffusion.inferers.conditioning import NullCondition, is_spade
from monai_diffusion.inferers.diffusion import DiffusionInferer

__all__ = ["encode_latent", "decode_latent", "estimate_scale_factor", "is_spade", "LatentDiffusionInferer"]


def encode_latent(
    autoencoder: nn.Module,
    images: torch.Tensor,
    sample_posterior: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Encode images to (unscaled) latents.

    ``AutoencoderKL``: the posterior mean ``z_mu``, or ``z_mu + z_sigma * n`` with ``sample_posterior`` (drawn with
    ``generator``, unlike MONAI's ``encode_stage_2_inputs`` which uses the global RNG). ``VQVAE`` and others: their
    ``encode_stage_2_inputs`` (the quantised embedding for a VQ-VAE).

    Raises:
        TypeError: if the model has neither interface.
    """
    model: Any = autoencoder  # duck-typed first-stage interface
    if hasattr(model, "sampling") and hasattr(model, "encode"):
        z_mu, z_sigma = model.encode(images)
        if not sample_posterior:
            return z_mu
        noise = torch.randn(z_mu.shape, generator=generator, device=z_mu.device, dtype=z_mu.dtype)
        return z_mu + z_sigma * noise
    if hasattr(model, "encode_stage_2_inputs"):
        return model.encode_stage_2_inputs(images)
    raise TypeError(
        f"{type(autoencoder).__name__} is not a first-stage model: expected AutoencoderKL-style encode/sampling "
        "or encode_stage_2_inputs"
    )


def decode_latent(autoencoder: nn.Module, latents: torch.Tensor, seg: torch.Tensor | None = None) -> torch.Tensor:
    """Decode (unscaled) latents with ``decode_stage_2_outputs`` (a VQ-VAE re-quantises first).

    ``seg`` is passed to a SPADE autoencoder (MONAI's ``SPADEAutoencoderKL``) and ignored by others, as in MONAI.
    """
    model: Any = autoencoder
    if not hasattr(model, "decode_stage_2_outputs"):
        raise TypeError(f"{type(autoencoder).__name__} has no decode_stage_2_outputs")
    if seg is not None and is_spade(autoencoder):
        return model.decode_stage_2_outputs(latents, seg=seg)
    return model.decode_stage_2_outputs(latents)


def _fit(z: torch.Tensor, shape: Sequence[int] | None) -> torch.Tensor:
    """Centre-pad (zeros) or centre-crop the spatial dims of a batch to ``shape`` (MONAI's SpatialPad/CenterCrop)."""
    if shape is None:
        return z
    shape = [int(v) for v in shape]
    if len(shape) != z.ndim - 2:
        raise ValueError(f"latent shape {shape} has {len(shape)} dims, latents have {z.ndim - 2}: {tuple(z.shape)}")
    pad: list[int] = []
    for have, want in zip(reversed(z.shape[2:]), reversed(shape)):
        extra = max(want - have, 0)
        pad += [extra // 2, extra - extra // 2]
    if any(pad):
        z = torch.nn.functional.pad(z, pad)
    index = tuple(slice((have - want) // 2, (have - want) // 2 + want) for have, want in zip(z.shape[2:], shape))
    return z[(slice(None), slice(None), *index)]


@contextmanager
def frozen(autoencoder: nn.Module) -> Iterator[nn.Module]:
    """Run the first stage in eval mode and restore its previous mode (a training ``VQVAE`` moves its codebook)."""
    was_training = autoencoder.training
    autoencoder.eval()
    try:
        yield autoencoder
    finally:
        autoencoder.train(was_training)


def _batches(data: torch.Tensor | Iterable, image_key: str) -> Iterable[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        yield data
        return
    for item in data:
        if isinstance(item, Mapping):
            if image_key not in item:
                raise ValueError(f"batch has no key {image_key!r}; keys are {sorted(item)}")
            item = item[image_key]
        elif isinstance(item, (tuple, list)):
            item = item[0]
        yield torch.as_tensor(item)


@torch.no_grad()
def estimate_scale_factor(
    autoencoder: nn.Module,
    data: torch.Tensor | Iterable,
    image_key: str = "image",
    max_batches: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """``1 / std`` of the latents of ``data`` (Rombach et al., App. G), so scaled latents have unit variance.

    Args:
        autoencoder: the trained first-stage model (evaluated in eval mode, posterior means).
        data: an image tensor, or an iterable of tensors / ``(image, ...)`` tuples / dicts with ``image_key``
            (e.g. a MONAI ``DataLoader``).
        image_key: key of the image in dict batches.
        max_batches: use at most this many batches.
        device: where to run the encoder (default: the encoder's parameters' device).

    Raises:
        ValueError: no data, or latents with zero variance.
    """
    if device is None:
        first = next(autoencoder.parameters(), None)
        device = first.device if first is not None else "cpu"
    total = 0
    s1 = torch.zeros((), dtype=torch.float64)
    s2 = torch.zeros((), dtype=torch.float64)
    with frozen(autoencoder):
        for i, images in enumerate(_batches(data, image_key)):
            if max_batches is not None and i >= max_batches:
                break
            z = encode_latent(autoencoder, images.to(device)).to(torch.float64).cpu()
            total += z.numel()
            s1 += z.sum()
            s2 += (z**2).sum()
    if total < 2:
        raise ValueError("estimate_scale_factor needs data with at least two latent values")
    var = (s2 - s1**2 / total) / (total - 1)
    if var <= 0:
        raise ValueError("latents have zero variance; cannot estimate a scale factor")
    return float(1.0 / var.sqrt())


class LatentDiffusionInferer(DiffusionInferer):
    """Training forward and sampling of a diffusion model on autoencoder latents, in 2D and 3D.

    Args:
        scheduler: the latent forward process and default sampler.
        scale_factor: multiplies encoder latents (see :func:`estimate_scale_factor`).
        condition_mode, null_condition, condition_dropout: as for :class:`DiffusionInferer`; ``"concat"``
            conditioning must have the latent spatial shape.
        sample_posterior: encode with a draw from the ``AutoencoderKL`` posterior instead of its mean.
        ldm_latent_shape: the spatial shape of the diffusion network's latents, when it differs from the
            autoencoder's (MONAI's argument): encoded latents are centre-padded with zeros to it, and sampled latents
            centre-cropped back to ``autoencoder_latent_shape`` before decoding. Give both or neither.
        autoencoder_latent_shape: the spatial shape of the autoencoder's latents.

    Raises:
        ValueError: non-positive scale factor; only one of the latent shapes, or an ``ldm_latent_shape`` smaller
            than ``autoencoder_latent_shape``.
    """

    def __init__(
        self,
        scheduler,
        scale_factor: float = 1.0,
        condition_mode: str = "crossattn",
        null_condition: NullCondition | None = None,
        condition_dropout: float = 0.0,
        sample_posterior: bool = False,
        ldm_latent_shape: Sequence[int] | None = None,
        autoencoder_latent_shape: Sequence[int] | None = None,
    ) -> None:
        super().__init__(scheduler, condition_mode, null_condition, condition_dropout)
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor}")
        self.scale_factor = float(scale_factor)
        self.sample_posterior = bool(sample_posterior)
        if (ldm_latent_shape is None) != (autoencoder_latent_shape is None):
            raise ValueError("give both ldm_latent_shape and autoencoder_latent_shape, or neither")
        self.ldm_latent_shape = None if ldm_latent_shape is None else [int(v) for v in ldm_latent_shape]
        self.autoencoder_latent_shape = (
            None if autoencoder_latent_shape is None else [int(v) for v in autoencoder_latent_shape]
        )
        if self.ldm_latent_shape is not None and self.autoencoder_latent_shape is not None:
            if len(self.ldm_latent_shape) != len(self.autoencoder_latent_shape) or any(
                a < b for a, b in zip(self.ldm_latent_shape, self.autoencoder_latent_shape)
            ):
                raise ValueError(
                    f"ldm_latent_shape {self.ldm_latent_shape} must have autoencoder_latent_shape's dims and be at "
                    f"least as large: {self.autoencoder_latent_shape}"
                )

    def encode(
        self, autoencoder_model: nn.Module, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Scaled latents ``scale_factor * E(images)``, padded to ``ldm_latent_shape`` if set (no gradient through the
        encoder; eval mode, see module doc)."""
        with torch.no_grad(), frozen(autoencoder_model):
            z = encode_latent(autoencoder_model, images, self.sample_posterior, generator)
        return _fit(z * self.scale_factor, self.ldm_latent_shape)

    def decode(
        self, autoencoder_model: nn.Module, latents: torch.Tensor, seg: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images ``D(latents / scale_factor)``, cropped to ``autoencoder_latent_shape`` first if set (eval mode;
        gradients flow to the latents if enabled; ``seg`` for a SPADE autoencoder)."""
        with frozen(autoencoder_model):
            z = _fit(latents, self.autoencoder_latent_shape)
            return decode_latent(autoencoder_model, z / self.scale_factor, seg)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        autoencoder_model: nn.Module,
        diffusion_model: Callable,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Any = None,
        mode: str | None = None,
        output_scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode ``inputs`` and run the training forward on the latents; ``noise`` has the latent shape.

        ``seg`` reaches the network only if it is a SPADE network (MONAI's rule)."""
        latents = self.encode(autoencoder_model, inputs, generator)
        seg = seg if is_spade(diffusion_model) else None
        return super().__call__(
            latents, diffusion_model, noise, timesteps, condition, mode, output_scale, generator, seg=seg
        )

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        autoencoder_model: nn.Module,
        diffusion_model: Callable,
        scheduler=None,
        conditioning: Any = None,
        mode: str | None = None,
        start_image: torch.Tensor | None = None,
        decode: bool = True,
        seg: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Sample latents with :meth:`DiffusionInferer.sample` and decode them.

        Args:
            input_noise: latent-shaped noise (or the latent state at the start step, e.g. from :meth:`ddim_invert`).
            autoencoder_model: the first-stage model.
            diffusion_model: the latent network or a guidance wrapper.
            start_image: an *image* to encode and partially noise (SDEdit in latent space).
            decode: decode the final latents (and intermediates) to images (cropped to ``autoencoder_latent_shape``
                first if set).
            seg: a label map for SPADE networks: given to the diffusion network if it is a SPADE network and to
                the decoder if it is a SPADE autoencoder (MONAI's rule).
            **kwargs: every other option of :meth:`DiffusionInferer.sample` (``cfg``, ``intermediate_steps``, ...).
        """
        start_latent = None if start_image is None else self.encode(autoencoder_model, start_image)
        out = super().sample(
            input_noise,
            diffusion_model,
            scheduler,
            conditioning,
            mode,
            start_image=start_latent,
            seg=seg if is_spade(diffusion_model) else None,
            **kwargs,
        )
        if not decode:
            return out
        with torch.set_grad_enabled(bool(kwargs.get("enable_grad", False))):
            if isinstance(out, tuple):
                latents, intermediates = out
                return self.decode(autoencoder_model, latents, seg), [
                    self.decode(autoencoder_model, z, seg) for z in intermediates
                ]
            return self.decode(autoencoder_model, out, seg)

    def get_likelihood(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        """Refused: a DDPM bound on latents, with a decoder discretised like 8-bit images, is not a likelihood of the
        image (MONAI's ``LatentDiffusionInferer.get_likelihood`` computes it anyway).

        Raises:
            NotImplementedError: always, naming the pixel-space alternative.
        """
        raise NotImplementedError(
            "LatentDiffusionInferer.get_likelihood is not defined: the bound of a latent diffusion model is on the "
            "latents, not the image; use DiffusionInferer.get_likelihood with a pixel-space model"
        )

    def ddim_invert(  # type: ignore[override]
        self, inputs: torch.Tensor, autoencoder_model: nn.Module, diffusion_model: Callable, **kwargs: Any
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode images to latents, then DDIM-invert the latents (see :meth:`DiffusionInferer.ddim_invert`)."""
        return super().ddim_invert(self.encode(autoencoder_model, inputs), diffusion_model, **kwargs)
