"""``prepare_batch`` for diffusion training with MONAI's ``SupervisedTrainer``.

MONAI's ``DiffusionPrepareBatch`` returns the noise as target (epsilon only), draws noise and timesteps from the
global RNG and supports one condition through cross-attention. This one builds the target for the scheduler's
prediction type from its forward-process coefficients (any of our forward processes, or MONAI's tables), takes
any mix of conditioning keys, draws from an optional generator, can encode images to latents first (latent
diffusion) and applies a loss weighting such as Min-SNR through a per-sample scale: the trainer's MSE between
``sqrt(w) * prediction`` and ``sqrt(w) * target`` equals the weighted loss ``w * (prediction - target)^2``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.engines import PrepareBatch

from monai_diffusion.networks.schedulers.process import marginal_coefficients, prediction_type_of

__all__ = ["DiffusionPrepareBatch", "PairPrepareBatch"]


def _check_not_empty(images: torch.Tensor, key: str) -> None:
    """Refuse a batch without items before a network fails on it deep inside (e.g. in a normalisation layer)."""
    if images.ndim == 0 or images.shape[0] == 0:
        raise ValueError(
            f"empty batch: {key!r} has shape {tuple(images.shape)}; expected batch-first data with B >= 1 (the data "
            "loader yielded a batch without items: check the data set and any collate function or filter)"
        )


class DiffusionPrepareBatch(PrepareBatch):
    """Turn a batch dict into ``(x0, target, (), {"noise", "timesteps", "condition", "output_scale"})``.

    Use with :class:`monai_diffusion.inferers.DiffusionInferer` as the trainer's inferer and an MSE loss.

    Args:
        scheduler: the forward process (``add_noise`` is called by the inferer; this reads coefficients and
            ``prediction_type``).
        image_key: batch key of the images to diffuse.
        condition: ``None``; a batch key (used with the inferer's ``condition_mode``); or a mapping from
            conditioning key (``"concat"``, ``"crossattn"``, ``"class_label"``) to batch key, e.g.
            ``{"class_label": "healthy"}``. Class labels are cast to ``long``.
        encoder: optional callable images -> latents (e.g. ``functools.partial(latent_inferer.encode, autoencoder)``);
            noise and target are then made in latent space. Concatenated images are not encoded.
        loss_weighting: optional callable ``(alpha, sigma) -> (B,)`` weights, e.g.
            :class:`monai_diffusion.losses.MinSNRWeighting`.
        continuous_timesteps: draw real-valued timesteps in ``[0, T-1]`` instead of integers.
        generator: CPU generator for noise and timesteps (moved to the device afterwards).

    Raises:
        ValueError: at call time, missing batch keys or an empty batch.
    """

    def __init__(
        self,
        scheduler,
        image_key: str = "image",
        condition: str | Mapping[str, str] | None = None,
        encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        loss_weighting: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        continuous_timesteps: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.image_key = image_key
        self.condition = condition
        self.encoder = encoder
        self.loss_weighting = loss_weighting
        self.continuous_timesteps = bool(continuous_timesteps)
        self.generator = generator

    def get_timesteps(self, batch: int) -> torch.Tensor:
        """Uniform training timesteps in ``[0, num_train_timesteps - 1]``, shape (B,)."""
        num = int(self.scheduler.num_train_timesteps)
        if self.continuous_timesteps:
            return torch.rand(batch, generator=self.generator, dtype=torch.float64).mul(num - 1).float()
        return torch.randint(0, num, (batch,), generator=self.generator)

    def _get(self, batchdata: Mapping[str, Any], key: str) -> torch.Tensor:
        if key not in batchdata:
            raise ValueError(f"batch has no key {key!r}; keys are {sorted(batchdata)}")
        return torch.as_tensor(batchdata[key])

    def _conditioning(self, batchdata: Mapping[str, Any], device) -> Any:
        if self.condition is None:
            return None
        if isinstance(self.condition, str):
            return self._get(batchdata, self.condition).to(device)
        out = {}
        for cond_key, batch_key in self.condition.items():
            value = self._get(batchdata, batch_key).to(device)
            if cond_key in ("class_label", "classifier_label"):
                value = value.reshape(value.shape[0], -1)[:, 0].long()
            else:
                value = value.float()
            out[cond_key] = value
        return out

    def __call__(
        self,
        batchdata: Mapping[str, Any] | Sequence,
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple, dict]:
        if isinstance(batchdata, Mapping):
            images = self._get(batchdata, self.image_key)
        else:
            images = torch.as_tensor(batchdata[0])
        _check_not_empty(images, self.image_key)
        images = images.to(device=device, non_blocking=non_blocking).float()
        if self.encoder is not None:
            with torch.no_grad():
                images = self.encoder(images)
        batch = images.shape[0]
        noise = torch.randn(images.shape, generator=self.generator, dtype=images.dtype).to(images.device)
        timesteps = self.get_timesteps(batch).to(images.device)
        alpha, sigma = marginal_coefficients(self.scheduler, timesteps)
        target = prediction_type_of(self.scheduler).from_x0_eps(images, noise, alpha, sigma)
        infer_kwargs: dict[str, Any] = {"noise": noise, "timesteps": timesteps}
        if isinstance(batchdata, Mapping):
            cond = self._conditioning(batchdata, images.device)
            if cond is not None:
                infer_kwargs["condition"] = cond
        if self.loss_weighting is not None:
            weights = torch.as_tensor(self.loss_weighting(alpha, sigma), dtype=torch.float64).reshape(-1)
            if weights.shape != (batch,) or (weights < 0).any():
                raise ValueError(f"loss weights must be non-negative with shape ({batch},), got {tuple(weights.shape)}")
            scale = weights.sqrt().to(device=images.device, dtype=images.dtype)
            target = target * scale.reshape(-1, *([1] * (images.ndim - 1)))
            infer_kwargs["output_scale"] = scale
        return images, target, (), infer_kwargs


class PairPrepareBatch(PrepareBatch):
    """``(input, target)`` from two keys of a dict batch, for supervised image-to-image training (for example a
    noisy image and its clean target, or an image and itself for an autoencoder).

    Args:
        input_key: key of the network input.
        target_key: key of the target (may equal ``input_key``).
    """

    def __init__(self, input_key: str = "image", target_key: str = "target") -> None:
        self.input_key = input_key
        self.target_key = target_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [k for k in (self.input_key, self.target_key) if k not in batchdata]
        if missing:
            raise KeyError(f"batch has no key(s) {missing}; it has {sorted(batchdata)}")
        pair = [torch.as_tensor(batchdata[k]) for k in (self.input_key, self.target_key)]
        _check_not_empty(pair[0], self.input_key)
        return tuple(x.to(device=device, non_blocking=non_blocking).float() for x in pair)  # type: ignore[return-value]
