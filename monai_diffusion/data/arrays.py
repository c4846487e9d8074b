"""In-memory access to the embedded data: tensors for tests, benchmarks and quick experiments.

:func:`synthetic_batch` renders subjects straight to a tensor without touching the disk; :func:`load_arrays` stacks
the images of a prepared datalist section. Both return float32 tensors, batch-first and channel-first, in the
data set's intensity scale ([0, 1] per subject and contrast, see ``docs/data.md``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from monai_diffusion.data.mri_physics import CONTRASTS
from monai_diffusion.data.simulate import make_grid, simulate_subject, subject_seed

__all__ = ["synthetic_batch", "load_arrays"]


def _central_slice(label: np.ndarray, position: float = 0.55) -> int:
    """Axial index at ``position`` (0 bottom, 1 top) of the range of slices holding brain."""
    brain_z = np.flatnonzero(label.reshape(-1, label.shape[2]).any(0))
    if not len(brain_z):
        return label.shape[2] // 2
    return int(brain_z[int(round(position * (len(brain_z) - 1)))])


def synthetic_batch(
    batch: int,
    dim: int = 2,
    size: int = 32,
    contrasts: Sequence[str] | str = "t1w",
    seed: int = 0,
    lesions: bool = False,
    with_masks: bool = False,
) -> torch.Tensor | dict[str, torch.Tensor]:
    """Render ``batch`` synthetic subjects (subject ``i`` uses ``subject_seed(seed, i)``) directly to a tensor.

    2D returns one axial slice per subject, a little above mid-brain (through the lateral ventricles).

    Args:
        batch: number of subjects (>= 1).
        dim: 2 or 3.
        size: voxels per side (>= 8).
        contrasts: one contrast name, or several (stacked as channels in that order).
        seed: data-set seed.
        lesions: insert each subject's synthetic lesions.
        with_masks: return a dict with ``"image"``, ``"label"`` (tissue labels) and ``"lesion"`` instead.

    Returns:
        ``(batch, n_contrasts, size, size[, size])`` float32 tensor, or the dict described above (masks as
        ``(batch, 1, ...)`` int64 tensors).

    Raises:
        ValueError: on a bad argument.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}.")
    names = [contrasts] if isinstance(contrasts, str) else list(contrasts)
    unknown = [c for c in names if c not in CONTRASTS]
    if unknown or not names:
        raise ValueError(f"contrasts must be names from {list(CONTRASTS)}, got {names}.")
    grid = make_grid(dim, size)
    images, labels, masks = [], [], []
    pick: tuple[slice | int, ...]
    for i in range(batch):
        sim = simulate_subject(subject_seed(seed, i), grid, lesions=lesions, contrasts=tuple(dict.fromkeys(names)))
        if dim == 2:
            if lesions and sim["lesion"].any():
                z = int(sim["lesion"].reshape(-1, grid.shape[2]).sum(0).argmax())
            else:
                z = _central_slice(sim["label"])
            pick = (slice(None), slice(None), z)
        else:
            pick = (slice(None),) * 3
        images.append(np.stack([sim[c][pick] for c in names]))
        labels.append(sim["label"][pick][None])
        masks.append(sim["lesion"][pick][None])
    image = torch.from_numpy(np.stack(images)).float()
    if not with_masks:
        return image
    return {
        "image": image,
        "label": torch.from_numpy(np.stack(labels).astype(np.int64)),
        "lesion": torch.from_numpy(np.stack(masks).astype(np.int64)),
    }


def load_arrays(
    datalist_path: str | os.PathLike,
    section: str = "training",
    keys: Sequence[str] = ("t1w",),
    healthy_only: bool = False,
    max_items: int | None = None,
) -> dict[str, torch.Tensor]:
    """Stack the files of one datalist section into tensors (read with nibabel, for speed).

    Args:
        datalist_path: a ``datalist.json`` written by :func:`~monai_diffusion.data.prepare_dataset`.
        section: ``"training"``, ``"validation"`` or ``"test"``.
        keys: item keys to load (contrasts, ``"label"``, ``"lesion"``).
        healthy_only: keep only items of healthy subjects.
        max_items: keep at most this many items (in datalist order).

    Returns:
        ``{key: (N, 1, *spatial) float32 tensor}`` plus ``"healthy"`` (``(N,)`` bool tensor).

    Raises:
        FileNotFoundError: if the datalist is missing.
        ValueError: on an unknown section or key.
    """
    import nibabel as nib

    datalist_path = Path(datalist_path)
    if not datalist_path.is_file():
        raise FileNotFoundError(f"datalist {str(datalist_path)!r} not found; build it with prepare_dataset.")
    datalist = json.loads(datalist_path.read_text())
    if section not in datalist:
        raise ValueError(f"section {section!r} not in {str(datalist_path)!r}; expected training/validation/test.")
    items = [it for it in datalist[section] if it.get("healthy", True) or not healthy_only]
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise ValueError(f"section {section!r} of {str(datalist_path)!r} holds no matching items.")
    missing = [k for k in keys if k not in items[0]]
    if missing:
        raise ValueError(f"keys {missing} are not in the datalist items (have {sorted(items[0])}).")
    root = datalist_path.parent
    out = {
        k: torch.from_numpy(
            np.stack([np.asarray(nib.nifti1.load(str(root / it[k])).dataobj, dtype=np.float32)[None] for it in items])
        )
        for k in keys
    }
    out["healthy"] = torch.tensor([bool(it.get("healthy", True)) for it in items])
    return out
