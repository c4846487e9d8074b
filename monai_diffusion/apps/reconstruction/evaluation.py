"""Evaluation of accelerated MRI reconstruction on fully sampled magnitude images.

For every acceleration R, each image gets its own seeded line mask (the same for every method: mask seeds depend on
the image's position, the base seed and R only) and its undersampled single-coil k-space
(:func:`~monai_diffusion.apps.reconstruction.mri.simulate_kspace`). Every method reconstructs from the same k-space.
Metrics on reconstructions clipped to [0, 1] against the fully sampled image (data range 1): PSNR and SSIM inside the
brain mask, and PSNR inside the lesions (over the images with lesion voxels; the prior was trained on healthy
subjects only). Methods that return a per-pixel standard deviation also get its mean in the brain and its Pearson
correlation with the absolute error there (is the uncertainty map where the errors are?).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_diffusion.utils.image_io import save_nifti_images, write_montage_png

__all__ = ["reconstruction_items", "load_reconstruction_data", "reconstruction_report"]


def reconstruction_items(
    datalist: str | os.PathLike | Sequence[dict],
    section: str,
    contrasts: Sequence[str],
    min_brain_voxels: int = 800,
    limit: int | None = None,
    source: str = "{contrast}_clean",
    contrast: str | None = None,
    lesion_limit: int = 0,
) -> list[dict]:
    """Items ``{"image", "contrast"}`` plus ``brain``/``lesion`` masks where the datalist has them.

    Two kinds of datalist: the embedded data set's (one key per contrast, read through ``source``, e.g. the noiseless
    renderings ``"{contrast}_clean"``; brain mask under ``label``), or a user's whose items hold one fully sampled
    image under ``image`` and optionally its contrast name under ``contrast`` (default: ``contrast``), a brain mask
    under ``label`` and a lesion mask under ``lesion``. ``limit`` keeps at most that many source items, spread evenly.
    ``lesion_limit`` (embedded data) adds that many more slices with lesion voxels (``lesion_voxels > 0``), spread
    evenly over those of the section that ``limit`` did not pick, so that a short evaluation measures inside lesions.

    Raises:
        ValueError: an empty section, or a contrast name that is not in ``contrasts``.
    """
    from monai_diffusion.apps.generation.data import contrast_items

    contrasts = list(contrasts)
    if isinstance(datalist, (str, os.PathLike)):
        from monai_diffusion.data.brain_sim import load_datalist

        raw = load_datalist(datalist, section)
    else:
        raw = list(datalist)
    if not raw:
        raise ValueError(f"the datalist has no items in section {section!r}")
    if all("image" in it for it in raw):
        kept = raw
        if limit is not None and 0 < limit < len(kept):
            step = len(kept) / limit
            kept = [kept[int(i * step)] for i in range(limit)]
        out = []
        for it in kept:
            name = it.get("contrast", contrast if contrast is not None else contrasts[0])
            if isinstance(name, str) and name not in contrasts:
                raise ValueError(f"contrast {name!r} of {it['image']} is not one the prior knows: {contrasts}")
            new = {"image": it["image"], "contrast": contrasts.index(name) if isinstance(name, str) else int(name)}
            out.append(new | {k: it[k] for k in ("lesion", "subject", "slice") if k in it} | _brain(it))
        return out
    items = contrast_items(raw, section, contrasts, min_brain_voxels, limit=limit, source=source)
    if lesion_limit > 0:
        chosen = {(it.get("subject"), it.get("slice")) for it in items}
        extra = [
            it
            for it in raw
            if int(it.get("brain_voxels", min_brain_voxels)) >= min_brain_voxels
            and int(it.get("lesion_voxels", 0)) > 0
            and (it.get("subject"), it.get("slice")) not in chosen
        ]
        if extra:
            items += contrast_items(extra, section, contrasts, min_brain_voxels, limit=lesion_limit, source=source)
    return [
        {k: v for k, v in {**it, "brain": it.get("label")}.items() if k != "label" and v is not None} for it in items
    ]


def _brain(item: Mapping) -> dict:
    return {"brain": item["label"]} if "label" in item else {}


def load_reconstruction_data(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """``image`` ([0, 1]), ``brain`` and ``lesion`` ({0, 1}; the whole image / nothing where an item has no mask)
    and ``contrast`` (ids).

    Raises:
        ValueError: no items, or images of different shapes or with more than one channel.
    """
    from monai.transforms import LoadImage

    if not items:
        raise ValueError("no items to reconstruct")
    load = LoadImage(image_only=True, ensure_channel_first=True)
    images: list[torch.Tensor] = []
    brains: list[torch.Tensor] = []
    lesions: list[torch.Tensor] = []
    for it in items:
        image = torch.as_tensor(load(it["image"]), dtype=torch.float32)
        if image.shape[0] != 1:
            raise ValueError(f"{it['image']}: expected a single-channel magnitude image, got {image.shape[0]} channels")
        if images and image.shape != images[0].shape:
            raise ValueError(
                f"{it['image']} has shape {tuple(image.shape[1:])}, the first image {tuple(images[0].shape[1:])}; "
                "all images must share one size (the prior's)"
            )
        images.append(image)
        brains.append(
            torch.as_tensor(load(it["brain"])) > 0 if "brain" in it else torch.ones_like(image, dtype=torch.bool)
        )
        lesions.append(
            torch.as_tensor(load(it["lesion"])) > 0 if "lesion" in it else torch.zeros_like(image, dtype=torch.bool)
        )
    return {
        "image": torch.stack(images).clamp(0, 1),
        "brain": torch.stack(brains).float(),
        "lesion": torch.stack(lesions).float(),
        "contrast": torch.tensor([int(it["contrast"]) for it in items]),
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def reconstruction_report(
    methods: Mapping[str, Any],
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    accelerations: Sequence[float] = (4.0, 8.0),
    center_fraction: float = 0.08,
    mask_type: str = "gaussian",
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    save_nifti: bool = False,
) -> dict[str, Any]:
    """Run every method at every acceleration, write ``metrics.json`` (``table``/``notes``/``figures``) and a figure,
    print the table.

    Args:
        methods: ``{name: method}``, ``method(kspace, masks, contrast_ids, generator=g) -> (image, std or None)``
            (see :mod:`monai_diffusion.apps.reconstruction.mri`).
        items: from :func:`reconstruction_items`.
        output_dir: where results go.
        accelerations: undersampling factors R (>= 1).
        center_fraction, mask_type: the line masks (see :func:`~.mri.simulate_kspace`).
        batch_size: images per call of a method.
        seed: fixes the masks (the same for every method) and the samplers' randomness.
        progress: progress bars.
        save_nifti: write every reconstruction (and standard deviation map) as NIfTI, [0, 1] units, under
            ``samples/<method>_R<R>_<index>.nii.gz`` (``..._std.nii.gz``).

    Raises:
        ValueError: no methods, or an acceleration below 1.
    """
    from tqdm.auto import tqdm

    from monai_diffusion.apps.generation.pipeline import format_table
    from monai_diffusion.apps.reconstruction.mri import _check_acceleration, simulate_kspace
    from monai_diffusion.metrics import masked_psnr, masked_ssim
    from monai_diffusion.transforms.kspace.masks import acceleration_of

    if not methods:
        raise ValueError("no reconstruction methods given")
    accelerations = [_check_acceleration(r) for r in accelerations]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_reconstruction_data(items)
    image, brain, lesion, contrast = data["image"], data["brain"], data["lesion"], data["contrast"]
    n = image.shape[0]
    has_lesion = lesion.flatten(1).sum(1) > 0
    results: dict[str, Any] = {"accelerations": {}, "figures": [], "images": n, "lesion_images": int(has_lesion.sum())}
    rows = []
    lesion_size = lesion.flatten(1).sum(1)
    order = [int(i) for i in torch.argsort(lesion_size, descending=True)[: min(3, int(has_lesion.sum()))]]
    for i in torch.linspace(0, n - 1, min(6, n)).round().long().tolist():
        if len(order) < min(6, n) and i not in order:
            order.append(int(i))
    pick = torch.tensor(order)
    figure_rows: list[torch.Tensor] = []
    for level, r in enumerate(accelerations):
        seeds = [seed * 100_000 + i for i in range(n)]
        kspace, masks = simulate_kspace(image, r, center_fraction, mask_type, seeds)
        achieved = sum(acceleration_of(m) for m in masks) / n
        entry: dict[str, Any] = {"R": r, "achieved": achieved, "methods": {}}
        examples: dict[str, torch.Tensor] = {"fully sampled": image[pick]}
        for name, method in methods.items():
            g = torch.Generator().manual_seed(seed + 100 + level)
            t0 = time.perf_counter()
            recs, stds = [], []
            for start in tqdm(range(0, n, batch_size), desc=f"{name} R={r:g}", disable=not progress, leave=False):
                sl = slice(start, start + batch_size)
                rec, std = method(kspace[sl], masks[sl], contrast[sl], generator=g)
                recs.append(rec.float().cpu())
                stds.append(None if std is None else std.float().cpu())
            wall = time.perf_counter() - t0
            rec = torch.cat(recs)
            std = None if any(s is None for s in stds) else torch.cat([s for s in stds if s is not None])
            clipped = rec.clamp(0, 1)
            psnr = masked_psnr(clipped, image, brain, data_range=1.0)
            ssim = masked_ssim(clipped, image, brain, data_range=1.0)
            psnr_lesion = (
                float(masked_psnr(clipped[has_lesion], image[has_lesion], lesion[has_lesion], 1.0).mean())
                if has_lesion.any()
                else None
            )
            m: dict[str, Any] = {
                "psnr_brain": float(psnr.mean()),
                "psnr_brain_sd": float(psnr.std()) if n > 1 else 0.0,
                "ssim_brain": float(ssim.mean()),
                "psnr_lesion": psnr_lesion,
                "nfe": getattr(method, "nfe", None),
                "wall_s": wall,
                "s_per_image": wall / n,
            }
            if std is not None:
                inside = brain > 0
                err = (clipped - image).abs()[inside]
                sd = std[inside]
                m["std_brain_mean"] = float(sd.mean())
                m["std_error_correlation"] = float(torch.corrcoef(torch.stack([sd, err]))[0, 1])
            entry["methods"][name] = m
            rows.append(
                [
                    name,
                    f"{r:g}",
                    round(m["psnr_brain"], 2),
                    round(m["ssim_brain"], 4),
                    None if psnr_lesion is None else round(psnr_lesion, 2),
                    m["nfe"],
                    round(wall, 1),
                ]
            )
            if save_nifti:
                names = [f"{_slug(name)}_R{r:g}_{i:04d}" for i in range(n)]
                save_nifti_images(rec, out / "samples", [f"{s}.nii.gz" for s in names])
                if std is not None:
                    save_nifti_images(std, out / "samples", [f"{s}_std.nii.gz" for s in names])
            examples[name] = rec[pick]
            if std is not None:
                examples[f"{name}: std x5"] = 5 * std[pick]
        results["accelerations"][f"{r:g}"] = entry
        figure_rows += list(examples.values())
    fig = write_montage_png(figure_rows, out / "reconstruction_examples.png")
    row_names = ["fully sampled", *[k for k in examples if k != "fully sampled"]]
    results["figures"].append(
        {
            "title": f"R = {', '.join(f'{r:g}' for r in accelerations)} in turn; rows: {', '.join(row_names)} "
            "(test images, the largest lesions first)",
            "path": fig.name,
        }
    )
    columns = ["method", "R", "PSNR dB (brain)", "SSIM (brain)", "PSNR dB (lesions)", "NFE", "wall s"]
    results["table"] = {"columns": columns, "rows": rows}
    achieved_text = ", ".join(f"R {k}: {v['achieved']:.2f}" for k, v in results["accelerations"].items())
    results["notes"] = (
        f"{n} images ({results['lesion_images']} with lesion voxels); single-coil Cartesian k-space simulated from the "
        f"fully sampled image, {mask_type} line masks with centre fraction {center_fraction}, one seeded mask per "
        f"image (achieved {achieved_text}); metrics on [0, 1]-clipped images, PSNR inside lesions over the lesion images."
    )
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(columns, rows))
    print(results["notes"])
    return results
