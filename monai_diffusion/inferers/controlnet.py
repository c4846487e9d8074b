"""ControlNet (Zhang, Rao & Agrawala, 2023, "Adding Conditional Control to Text-to-Image Diffusion Models") as a model.

A ControlNet encodes a control image (a segmentation, an edge map, another contrast) together with ``x_t`` and
returns one residual per skip connection of the diffusion UNet plus one for its middle block (Sec. 3);
the UNet adds them. MONAI 1.6.1 provides the networks (``monai.networks.nets.ControlNet`` and the
``down_block_additional_residuals`` / ``mid_block_additional_residual`` arguments of ``DiffusionModelUNet``) and
inferers that run their own sampling loop. Here the pair is one model, :class:`ControlNetModel`, that the inferers
evaluate like any network: every sampler of the package, every option of :meth:`DiffusionInferer.sample` and every
guidance wrapper (e.g. ``ClassifierFreeGuidance(ControlNetModel(unet, controlnet, control), 3.0, null)``) work
with it. :class:`ControlNetDiffusionInferer` and :class:`ControlNetLatentDiffusionInferer` take MONAI's arguments
(``controlnet``, ``cn_cond``), build that model and call the parent inferer.

The control is given at the resolution the ControlNet expects: its conditioning embedding downsamples by
``2 ** (len(conditioning_embedding_num_channels) - 1)``, so the control's spatial size is that factor times the
spatial size of ``x_t`` (the same size for a one-level embedding; e.g. an image-space control for a latent UNet
whose autoencoder downsamples by the same factor). The latent inferer resizes a control of another size to that
size, as MONAI's latent inferer resizes it to the latent grid (nearest neighbour).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from monai_diffusion.inferers.conditioning import network_inputs
from monai_diffusion.inferers.diffusion import DiffusionInferer
from monai_diffusion.inferers.guidance import GuidedModel
from monai_diffusion.inferers.latent import LatentDiffusionInferer

__all__ = [
    "ControlNetModel",
    "ControlNetDiffusionInferer",
    "ControlNetLatentDiffusionInferer",
    "control_downsampling",
]


def _embedding_convs(controlnet: Any) -> list[nn.modules.conv._ConvNd]:
    embedding = getattr(controlnet, "controlnet_cond_embedding", None)
    if not isinstance(embedding, nn.Module):
        return []
    return [m for m in embedding.modules() if isinstance(m, nn.modules.conv._ConvNd)]


def control_downsampling(controlnet: Any) -> int:
    """The factor by which a ControlNet's conditioning embedding shrinks the control (1 if it has none).

    For MONAI's ``ControlNet`` this is ``2 ** (len(conditioning_embedding_num_channels) - 1)``: the control must
    have ``factor`` times the spatial size of ``x_t``.
    """
    factor = 1
    for conv in _embedding_convs(controlnet):
        factor *= int(conv.stride[0])
    return factor


class ControlNetModel(GuidedModel):
    """A diffusion UNet driven by a ControlNet and a fixed control image, evaluated as one model.

    ``forward(x, t, conditioning)`` computes the ControlNet's residuals from ``(x_in, t, control)``, with ``x_in``
    the network input (``x_t`` with any ``"concat"`` conditioning) and the same ``context=`` / ``class_labels=`` as
    the UNet, and returns ``network(x_in, t, ..., down_block_additional_residuals=...,
    mid_block_additional_residual=...)``: exactly what MONAI's ``ControlNetDiffusionInferer`` evaluates per step.

    A control of batch ``b`` serves inputs of batch ``B`` when ``b`` divides ``B``: it is repeated ``B / b`` times
    along the batch, matching how :class:`ClassifierFreeGuidance` evaluates ``[x, x]`` in one call (batch 1
    broadcasts). The control stays the same in the conditional and the null branch of classifier-free guidance, as
    in MONAI's ``ControlNetDiffusionInferer.sample(cfg=...)``.

    Args:
        network: a MONAI ``DiffusionModelUNet`` (or any network accepting ``down_block_additional_residuals`` and
            ``mid_block_additional_residual``); not a guidance wrapper: wrap this model instead.
        controlnet: a MONAI ``ControlNet`` matching ``network``: ``controlnet(x=..., timesteps=...,
            controlnet_cond=..., conditioning_scale=..., context=..., class_labels=...)`` returning
            ``(down_residuals, mid_residual)``.
        control: the control image (b, C_control, *spatial), at ``control_downsampling(controlnet)`` times the
            spatial size of ``x_t``.
        conditioning_scale: multiplies the residuals (1 as trained, 0 ignores the control).

    Raises:
        TypeError: ``network`` is a guidance wrapper, or ``control`` is not a floating-point tensor.
        ValueError: a control with the wrong number of channels, non-finite values or a non-finite scale; at call
            time, a control whose dimensions, spatial size or batch do not fit ``x_t``.
    """

    control: torch.Tensor

    def __init__(
        self, network: Callable, controlnet: Callable, control: torch.Tensor, conditioning_scale: float = 1.0
    ) -> None:
        super().__init__()
        if isinstance(network, GuidedModel):
            raise TypeError(
                f"network must be a plain UNet that accepts ControlNet residuals, got the wrapper "
                f"{type(network).__name__}: wrap the ControlNetModel instead, e.g. "
                "ClassifierFreeGuidance(ControlNetModel(unet, controlnet, control), ...)"
            )
        if not isinstance(control, torch.Tensor) or not control.is_floating_point():
            kind = control.dtype if isinstance(control, torch.Tensor) else type(control).__name__
            raise TypeError(f"the ControlNet control (cn_cond) must be a floating-point tensor, got {kind}")
        if control.ndim < 3 or control.shape[0] == 0:
            raise ValueError(
                f"the ControlNet control (cn_cond) must be a batch (B, C, *spatial), got shape {tuple(control.shape)}"
            )
        convs = _embedding_convs(controlnet)
        if convs and control.shape[1] != convs[0].in_channels:
            raise ValueError(
                f"the ControlNet control (cn_cond) has {control.shape[1]} channels but the ControlNet's conditioning "
                f"embedding takes {convs[0].in_channels} (conditioning_embedding_in_channels)"
            )
        if not torch.isfinite(control).all():
            raise ValueError("the ControlNet control (cn_cond) holds NaN or infinite values")
        if not math.isfinite(float(conditioning_scale)):
            raise ValueError(f"conditioning_scale must be a finite number, got {conditioning_scale!r}")
        self.network = network  # registered first: the inferers' input checks read the UNet's levels from it
        self.controlnet = controlnet
        self.conditioning_scale = float(conditioning_scale)
        self.register_buffer("control", control, persistent=False)

    def control_for(self, x: torch.Tensor) -> torch.Tensor:
        """The control batched, placed and typed for ``x_t``.

        Raises:
            ValueError: the control's dimensions, spatial size or batch do not fit ``x``.
        """
        control = self.control
        if control.ndim != x.ndim:
            raise ValueError(
                f"the ControlNet control (cn_cond) has {control.ndim - 2} spatial dimensions (shape "
                f"{tuple(control.shape)}) but x_t has {x.ndim - 2} (shape {tuple(x.shape)})"
            )
        factor = control_downsampling(self.controlnet)
        expected = tuple(int(n) * factor for n in x.shape[2:])
        if tuple(control.shape[2:]) != expected:
            detail = f" (the ControlNet's conditioning embedding downsamples by {factor})" if factor > 1 else ""
            raise ValueError(
                f"the ControlNet control (cn_cond) must have spatial size {expected} for x_t of spatial size "
                f"{tuple(x.shape[2:])}{detail}, got {tuple(control.shape[2:])}"
            )
        batch, b = x.shape[0], control.shape[0]
        if b != batch:
            if batch % b:
                raise ValueError(
                    f"the ControlNet control (cn_cond) has batch {b}, which does not divide the batch {batch} of x_t"
                )
            control = (
                control.expand(batch, *control.shape[1:]) if b == 1 else control.repeat(batch // b, *[1] * (x.ndim - 1))
            )
        return control.to(device=x.device, dtype=x.dtype)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        control = self.control_for(x)
        x_in, kwargs = network_inputs(x, conditioning or {})
        down, mid = self.controlnet(
            x=x_in,
            timesteps=timesteps,
            controlnet_cond=control,
            conditioning_scale=self.conditioning_scale,
            context=kwargs.get("context"),
            class_labels=kwargs.get("class_labels"),
        )
        return self.network(
            x_in,
            timesteps=timesteps,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            **kwargs,
        )


def _resize_control(cn_cond: torch.Tensor, controlnet: Callable, latent_spatial: tuple[int, ...]) -> torch.Tensor:
    """Resize a control to ``control_downsampling(controlnet)`` times the latent grid (nearest, as MONAI does)."""
    if not isinstance(cn_cond, torch.Tensor) or cn_cond.ndim != len(latent_spatial) + 2:
        shape = tuple(cn_cond.shape) if isinstance(cn_cond, torch.Tensor) else type(cn_cond).__name__
        raise ValueError(
            f"cn_cond must be a batch (B, C, *spatial) with {len(latent_spatial)} spatial dimensions, got {shape}"
        )
    factor = control_downsampling(controlnet)
    size = tuple(int(n) * factor for n in latent_spatial)
    if tuple(cn_cond.shape[2:]) == size:
        return cn_cond
    return F.interpolate(cn_cond, size=size)


class ControlNetDiffusionInferer(DiffusionInferer):
    """:class:`DiffusionInferer` with MONAI's ControlNet arguments (``controlnet``, ``cn_cond``), in 2D and 3D.

    Each call wraps the UNet in :class:`ControlNetModel` and runs the parent's training forward or sampling loop, so
    every scheduler of the package and every option of :meth:`DiffusionInferer.sample` work, MONAI's ``seg``,
    ``cfg`` and ``cfg_fill_value`` included. The constructor is :class:`DiffusionInferer`'s (MONAI's takes only
    ``scheduler``). To combine ControlNet with other guidance wrappers, wrap :class:`ControlNetModel` and call
    :meth:`DiffusionInferer.sample` directly.
    """

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable,
        controlnet: Callable,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        cn_cond: torch.Tensor,
        condition: Any = None,
        mode: str | None = None,
        seg: torch.Tensor | None = None,
        *,
        output_scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """The training forward in MONAI's argument order (see :meth:`DiffusionInferer.__call__`).

        Args:
            controlnet: MONAI's ``ControlNet`` (its parameters get gradients; freeze the UNet to train it alone).
            cn_cond: the control image, at the spatial size the ControlNet expects for ``inputs`` (see the module
                docs).
            conditioning_scale: multiplies the ControlNet residuals.
            inputs, diffusion_model, noise, timesteps, condition, mode, seg, output_scale, generator: as for
                :meth:`DiffusionInferer.__call__`.
        """
        model = ControlNetModel(diffusion_model, controlnet, cn_cond, conditioning_scale)
        return super().__call__(inputs, model, noise, timesteps, condition, mode, output_scale, generator, seg=seg)

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        diffusion_model: Callable,
        controlnet: Callable,
        cn_cond: torch.Tensor,
        scheduler=None,
        save_intermediates: bool = False,
        intermediate_steps: int | Sequence[int] | None = None,
        conditioning: Any = None,
        mode: str | None = None,
        verbose: bool | None = None,
        seg: torch.Tensor | None = None,
        cfg: float | None = None,
        cfg_fill_value: float = -1.0,
        *,
        conditioning_scale: float = 1.0,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Sample with the ControlNet-driven UNet; the positional order is MONAI's.

        Args:
            controlnet: MONAI's ``ControlNet``.
            cn_cond: the control image (batch 1 or the batch of ``input_noise``), kept in both branches of ``cfg``.
            conditioning_scale: multiplies the ControlNet residuals.
            input_noise, diffusion_model, scheduler, save_intermediates, intermediate_steps, conditioning, mode,
                verbose, seg, cfg, cfg_fill_value: as for :meth:`DiffusionInferer.sample`.
            **kwargs: every other option of :meth:`DiffusionInferer.sample` (``num_inference_steps``, ``generator``,
                ``start_image``, ``strength``, ``callback``, ``step_kwargs``, ...).
        """
        model = ControlNetModel(diffusion_model, controlnet, cn_cond, conditioning_scale)
        return super().sample(
            input_noise,
            model,
            scheduler,
            conditioning,
            mode,
            save_intermediates=save_intermediates,
            intermediate_steps=intermediate_steps,
            verbose=verbose,
            seg=seg,
            cfg=cfg,
            cfg_fill_value=cfg_fill_value,
            **kwargs,
        )

    def ddim_invert(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable,
        controlnet: Callable,
        cn_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """DDIM encoding with the ControlNet-driven UNet (see :meth:`DiffusionInferer.ddim_invert` for ``kwargs``)."""
        model = ControlNetModel(diffusion_model, controlnet, cn_cond, conditioning_scale)
        return super().ddim_invert(inputs, model, **kwargs)


class ControlNetLatentDiffusionInferer(LatentDiffusionInferer):
    """:class:`LatentDiffusionInferer` with MONAI's ControlNet arguments, in 2D and 3D.

    The control is given in image space. When its spatial size is not the one the ControlNet expects for the
    diffusion network's latent grid (``control_downsampling(controlnet)`` times that grid, which is
    ``ldm_latent_shape`` when set) it is resized to it by nearest-neighbour interpolation, as MONAI's
    ``ControlNetLatentDiffusionInferer`` resizes it to the latent grid (identical for MONAI's one-level
    conditioning embedding; an embedding that downsamples by the autoencoder's factor takes the image-space control
    as it is). The constructor is :class:`LatentDiffusionInferer`'s.
    """

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        autoencoder_model: nn.Module,
        diffusion_model: Callable,
        controlnet: Callable,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        cn_cond: torch.Tensor,
        condition: Any = None,
        mode: str | None = None,
        seg: torch.Tensor | None = None,
        *,
        output_scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        conditioning_scale: float = 1.0,
    ) -> torch.Tensor:
        """Encode ``inputs`` and run the training forward on the latents (``noise`` has the latent shape); MONAI's
        argument order (see :meth:`ControlNetDiffusionInferer.__call__`)."""
        control = _resize_control(cn_cond, controlnet, tuple(noise.shape[2:]))
        model = ControlNetModel(diffusion_model, controlnet, control, conditioning_scale)
        return super().__call__(
            inputs, autoencoder_model, model, noise, timesteps, condition, mode, output_scale, generator, seg=seg
        )

    def sample(  # type: ignore[override]
        self,
        input_noise: torch.Tensor,
        autoencoder_model: nn.Module,
        diffusion_model: Callable,
        controlnet: Callable,
        cn_cond: torch.Tensor,
        scheduler=None,
        save_intermediates: bool = False,
        intermediate_steps: int | Sequence[int] | None = None,
        conditioning: Any = None,
        mode: str | None = None,
        verbose: bool | None = None,
        seg: torch.Tensor | None = None,
        cfg: float | None = None,
        cfg_fill_value: float = -1.0,
        *,
        conditioning_scale: float = 1.0,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Sample latents with the ControlNet-driven UNet and decode them; the positional order is MONAI's.

        Args:
            input_noise: latent-shaped noise; ``autoencoder_model``: the first stage.
            cn_cond: the image-space control (resized as described in the class docs).
            save_intermediates, intermediate_steps, conditioning, mode, verbose, seg, cfg, cfg_fill_value,
                conditioning_scale: as for :meth:`ControlNetDiffusionInferer.sample`.
            **kwargs: every other option of :meth:`LatentDiffusionInferer.sample` (``decode``, ``start_image``, ...).
        """
        control = _resize_control(cn_cond, controlnet, tuple(input_noise.shape[2:]))
        model = ControlNetModel(diffusion_model, controlnet, control, conditioning_scale)
        return super().sample(
            input_noise,
            autoencoder_model,
            model,
            scheduler,
            conditioning,
            mode,
            save_intermediates=save_intermediates,
            intermediate_steps=intermediate_steps,
            verbose=verbose,
            seg=seg,
            cfg=cfg,
            cfg_fill_value=cfg_fill_value,
            **kwargs,
        )

    def ddim_invert(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        autoencoder_model: nn.Module,
        diffusion_model: Callable,
        controlnet: Callable,
        cn_cond: torch.Tensor,
        conditioning_scale: float = 1.0,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode images, then DDIM-invert the latents with the ControlNet-driven UNet."""
        latents = self.encode(autoencoder_model, inputs)
        control = _resize_control(cn_cond, controlnet, tuple(latents.shape[2:]))
        model = ControlNetModel(diffusion_model, controlnet, control, conditioning_scale)
        return DiffusionInferer.ddim_invert(self, latents, model, **kwargs)
