"""Evaluation of super-resolution methods against the embedded set's noiseless renderings.

For every factor ``f`` each noiseless test image (``<contrast>_clean``, [0, 1]) is degraded by the operator,
``y = avgpool_f(x)`` (optionally plus seeded Gaussian noise of standard deviation ``noise_std``); every method sees
the same low-resolution images. Metrics: PSNR and SSIM inside the brain against the noiseless image (data range 1,
outputs clipped to [0, 1]), the data residual ``||A x - y|| / ||y||`` on the unclipped output, and the wall time per
slice. :func:`super_resolve_low_res` runs a method on images that are already low resolution (the user's data).
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

from monai_diffusion.operators import SuperResolutionOperator
from monai_diffusion.utils.image_io import save_nifti_images, write_montage_png

__all__ = [
    "super_resolution_items",
    "load_super_resolution_data",
    "degrade",
    "super_resolution_report",
    "low_res_items",
    "super_resolve_low_res",
]


def super_resolution_items(
    datalist: str | os.PathLike | Sequence[dict],
    section: str,
    contrasts: Sequence[str],
    min_brain_voxels: int = 800,
    limit: int | None = None,
) -> list[dict]:
    """Items ``{"clean", "brain", "contrast"}`` of one split (as for denoising: noiseless source, brain mask)."""
    from monai_diffusion.apps.denoising.evaluation import denoising_items

    return denoising_items(datalist, section, contrasts, min_brain_voxels, limit)


def load_super_resolution_data(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """``clean`` ([0, 1]), ``brain`` ({0, 1}) and ``contrast`` (ids) tensors of the items."""
    from monai_diffusion.apps.denoising.evaluation import load_denoising_data

    return load_denoising_data(items)


def degrade(
    clean: torch.Tensor, factor: int, noise_std: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The low-resolution measurement ``avgpool_factor(clean)`` plus Gaussian noise of ``noise_std``.

    Raises:
        ValueError: ``factor`` does not divide the image size, or ``noise_std < 0``.
    """
    if not noise_std >= 0:
        raise ValueError(f"noise_std must be non-negative, got {noise_std}")
    if any(s % int(factor) for s in clean.shape[2:]):
        raise ValueError(f"factor {factor} does not divide the image size {tuple(clean.shape[2:])}")
    y = SuperResolutionOperator(int(factor), spatial_dims=clean.ndim - 2).A(clean.float())
    if noise_std > 0:
        y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=y.dtype)
    return y


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _run(method, low_res, contrast, factor, batch_size, generator, desc, progress):
    from tqdm.auto import tqdm

    means, stds = [], []
    n = low_res.shape[0]
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        mean, std = method(low_res[sl], factor, contrast[sl], generator=generator)
        means.append(mean.float().cpu())
        stds.append(None if std is None else std.float().cpu())
    std_all = None if any(s is None for s in stds) else torch.cat(stds)  # type: ignore[arg-type]
    return torch.cat(means), std_all


def super_resolution_report(
    methods: Mapping[str, Any],
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    factors: Sequence[int] = (2, 4),
    noise_std: float = 0.0,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    save_nifti: bool = True,
) -> dict[str, Any]:
    """Run every method at every factor, write ``metrics.json`` (``table``/``notes``/``figures``), a figure per
    factor and (``save_nifti``) the outputs; print the table.

    Args:
        methods: ``{name: method}``, ``method(low_res, factor, contrast_ids, generator=g) -> (high_res, std)`` (see
            :mod:`~monai_diffusion.apps.super_resolution.methods`).
        items: from :func:`super_resolution_items` (the test split, or validation for tuning).
        output_dir: where results go.
        factors: downsampling factors (each must divide the image size).
        noise_std: Gaussian noise added to the low-resolution images ([0, 1] units).
        batch_size, seed: batching; the seed fixes the noise and the samplers (the same for every method).
        progress: progress bars.
        save_nifti: write ``samples/<method>_x<f>_<i>.nii.gz`` (high resolution, [0, 1], unclipped),
            ``..._std.nii.gz`` (the uncertainty map, for methods with several samples) and the low-resolution
            inputs ``samples/low_res_x<f>_<i>.nii.gz``.

    Raises:
        ValueError: no items, or a factor that does not divide the image size.
    """
    from monai_diffusion.apps.generation.pipeline import format_table
    from monai_diffusion.metrics import masked_psnr, masked_ssim

    if not items:
        raise ValueError("no items to evaluate (check the datalist, the split and limit)")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_super_resolution_data(items)
    clean, brain, contrast = data["clean"], data["brain"], data["contrast"]
    for f in factors:
        if any(s % int(f) for s in clean.shape[2:]):
            raise ValueError(f"factor {f} does not divide the image size {tuple(clean.shape[2:])}")
    n = clean.shape[0]
    results: dict[str, Any] = {"factors": {}, "figures": [], "images": n, "noise_std": noise_std}
    rows = []
    pick = torch.linspace(0, n - 1, min(6, n)).round().long()
    for level, factor in enumerate(factors):
        factor = int(factor)
        low_res = degrade(clean, factor, noise_std, torch.Generator().manual_seed(seed + level))
        operator = SuperResolutionOperator(factor, spatial_dims=clean.ndim - 2)
        entry: dict[str, Any] = {}
        examples: list[list[torch.Tensor]] = [list(clean[pick]), list(operator.pinv(low_res)[pick])]
        uncertainty: list[torch.Tensor] | None = None
        if save_nifti:
            save_nifti_images(low_res, out / "samples", [f"low_res_x{factor}_{i:04d}.nii.gz" for i in range(n)])
        for name, method in methods.items():
            g = torch.Generator().manual_seed(seed + 100 + level)
            t0 = time.time()
            mean, std = _run(method, low_res, contrast, factor, batch_size, g, f"{name} x{factor}", progress)
            wall = time.time() - t0
            clipped = mean.clamp(0, 1)
            psnr = masked_psnr(clipped, clean, brain, data_range=1.0)
            ssim = masked_ssim(clipped, clean, brain, data_range=1.0)
            res = (operator.A(mean) - low_res).flatten(1).norm(dim=1) / low_res.flatten(1).norm(dim=1)
            entry[name] = {
                "psnr": float(psnr.mean()),
                "psnr_std": float(psnr.std()) if n > 1 else 0.0,
                "ssim": float(ssim.mean()),
                "residual": float(res.mean()),
                "wall_s": wall,
                "wall_s_per_slice": wall / n,
                "nfe": getattr(method, "nfe", None),
            }
            if std is not None:
                entry[name]["mean_std_brain"] = float((std * brain).sum() / brain.sum().clamp_min(1))
                if uncertainty is None:
                    uncertainty = list(std[pick] / std[pick].amax().clamp_min(1e-8))
            rows.append(
                [name, f"x{factor}", round(float(psnr.mean()), 2), round(float(ssim.mean()), 4), round(wall / n, 3)]
            )
            examples.append(list(clipped[pick]))
            if save_nifti:
                stem = f"{_slug(name)}_x{factor}"
                save_nifti_images(mean, out / "samples", [f"{stem}_{i:04d}.nii.gz" for i in range(n)])
                if std is not None:
                    save_nifti_images(std, out / "samples", [f"{stem}_{i:04d}_std.nii.gz" for i in range(n)])
        if uncertainty is not None:
            examples.append(uncertainty)
        fig = write_montage_png(examples, out / f"super_resolution_x{factor}.png")
        names = ["clean", "pinv (nearest) of the input", *methods] + (["uncertainty (scaled)"] if uncertainty else [])
        results["figures"].append({"title": f"x{factor}: rows {', '.join(names)} (test images)", "path": fig.name})
        results["factors"][str(factor)] = entry
    columns = ["method", "factor", "PSNR dB (brain)", "SSIM (brain)", "s / slice"]
    results["table"] = {"columns": columns, "rows": rows}
    results["notes"] = (
        f"{n} images; low resolution = box average over f x f blocks of the noiseless rendering"
        + (f" plus Gaussian noise of std {noise_std}" if noise_std > 0 else " (no noise)")
        + "; PSNR/SSIM inside the brain against the noiseless image, outputs clipped to [0, 1]; wall time per "
        f"slice on this machine ({torch.get_num_threads()} torch threads)."
    )
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(columns, rows))
    print(results["notes"])
    return results


def low_res_items(datalist: str | os.PathLike | Sequence[dict], section: str = "test") -> list[dict]:
    """Items ``{"image", "contrast"}`` of a user datalist of low-resolution images (decathlon format; paths
    relative to the file; ``contrast`` a class id or name, default 0).

    Raises:
        ValueError: a section that is missing or empty, or items without ``image``.
    """
    if isinstance(datalist, (str, os.PathLike)):
        from monai.data import load_decathlon_datalist

        items = load_decathlon_datalist(str(datalist), data_list_key=section)
    else:
        items = list(datalist)
    if not items:
        raise ValueError(f"datalist has no items in {section!r}")
    bad = [sorted(it) for it in items if "image" not in it]
    if bad:
        raise ValueError(f"low-resolution items need an 'image' key; got items with keys {bad[0]}")
    return [{"image": it["image"], "contrast": it.get("contrast", 0)} for it in items]


def super_resolve_low_res(
    method, items: Sequence[dict], factor: int, output_dir: str | os.PathLike, seed: int = 0, batch_size: int = 32
) -> dict[str, Any]:
    """Super-resolve images that are already low resolution; writes ``samples/sr_<i>.nii.gz`` (and ``_std``),
    a montage and ``metrics.json`` (wall time only: there is no reference).

    Raises:
        ValueError: images whose size is not the prior's size divided by ``factor`` (from the method).
    """
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged

    transform = Compose(
        [
            LoadImaged(keys=["image"], image_only=True),
            EnsureChannelFirstd(keys=["image"]),
            EnsureTyped(keys=["image"], track_meta=False, dtype=torch.float32),
        ]
    )
    low_res = torch.stack([transform(dict(it))["image"] for it in items])
    contrast = [it["contrast"] for it in items]
    out = Path(output_dir)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    means, stds = [], []
    for start in range(0, len(items), batch_size):
        mean, std = method(low_res[start : start + batch_size], factor, contrast[start : start + batch_size], g)
        means.append(mean)
        stds.append(std)
    wall = time.time() - t0
    mean = torch.cat(means)
    names = [f"sr_{i:04d}.nii.gz" for i in range(len(items))]
    save_nifti_images(mean, out / "samples", names)
    rows_png = [list(mean.clamp(0, 1))]
    if all(s is not None for s in stds):
        std = torch.cat(stds)  # type: ignore[arg-type]
        save_nifti_images(std, out / "samples", [n.replace(".nii.gz", "_std.nii.gz") for n in names])
        rows_png.append(list(std / std.amax().clamp_min(1e-8)))
    write_montage_png(rows_png, out / "super_resolution.png")
    columns = ["input", "factor", "images", "s / slice"]
    results = {
        "table": {"columns": columns, "rows": [["low-resolution images", f"x{factor}", len(items), wall / len(items)]]},
        "notes": "user low-resolution images: no reference, so no PSNR/SSIM",
        "figures": [{"title": "super-resolved images (and uncertainty)", "path": "super_resolution.png"}],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
