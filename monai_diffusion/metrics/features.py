"""A small feature network trained on the embedded data set, for FID/KID-style distances between image sets.

No ImageNet or RadImageNet network can be downloaded here, so ``BrainFeatureNet`` is trained on the training split
of the embedded 2D data set (``docs/data.md``) to tell the four contrasts apart and to regress the fraction of the
image covered by CSF, grey matter and white matter. Its 128-d global-average-pooled features therefore describe
contrast and tissue layout of 64 x 64 axial slices of this simulation; distances computed with them are comparable
only within this project. The model card is ``docs/feature_network.md``.

Inputs are single-channel 2D slices of 64 x 64 pixels scaled to [-1, 1] (the data set's intensity ``x`` in [0, 1]
mapped by ``2 x - 1``). 3D input is refused with a ``ValueError``: the network never saw 3D data, and the 3D data
set has a different voxel size, so features of its axial slices would not be comparable with the training slices.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "CONTRAST_CLASSES",
    "TISSUE_CLASSES",
    "FEATURE_DIM",
    "IMAGE_SIZE",
    "DEFAULT_WEIGHTS",
    "BrainFeatureNet",
    "FeatureNetLoss",
    "FeatureNetPrepareBatch",
    "load_feature_set",
    "load_feature_network",
    "train_feature_network",
    "evaluate_feature_network",
    "extract_features",
    "predict_contrast_and_tissue",
    "tissue_fractions",
]

#: contrast classes, in the order of the network's logits
CONTRAST_CLASSES: tuple[str, ...] = ("t1w", "t2w", "pd", "flair")
#: tissue labels (values 1, 2, 3 of the label map), in the order of the network's fraction outputs
TISSUE_CLASSES: tuple[str, ...] = ("csf", "grey matter", "white matter")
#: length of a feature vector
FEATURE_DIM: int = 128
#: side of the square input slices the network was trained on
IMAGE_SIZE: int = 64
#: the shipped weights (trained by :func:`train_feature_network`, see ``docs/feature_network.md``)
DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parent / "assets" / "brain_features_2d.pt"


class BrainFeatureNet(nn.Module):
    """A small 2D CNN: four conv blocks, global average pooling to a 128-d feature, two heads.

    Each block is ``conv3x3 -> GroupNorm -> SiLU -> conv3x3 (stride 2) -> GroupNorm -> SiLU``; the widths are
    ``channels`` (default 16-32-64-128), so a 64 x 64 slice leaves the last block as 4 x 4 and is averaged to
    ``channels[-1]`` features. Heads: contrast logits (one per entry of :data:`CONTRAST_CLASSES`) and tissue
    fractions (sigmoid outputs, one per entry of :data:`TISSUE_CLASSES`).

    Args:
        channels: output channels of the four blocks.
        num_groups: GroupNorm groups (must divide every entry of ``channels``).
        num_contrasts: number of contrast classes.
        num_tissues: number of tissue fractions.

    Raises:
        ValueError: on empty ``channels`` or a ``num_groups`` that does not divide them.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_groups: int = 8,
        num_contrasts: int = len(CONTRAST_CLASSES),
        num_tissues: int = len(TISSUE_CLASSES),
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or any(c < 1 or c % num_groups for c in channels):
            raise ValueError(f"channels must be positive multiples of num_groups={num_groups}, got {channels}.")
        blocks: list[nn.Module] = []
        cin = 1
        for cout in channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, cout, 3, padding=1),
                    nn.GroupNorm(num_groups, cout),
                    nn.SiLU(),
                    nn.Conv2d(cout, cout, 3, stride=2, padding=1),
                    nn.GroupNorm(num_groups, cout),
                    nn.SiLU(),
                )
            )
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = channels[-1]
        self.contrast_head = nn.Linear(cin, num_contrasts)
        self.tissue_head = nn.Linear(cin, num_tissues)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images in [-1, 1] -> ``(B, feature_dim)`` globally average-pooled features."""
        return self.blocks(x).mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1, H, W)`` images in [-1, 1] -> (contrast logits ``(B, 4)``, tissue fractions ``(B, 3)``)."""
        f = self.features(x)
        return self.contrast_head(f), torch.sigmoid(self.tissue_head(f))


class FeatureNetLoss(nn.Module):
    """Training loss: cross-entropy of the contrast logits plus ``tissue_weight`` x MSE of the tissue fractions.

    Called by MONAI's ``SupervisedTrainer`` as ``loss(network_output, targets)`` with the network's
    ``(logits, fractions)`` and :class:`FeatureNetPrepareBatch`'s ``(contrast, fractions)`` targets.

    Args:
        tissue_weight: weight of the fraction MSE (fractions are small numbers, ~0.02-0.4, so their MSE is ~1e-3
            when poorly fit; the default 100 puts both terms on a similar scale).
    """

    def __init__(self, tissue_weight: float = 100.0) -> None:
        super().__init__()
        self.tissue_weight = float(tissue_weight)

    def forward(
        self, output: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        logits, fractions = output
        contrast, target_fractions = target
        return F.cross_entropy(logits, contrast) + self.tissue_weight * F.mse_loss(fractions, target_fractions)


class FeatureNetPrepareBatch:
    """``prepare_batch`` for MONAI's ``SupervisedTrainer``: augment, scale to [-1, 1], return (image, targets).

    A batch is a dict with ``"image"`` ``(B, 1, H, W)`` in [0, 1], ``"contrast"`` ``(B,)`` class indices and
    ``"fractions"`` ``(B, 3)``. Augmentations (all leave the targets unchanged), drawn from ``generator``: a
    left-right flip with probability 1/2, an intensity scale in ``[1 - jitter, 1 + jitter]`` and a gamma in
    ``[1 - jitter, 1 + jitter]`` per image (background stays 0), then clipping to [0, 1] and ``2 x - 1``.

    Args:
        jitter: half-width of the intensity scale and gamma ranges (0 switches both off).
        flip: use left-right flips.
        generator: CPU generator for the augmentations.
    """

    def __init__(self, jitter: float = 0.1, flip: bool = True, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= jitter < 1.0:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}.")
        self.jitter = float(jitter)
        self.flip = bool(flip)
        self.generator = generator

    def __call__(
        self,
        batchdata: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        x = torch.as_tensor(batchdata["image"]).float()
        b = x.shape[0]
        if self.flip:
            do_flip = torch.rand(b, generator=self.generator) < 0.5
            x = torch.where(do_flip.view(b, 1, 1, 1), x.flip(-2), x)
        if self.jitter > 0:
            scale = 1 + self.jitter * (2 * torch.rand(b, generator=self.generator) - 1)
            gamma = 1 + self.jitter * (2 * torch.rand(b, generator=self.generator) - 1)
            x = (x.clamp_min(0) ** gamma.view(b, 1, 1, 1)) * scale.view(b, 1, 1, 1)
        x = 2 * x.clamp(0, 1) - 1
        contrast = torch.as_tensor(batchdata["contrast"]).long()
        fractions = torch.as_tensor(batchdata["fractions"]).float()
        to = {"device": device, "non_blocking": non_blocking, **kwargs}
        return x.to(**to), (contrast.to(**to), fractions.to(**to))


def tissue_fractions(label: torch.Tensor) -> torch.Tensor:
    """Fractions of the pixels of each image labelled CSF (1), grey matter (2) and white matter (3).

    Args:
        label: ``(B, 1, *spatial)`` integer label maps.

    Returns:
        ``(B, 3)`` float32 fractions of all pixels of the image (not of the brain).
    """
    flat = torch.as_tensor(label).reshape(label.shape[0], -1)
    return torch.stack([(flat == k).float().mean(1) for k in (1, 2, 3)], dim=1)


def load_feature_set(
    data_dir: str | os.PathLike, section: str = "training", min_brain_voxels: int = 800, max_items: int | None = None
) -> dict[str, torch.Tensor]:
    """Every contrast of the items of one datalist section as a labelled image set.

    Args:
        data_dir: folder holding ``datalist.json`` of a 2D data set (``prepare_dataset(..., dim=2, size=64)``).
        section: ``"training"``, ``"validation"`` or ``"test"``.
        min_brain_voxels: keep items with at least this many brain pixels (the generation bundle's filter).
        max_items: keep at most this many items (in datalist order) before expanding to contrasts.

    Returns:
        ``{"image": (N, 1, 64, 64) in [0, 1], "contrast": (N,) int64, "fractions": (N, 3)}`` with
        ``N = 4 x items``, the contrasts of an item consecutive in :data:`CONTRAST_CLASSES` order.

    Raises:
        FileNotFoundError: if ``data_dir/datalist.json`` is missing.
        ValueError: on an unknown section, a 3D data set or no matching items.
    """
    import nibabel as nib

    path = Path(data_dir) / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} not found; build it with monai_diffusion.data.prepare_dataset.")
    datalist = json.loads(path.read_text())
    if section not in ("training", "validation", "test") or section not in datalist:
        raise ValueError(f"section must be 'training', 'validation' or 'test' (in {str(path)!r}), got {section!r}.")
    items = [it for it in datalist[section] if int(it.get("brain_voxels", 0)) >= min_brain_voxels]
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise ValueError(f"section {section!r} of {str(path)!r} has no item with >= {min_brain_voxels} brain voxels.")

    def read(name: str) -> np.ndarray:
        return np.asarray(nib.nifti1.load(str(path.parent / name)).dataobj)

    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for it in items:
        label = read(it["label"])
        if label.shape != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected {IMAGE_SIZE} x {IMAGE_SIZE} 2D slices, got shape {label.shape} in {path}.")
        labels.append(label)
        images.extend(read(it[c]).astype(np.float32) for c in CONTRAST_CLASSES)
    fractions = tissue_fractions(torch.from_numpy(np.stack(labels).astype(np.int64))[:, None])
    n = len(CONTRAST_CLASSES)
    return {
        "image": torch.from_numpy(np.stack(images))[:, None],
        "contrast": torch.arange(n).repeat(len(items)),
        "fractions": fractions.repeat_interleave(n, dim=0),
    }


def _check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}.")
    if images.ndim == 5:
        raise ValueError(
            f"{name} is 3D {tuple(images.shape)}; the feature network is 2D (64 x 64 axial slices of the 2D data set) "
            "and 3D volumes have another voxel size, so their slices would not give comparable features."
        )
    if images.ndim != 4 or images.shape[1] != 1 or tuple(images.shape[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"{name} must have shape (N, 1, {IMAGE_SIZE}, {IMAGE_SIZE}) (single-channel slices in [-1, 1]), "
            f"got {tuple(images.shape)}."
        )
    return images.as_subclass(torch.Tensor)  # a plain tensor (MONAI MetaTensors carry metadata we do not need)


def load_feature_network(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> BrainFeatureNet:
    """The trained :class:`BrainFeatureNet` in eval mode (shipped weights by default).

    Args:
        path: a state dict saved by :func:`train_feature_network`; ``None`` uses :data:`DEFAULT_WEIGHTS`.
        device: where to put the network.

    Raises:
        FileNotFoundError: if the weights file is missing.
    """
    path = Path(DEFAULT_WEIGHTS if path is None else path)
    if not path.is_file():
        raise FileNotFoundError(f"feature-network weights {str(path)!r} not found.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    network = BrainFeatureNet()
    network.load_state_dict(state)
    return network.to(device).eval()


def _batched(network: nn.Module, images: torch.Tensor, batch_size: int, fn) -> list:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                out.append(fn(images[start : start + batch_size].to(device=device, dtype=torch.float32)))
    finally:
        network.train(was_training)
    return out


def extract_features(
    images: torch.Tensor, network: BrainFeatureNet | None = None, batch_size: int = 64
) -> torch.Tensor:
    """``(N, 128)`` features of single-channel 64 x 64 slices in [-1, 1] (eval mode, no gradients).

    Args:
        images: ``(N, 1, 64, 64)`` tensor, intensities in [-1, 1].
        network: a :class:`BrainFeatureNet`; ``None`` loads the shipped one.
        batch_size: images per forward pass.

    Returns:
        ``(N, 128)`` float32 features on the CPU.

    Raises:
        TypeError: if ``images`` is not a tensor.
        ValueError: on 3D input, a wrong shape or a bad ``batch_size``.
    """
    images = _check_images(images)
    network = load_feature_network() if network is None else network
    parts = _batched(network, images, batch_size, lambda x: network.features(x).float().cpu())
    return torch.cat(parts) if parts else torch.zeros(0, network.feature_dim)


def predict_contrast_and_tissue(
    images: torch.Tensor, network: BrainFeatureNet | None = None, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrast probabilities and tissue fractions predicted for single-channel 64 x 64 slices in [-1, 1].

    Args:
        images: ``(N, 1, 64, 64)`` tensor, intensities in [-1, 1].
        network: a :class:`BrainFeatureNet`; ``None`` loads the shipped one.
        batch_size: images per forward pass.

    Returns:
        ``(N, 4)`` softmax probabilities over :data:`CONTRAST_CLASSES` and ``(N, 3)`` fractions of the image's
        pixels that are CSF, grey matter and white matter.

    Raises:
        TypeError: if ``images`` is not a tensor.
        ValueError: on 3D input, a wrong shape or a bad ``batch_size``.
    """
    images = _check_images(images)
    network = load_feature_network() if network is None else network
    parts = _batched(network, images, batch_size, lambda x: tuple(t.float().cpu() for t in network(x)))
    if not parts:
        return torch.zeros(0, len(CONTRAST_CLASSES)), torch.zeros(0, len(TISSUE_CLASSES))
    logits = torch.cat([p[0] for p in parts])
    return logits.softmax(dim=1), torch.cat([p[1] for p in parts])


def evaluate_feature_network(network: BrainFeatureNet, data: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Contrast accuracy (overall and per contrast) and tissue-fraction mean absolute error on a labelled set.

    Args:
        network: the network to evaluate.
        data: a labelled set as returned by :func:`load_feature_set` (images in [0, 1]).

    Returns:
        ``{"contrast_accuracy", "accuracy_per_contrast", "tissue_mae", "tissue_mae_per_class", "images"}``.
    """
    probs, fractions = predict_contrast_and_tissue(2 * data["image"] - 1, network)
    correct = (probs.argmax(1) == data["contrast"]).float()
    err = (fractions - data["fractions"]).abs()
    return {
        "contrast_accuracy": correct.mean().item(),
        "accuracy_per_contrast": {
            c: correct[data["contrast"] == i].mean().item() for i, c in enumerate(CONTRAST_CLASSES)
        },
        "tissue_mae": err.mean().item(),
        "tissue_mae_per_class": {t: err[:, i].mean().item() for i, t in enumerate(TISSUE_CLASSES)},
        "images": int(correct.numel()),
    }


def train_feature_network(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    iterations: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    tissue_weight: float = 100.0,
    jitter: float = 0.1,
    min_brain_voxels: int = 800,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Train :class:`BrainFeatureNet` on the training split with MONAI's ``SupervisedTrainer`` and save its weights.

    The trainer runs ``iterations`` Adam steps (one epoch of length ``iterations`` over a reshuffling loader) with
    a cosine learning-rate decay (``monai.handlers.LrScheduleHandler``) and :class:`FeatureNetLoss`; batches are
    augmented by :class:`FeatureNetPrepareBatch`. Afterwards the network is evaluated on the validation split with
    :func:`evaluate_feature_network`.

    Args:
        data_dir: folder holding ``datalist.json`` of the 2D 64 x 64 data set.
        out_path: where to save the state dict (float32).
        iterations: optimiser steps.
        batch_size: images per step.
        lr: peak Adam learning rate.
        tissue_weight: weight of the tissue-fraction MSE in the loss.
        jitter: intensity-augmentation strength (see :class:`FeatureNetPrepareBatch`).
        min_brain_voxels: keep items with at least this many brain pixels.
        seed: seeds initialisation (without touching the global RNG), shuffling and augmentation.
        device: training device.
        progress: show a progress bar.

    Returns:
        The validation metrics of :func:`evaluate_feature_network` plus ``"iterations"``, ``"batch_size"``,
        ``"train_images"``, ``"train_seconds"``, ``"final_loss"`` and ``"weights"`` (the saved path).

    Raises:
        ValueError: on a bad ``iterations`` or ``batch_size``.
    """
    from monai.data import DataLoader, Dataset
    from monai.engines import SupervisedTrainer
    from monai.handlers import LrScheduleHandler

    for name, value in (("iterations", iterations), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    train = load_feature_set(data_dir, "training", min_brain_voxels)
    items = [
        {"image": train["image"][i], "contrast": train["contrast"][i], "fractions": train["fractions"][i]}
        for i in range(train["image"].shape[0])
    ]
    loader = DataLoader(
        Dataset(items),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = BrainFeatureNet().to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations, eta_min=lr * 0.01)
    # MONAI's hint names the pre-2.0 scheduler base class; any torch scheduler works
    handlers: list = [LrScheduleHandler(schedule, print_lr=False, epoch_level=False)]  # type: ignore[arg-type]
    if progress:
        try:
            from ignite.handlers import ProgressBar
        except ImportError:  # pytorch-ignite < 0.5
            from ignite.contrib.handlers import ProgressBar

        handlers.append(ProgressBar(persist=True))
    trainer = SupervisedTrainer(
        device=torch.device(device),
        max_epochs=1,
        epoch_length=iterations,
        train_data_loader=loader,
        network=network,
        optimizer=optimizer,
        loss_function=FeatureNetLoss(tissue_weight),
        prepare_batch=FeatureNetPrepareBatch(jitter, generator=torch.Generator().manual_seed(seed + 1)),
        train_handlers=handlers,
        decollate=False,
    )
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().float() for k, v in network.state_dict().items()}, out_path)
    metrics = evaluate_feature_network(network.eval(), load_feature_set(data_dir, "validation", min_brain_voxels))
    output = trainer.state.output
    final_loss = float(output["loss"].detach()) if isinstance(output, dict) and "loss" in output else math.nan
    metrics.update(
        iterations=iterations,
        batch_size=batch_size,
        train_images=len(items),
        train_seconds=seconds,
        final_loss=final_loss,
        weights=str(out_path),
    )
    return metrics
