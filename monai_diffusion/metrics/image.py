"""Image-fidelity metrics restricted to a mask (e.g. the brain): PSNR and SSIM per batch item.

Reconstruction and translation results are judged inside the brain only: the background is zero in the data set
(skull-stripped), so whole-image PSNR/SSIM would reward getting the empty background right. MONAI's ``PSNRMetric``
and ``SSIMMetric`` average over the whole image; here the squared error and the SSIM map of MONAI's
``compute_ssim_and_cs`` are averaged over the masked pixels instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.metrics.regression import compute_ssim_and_cs
from monai.utils import ensure_tuple_rep
from torch.nn import functional as F

__all__ = ["masked_psnr", "masked_ssim", "masked_mse"]


def _check_inputs(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate ``(B, C, *spatial)`` images and a mask that broadcasts over channels; return float tensors."""
    for name, value in (("pred", pred), ("target", target), ("mask", mask)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if pred.ndim not in (4, 5):
        raise ValueError(f"pred must be (B, C, H, W) or (B, C, H, W, D), got shape {tuple(pred.shape)}.")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    if mask.ndim != pred.ndim or mask.shape[0] != pred.shape[0] or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(
            f"mask must have shape (B, 1 or C, *spatial) matching pred {tuple(pred.shape)}, got {tuple(mask.shape)}."
        )
    if mask.shape[1] not in (1, pred.shape[1]):
        raise ValueError(f"mask must have 1 or {pred.shape[1]} channels, got {mask.shape[1]}.")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}.")
    mask = (mask > 0).expand_as(pred)
    empty = (mask.flatten(1).sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask is empty for batch item(s) {empty}; a masked metric is undefined there.")
    return pred.float(), target.float(), mask


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels (and all channels) of each batch item.

    Args:
        pred: ``(B, C, *spatial)`` images (2D or 3D).
        target: reference images of the same shape.
        mask: ``(B, 1 or C, *spatial)``; nonzero marks the pixels to evaluate (a 1-channel mask applies to every
            channel).

    Returns:
        ``(B,)`` float32 tensor.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes or an empty mask.
    """
    pred, target, m = _check_inputs(pred, target, mask, 1.0)
    err = torch.where(m, (pred - target) ** 2, torch.zeros_like(pred))
    return err.flatten(1).sum(1) / m.flatten(1).sum(1)


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio inside a mask, per batch item: ``10 log10(data_range^2 / MSE_mask)``.

    With an all-ones mask this equals MONAI's ``PSNRMetric(max_val=data_range, reduction="none")`` (averaged over
    channels before the logarithm). Identical images inside the mask give ``inf``.

    Args:
        pred: ``(B, C, *spatial)`` images (2D or 3D).
        target: reference images of the same shape.
        mask: ``(B, 1 or C, *spatial)``; nonzero marks the pixels to evaluate.
        data_range: the intensity range (e.g. 1.0 for [0, 1] images, 2.0 for [-1, 1]).

    Returns:
        ``(B,)`` float32 tensor in dB.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes, an empty mask or a non-positive ``data_range``.
    """
    _check_inputs(pred, target, mask, data_range)
    mse = masked_mse(pred, target, mask)
    return 10.0 * torch.log10(float(data_range) ** 2 / mse)


def masked_ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    data_range: float,
    win_size: int = 11,
    kernel_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al., IEEE TIP 13:600-612, 2004, Eq. 13) averaged over a mask, per batch item.

    The SSIM map is MONAI's ``compute_ssim_and_cs`` with a Gaussian window (``win_size``, ``kernel_sigma``). That
    map only covers the pixels whose window fits in the image, so both images are first padded by reflection by
    half a window: every pixel gets an SSIM value centred on it and every masked pixel counts. Pixels whose window
    lies inside the image have exactly MONAI's value; so for a mask that leaves out a ``win_size // 2`` border,
    the result equals ``SSIMMetric(spatial_dims, data_range, win_size=win_size)`` of the unpadded images.
    Channels are averaged.

    Args:
        pred: ``(B, C, *spatial)`` images (2D or 3D), each side at least ``win_size // 2 + 1`` pixels.
        target: reference images of the same shape.
        mask: ``(B, 1 or C, *spatial)``; nonzero marks the pixels to evaluate.
        data_range: the intensity range (e.g. 1.0 for [0, 1] images, 2.0 for [-1, 1]).
        win_size: odd side of the Gaussian window.
        kernel_sigma: standard deviation of the Gaussian window in pixels.
        k1: luminance stability constant.
        k2: contrast stability constant.

    Returns:
        ``(B,)`` float32 tensor; 1 for identical images.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes, an empty mask, a bad ``data_range`` or ``win_size``, or images smaller
            than the window.
    """
    pred, target, m = _check_inputs(pred, target, mask, data_range)
    if isinstance(win_size, bool) or not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"win_size must be a positive odd integer, got {win_size!r}.")
    half = win_size // 2
    if min(pred.shape[2:]) <= half:
        raise ValueError(f"every spatial side must exceed win_size // 2 = {half}, got {tuple(pred.shape[2:])}.")
    spatial_dims = pred.ndim - 2
    pad: Sequence[int] = (half,) * (2 * spatial_dims)
    pred_p = F.pad(pred, tuple(pad), mode="reflect") if half else pred
    target_p = F.pad(target, tuple(pad), mode="reflect") if half else target
    ssim_map, _ = compute_ssim_and_cs(
        pred_p,
        target_p,
        spatial_dims=spatial_dims,
        kernel_size=ensure_tuple_rep(win_size, spatial_dims),
        kernel_sigma=ensure_tuple_rep(float(kernel_sigma), spatial_dims),
        data_range=float(data_range),
        kernel_type="gaussian",
        k1=k1,
        k2=k2,
    )
    values = torch.where(m, ssim_map, torch.zeros_like(ssim_map))
    return values.flatten(1).sum(1) / m.flatten(1).sum(1)
