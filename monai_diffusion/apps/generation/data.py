"""Data for contrast-conditional brain MRI generation: one item per (slice or volume, contrast).

The embedded data set stores every contrast of a slice in one datalist item (``t1w``, ``t2w``, ``pd``, ``flair``
paths plus ``label``); a generator conditioned on the contrast needs one item per image with its contrast id.
:func:`contrast_items` makes that list from any datalist of the same format, so a user's own NIfTI/DICOM datalist
goes through the same path. Intensities keep the data set's own per-subject scale ([0, 1], see ``docs/data.md``)
and are mapped to [-1, 1] with one fixed affine map (no per-image rescaling, which turns near-empty edge slices
into bright blobs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityRanged

__all__ = ["GENERATION_CONTRASTS", "contrast_items", "generation_transforms", "embedded_datalist"]

GENERATION_CONTRASTS: tuple[str, ...] = ("t1w", "t2w", "pd", "flair")


def embedded_datalist(
    dataset_dir: str | os.PathLike, dim: int = 2, size: int | None = None, subjects: int | None = None, seed: int = 0
) -> str:
    """Path of the embedded data set's datalist, building the data first if it is missing (no download).

    Args:
        dataset_dir: folder holding prepared data sets (a ``brainsim_{dim}d_{size}px_seed{seed}`` sub-folder is used).
        dim, size, subjects, seed: as for :class:`monai_diffusion.data.BrainSimDataset`.
    """
    from monai_diffusion.data.brain_sim import DEFAULT_SIZE, prepare_dataset

    size = DEFAULT_SIZE[dim] if size is None else int(size)
    out = Path(dataset_dir) / f"brainsim_{dim}d_{size}px_seed{seed}"
    return str(prepare_dataset(out, dim, size, subjects, seed, progress=True))


def contrast_items(
    datalist: str | os.PathLike | Sequence[dict],
    section: str = "training",
    contrasts: Sequence[str] = GENERATION_CONTRASTS,
    min_brain_voxels: int = 0,
    healthy_only: bool = False,
    limit: int | None = None,
    source: str = "{contrast}",
) -> list[dict]:
    """One item per (datalist item, contrast): ``{"image": path, "contrast": id, ...}``.

    Args:
        datalist: a datalist JSON path (MONAI decathlon format, paths relative to the file) or its loaded items.
        section: section of the JSON to read.
        contrasts: the contrast keys, in class-id order (id ``i`` is ``contrasts[i]``).
        min_brain_voxels: drop items whose ``brain_voxels`` entry is below this (near-empty edge slices); items
            without the entry are kept.
        healthy_only: keep only items with ``healthy`` true (items without the entry are kept).
        limit: keep at most this many source items (spread evenly over the list), e.g. for quick runs.
        source: the datalist key of a contrast's image, a format string of ``contrast``; for example
            ``"{contrast}_clean"`` reads the embedded set's noiseless renderings.

    Returns:
        Items with ``image`` (path), ``contrast`` (int id) and, where present, ``label``, ``lesion``, ``healthy``,
        ``subject`` and ``slice``.

    Raises:
        ValueError: no contrasts, an item without one of the contrast keys, or nothing left after filtering.
    """
    contrasts = list(contrasts)
    if not contrasts:
        raise ValueError("contrast_items needs at least one contrast key")
    if isinstance(datalist, (str, os.PathLike)):
        from monai_diffusion.data.brain_sim import load_datalist

        items = load_datalist(datalist, section)
    else:
        items = list(datalist)
    kept = [
        it
        for it in items
        if int(it.get("brain_voxels", min_brain_voxels)) >= min_brain_voxels
        and (not healthy_only or bool(it.get("healthy", True)))
    ]
    if limit is not None and 0 < limit < len(kept):
        step = len(kept) / limit
        kept = [kept[int(i * step)] for i in range(limit)]
    out = []
    for it in kept:
        missing = [source.format(contrast=c) for c in contrasts if source.format(contrast=c) not in it]
        if missing:
            raise ValueError(
                f"datalist item has no key(s) {missing} for the contrasts {contrasts}; item keys: {sorted(it)}"
            )
        for cid, c in enumerate(contrasts):
            new = {"image": it[source.format(contrast=c)], "contrast": cid}
            for key in ("label", "lesion", "healthy", "subject", "slice"):
                if key in it:
                    new[key] = it[key]
            out.append(new)
    if not out:
        raise ValueError(f"no items left in section {section!r} after filtering (min_brain_voxels={min_brain_voxels})")
    return out


def generation_transforms(keys: Sequence[str] = ("image",), with_label: bool = False) -> Compose:
    """Load (NIfTI/DICOM through MONAI's ``LoadImaged``), channel first, map [0, 1] to [-1, 1], float tensors."""
    keys = list(keys)
    load_keys = [*keys, "label"] if with_label else keys
    return Compose(
        [
            LoadImaged(keys=load_keys, image_only=True),
            EnsureChannelFirstd(keys=load_keys),
            ScaleIntensityRanged(keys=keys, a_min=0.0, a_max=1.0, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=load_keys, track_meta=False),
        ]
    )
