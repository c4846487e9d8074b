"""Writing images for people to look at: PNG montages and one NIfTI file per image.

One convention everywhere (sample commands, bundle evaluations, reports): images are channel-first, ``(C, H, W)``
or ``(C, H, W, D)``, tensors or arrays; a montage shows channel 0, the middle slice along the last axis for 3D,
rotated by 90 degrees (``np.rot90``) so that the embedded data's axial slices appear upright, with intensities
clipped to [0, 1] and stored as 8-bit grey. A NIfTI file holds channel 0 as float32 with an identity affine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["display_slice", "write_montage_png", "save_nifti", "save_nifti_images"]


def _channel0(image: Any) -> np.ndarray:
    """Channel 0 of a channel-first tensor or array, as a NumPy array (float16/bfloat16/integer/bool tensors become
    float32; float32 and float64 keep their precision)."""
    first = image[0]
    if hasattr(first, "detach"):  # a torch tensor, without importing torch here
        first = first.detach().cpu()
        if not first.is_floating_point() or first.element_size() < 4:
            first = first.float()
        return first.numpy()
    return np.asarray(first)


def display_slice(image: Any) -> np.ndarray:
    """The 2D view of one channel-first image used in montages.

    Args:
        image: ``(C, H, W)`` or ``(C, H, W, D)`` tensor or array.

    Returns:
        Channel 0 (for 3D its middle slice along the last axis) rotated by 90 degrees.

    Raises:
        ValueError: an image that is neither 2D nor 3D after its channel axis.
    """
    a = _channel0(image)
    if a.ndim == 3:
        a = a[:, :, a.shape[2] // 2]
    if a.ndim != 2:
        raise ValueError(f"expected a channel-first 2D or 3D image, got spatial shape {tuple(a.shape)}")
    return np.rot90(a)


def write_montage_png(rows: Iterable[Iterable[Any]], path: str | os.PathLike, columns: int | None = None) -> Path:
    """Write a grid of images as an 8-bit grey-scale PNG.

    Args:
        rows: one sequence per row of channel-first images (tensors or arrays of one shape) with intensities in
            [0, 1] (clipped); each is shown as :func:`display_slice` shows it.
        path: the PNG file.
        columns: pad every row with black tiles to this many columns (default: no padding; rows must then have the
            same length).

    Returns:
        ``Path(path)``. An empty ``rows`` writes an 8 x 8 black image.
    """
    from PIL import Image

    grid_rows = []
    for row in rows:
        row_tiles = [display_slice(image) for image in row]
        if columns is not None and row_tiles:
            row_tiles += [np.zeros_like(row_tiles[0])] * (columns - len(row_tiles))
        if row_tiles:
            grid_rows.append(np.concatenate(row_tiles, axis=1))
    grid = np.concatenate(grid_rows, axis=0) if grid_rows else np.zeros((8, 8))
    Image.fromarray((np.clip(grid, 0, 1) * 255).astype(np.uint8)).save(str(path))
    return Path(path)


def save_nifti(image: Any, path: str | os.PathLike) -> Path:
    """Write channel 0 of a channel-first image (tensor or array) as float32 NIfTI with an identity affine.

    Returns:
        ``Path(path)``.
    """
    import nibabel as nib

    nib.save(nib.Nifti1Image(_channel0(image).astype(np.float32), np.eye(4)), str(path))
    return Path(path)


def save_nifti_images(images: Any, folder: str | os.PathLike, names: Sequence[str]) -> list[Path]:
    """Write each channel-first image of a batch as its own NIfTI file ``folder/name`` (the folder is created).

    Args:
        images: a batch ``(B, C, *spatial)`` or a sequence of channel-first images.
        folder: the output folder.
        names: one file name per image, e.g. ``"sample_000.nii.gz"``.

    Returns:
        The written paths, in order.

    Raises:
        ValueError: a different number of names and images.
    """
    if len(names) != len(images):
        raise ValueError(f"got {len(images)} images but {len(names)} file names")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return [save_nifti(img, out / name) for img, name in zip(images, names)]
