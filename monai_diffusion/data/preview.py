"""A PNG montage of a prepared data set: one row per subject, columns for each contrast, tissue labels and lesions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from monai_diffusion.data.mri_physics import CONTRASTS

__all__ = ["write_preview", "preview_rows"]

_TITLES = {"t1w": "T1w", "t2w": "T2w", "pd": "PD", "flair": "FLAIR", "label": "tissue labels", "lesion": "lesion mask"}


def _load(root: Path, rel: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.nifti1.load(str(root / rel)).dataobj)


def preview_rows(datalist_path: str | os.PathLike, rows: int = 4) -> list[tuple[str, bool, dict[str, np.ndarray]]]:
    """Pick up to ``rows`` subjects (lesion and healthy in turn) and one axial slice of each.

    Lesion subjects show the slice with the most lesion voxels, healthy ones a slice a little above mid-brain.

    Args:
        datalist_path: a datalist written by :func:`~monai_diffusion.data.prepare_dataset`.
        rows: number of subjects.

    Returns:
        ``[(subject, healthy, {key: 2D array})]`` with keys the contrasts present, ``label`` and ``lesion``.
    """
    datalist_path = Path(datalist_path)
    datalist = json.loads(datalist_path.read_text())
    root = datalist_path.parent
    keys = [c for c in CONTRASTS if c in datalist["config"]["contrasts"]] + ["label", "lesion"]
    by_subject: dict[str, list[dict]] = {}
    for section in ("training", "validation", "test"):
        for item in datalist.get(section, []):
            by_subject.setdefault(item["subject"], []).append(item)
    lesion_ids = sorted(s for s, items in by_subject.items() if not items[0]["healthy"])
    healthy_ids = sorted(s for s, items in by_subject.items() if items[0]["healthy"])
    chosen: list[str] = []
    while len(chosen) < rows and (lesion_ids or healthy_ids):
        for pool in (lesion_ids, healthy_ids):
            if pool and len(chosen) < rows:
                chosen.append(pool.pop(0))
    out = []
    for sid in chosen:
        items = by_subject[sid]
        healthy = bool(items[0]["healthy"])
        if datalist["config"]["dim"] == 2:
            items = sorted(items, key=lambda it: it["slice"])
            pick = items[int(0.6 * (len(items) - 1))] if healthy else max(items, key=lambda it: it["lesion_voxels"])
            out.append((sid, healthy, {k: _load(root, pick[k]) for k in keys}))
        else:
            vols = {k: _load(root, items[0][k]) for k in keys}
            brain_z = np.flatnonzero(vols["label"].reshape(-1, vols["label"].shape[2]).any(0))
            z = (
                int(brain_z[int(0.6 * (len(brain_z) - 1))])
                if healthy
                else int(vols["lesion"].reshape(-1, vols["lesion"].shape[2]).sum(0).argmax())
            )
            out.append((sid, healthy, {k: v[:, :, z] for k, v in vols.items()}))
    return out


def write_preview(datalist_path: str | os.PathLike, out_path: str | os.PathLike, rows: int = 4) -> Path:
    """Write a PNG montage of a prepared data set (matplotlib, Agg backend).

    Args:
        datalist_path: the data set's ``datalist.json``.
        out_path: the PNG to write.
        rows: number of subjects shown.

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ImportError: if matplotlib is not installed (it is a ``dev`` extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError as err:
        raise ImportError(
            "the preview needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'monai_diffusion[dev]')."
        ) from err
    data = preview_rows(datalist_path, rows)
    if not data:
        raise ValueError(f"the datalist {str(datalist_path)!r} holds no items to preview.")
    keys = list(data[0][2])
    label_cmap = ListedColormap(["black", "#4a90d9", "#9b9b9b", "#f2f2f2"])
    fig, axes = plt.subplots(len(data), len(keys), figsize=(1.5 * len(keys), 1.6 * len(data)), squeeze=False)
    for r, (sid, healthy, images) in enumerate(data):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            img = images[key].T  # x to the right, y (anterior) up
            if key == "label":
                ax.imshow(img, cmap=label_cmap, vmin=0, vmax=3, origin="lower", interpolation="nearest")
            elif key == "lesion":
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower", interpolation="nearest")
            else:
                ax.imshow(img, cmap="gray", vmin=0, vmax=1, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_TITLES[key], fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{sid}\n{'healthy' if healthy else 'lesions'}", fontsize=7)
    fig.tight_layout(pad=0.3)
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=72, metadata={"Software": None})
    plt.close(fig)
    return out_path
