"""Evaluation of denoisers against exact noiseless targets (the embedded set's ``<contrast>_clean`` renderings).

For every noise level ``sigma`` (Rician, relative to the intensity range), each clean test image gets one seeded
noisy copy; every method sees the same noisy images and the same noise estimate (``estimate_noise_sigma``, so the
estimate's error is part of every method that uses it, and is reported). Metrics: PSNR and SSIM inside the brain
against the noiseless image (data range 1), per level, averaged over images.
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

__all__ = ["denoising_items", "load_denoising_data", "denoising_report"]


def denoising_items(
    datalist: str | os.PathLike | Sequence[dict],
    section: str,
    contrasts: Sequence[str],
    min_brain_voxels: int = 800,
    limit: int | None = None,
    clean_source: str = "{contrast}_clean",
    mask_key: str = "label",
) -> list[dict]:
    """Items ``{"clean", "brain", "contrast"}`` (``contrast`` as an id into ``contrasts``).

    Raises:
        ValueError: items without the clean image or the brain mask.
    """
    from monai_diffusion.apps.generation.data import contrast_items

    items = contrast_items(datalist, section, contrasts, min_brain_voxels, limit=limit, source=clean_source)
    out = []
    for it in items:
        if mask_key not in it:
            raise ValueError(f"datalist items need a brain mask under {mask_key!r}; item keys: {sorted(it)}")
        out.append({"clean": it["image"], "brain": it[mask_key], "contrast": int(it["contrast"])})
    return out


def load_denoising_data(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """``clean`` ([0, 1]), ``brain`` ({0, 1}) and ``contrast`` (ids) tensors."""
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged

    keys = ["clean", "brain"]
    transform = Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            EnsureTyped(keys=keys, track_meta=False, dtype=torch.float32),
        ]
    )
    loaded = [transform(dict(it)) for it in items]
    return {
        "clean": torch.stack([d["clean"] for d in loaded]).clamp(0, 1),
        "brain": (torch.stack([d["brain"] for d in loaded]) > 0).float(),
        "contrast": torch.tensor([int(it["contrast"]) for it in items]),
    }


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, start + size)


def denoising_report(
    methods: Mapping[str, Any],
    items: Sequence[dict],
    output_dir: str | os.PathLike,
    sigmas: Sequence[float] = (0.02, 0.05, 0.10),
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    save_nifti: bool = False,
) -> dict[str, Any]:
    """Run every method at every noise level, write ``metrics.json`` (``table``/``notes``/``figures``) and a
    figure, print the table.

    Args:
        methods: ``{name: method}``, ``method(noisy, contrast_ids, sigma=estimate, generator=g) -> denoised``
            (all on [0, 1]); the noisy input itself is always reported as ``"noisy input"``.
        items: from :func:`denoising_items` (a test split, or validation for tuning).
        output_dir: where results go.
        sigmas: Rician noise levels relative to the intensity range.
        batch_size, seed: batching; the seed fixes the noise (the same for every method).
        progress: progress bars.
        save_nifti: write the noisy and every method's denoised images ([0, 1]) as NIfTI under
            ``denoised/<method>/sigma<level>_<index>.nii.gz``.
    """
    from tqdm.auto import tqdm

    from monai_diffusion.apps.denoising.noise import add_rician_noise, estimate_noise_sigma
    from monai_diffusion.apps.generation.pipeline import format_table
    from monai_diffusion.metrics import masked_psnr, masked_ssim

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_denoising_data(items)
    clean, brain, contrast = data["clean"], data["brain"], data["contrast"]
    n = clean.shape[0]
    results: dict[str, Any] = {"levels": {}, "figures": [], "images": n}
    rows = []
    examples: dict[str, torch.Tensor] = {}
    pick = torch.linspace(0, n - 1, min(6, n)).round().long()
    for level, sigma in enumerate(sigmas):
        noisy = add_rician_noise(clean, float(sigma), generator=torch.Generator().manual_seed(seed + level))
        estimate = estimate_noise_sigma(noisy)
        est_err = ((estimate - sigma).abs() / sigma).mean().item()
        entry: dict[str, Any] = {"sigma": sigma, "estimate_mean": float(estimate.mean()), "estimate_rel_error": est_err}
        candidates = {"noisy input": None, **methods}
        for name, method in candidates.items():
            t0 = time.time()
            if method is None:
                denoised = noisy
            else:
                g = torch.Generator().manual_seed(seed + 100 + level)
                parts = []
                for sl in tqdm(
                    list(_batches(n, batch_size)), desc=f"{name} sigma={sigma}", disable=not progress, leave=False
                ):
                    parts.append(method(noisy[sl], contrast[sl], sigma=estimate[sl], generator=g))
                denoised = torch.cat(parts).float()
            wall = time.time() - t0
            psnr = masked_psnr(denoised, clean, brain, data_range=1.0)
            ssim = masked_ssim(denoised, clean, brain, data_range=1.0)
            entry[name] = {
                "psnr": float(psnr.mean()),
                "psnr_std": float(psnr.std()) if n > 1 else 0.0,
                "ssim": float(ssim.mean()),
                "wall_s": wall,
                "nfe": getattr(method, "nfe", None),
            }
            rows.append([name, sigma, round(float(psnr.mean()), 2), round(float(ssim.mean()), 4), round(wall, 1)])
            if save_nifti:
                _save(denoised, out / "denoised" / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"), sigma)
            if level == len(sigmas) - 1:
                examples[name] = denoised[pick]
        results["levels"][str(sigma)] = entry
    examples["clean"] = clean[pick]
    fig = _figure(examples, out / "denoising_examples.png")
    results["figures"].append(
        {"title": f"sigma {sigmas[-1]}: rows {', '.join(examples)} (test images)", "path": fig.name}
    )
    est_rows = [[s, round(results["levels"][str(s)]["estimate_mean"], 4)] for s in sigmas]
    est_text = "; ".join(
        f"sigma {s}: estimate {m} (mean relative error {results['levels'][str(s)]['estimate_rel_error']:.1%})"
        for s, m in est_rows
    )
    columns = ["method", "sigma", "PSNR dB (brain)", "SSIM (brain)", "wall s"]
    results["table"] = {"columns": columns, "rows": rows}
    results["notes"] = (
        f"{n} test images; Rician noise over the whole image, metrics inside the brain against the noiseless "
        f"rendering. Noise estimate (scikit-image wavelet MAD): {est_text}."
    )
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(columns, rows))
    print(results["notes"])
    return results


def _save(images: torch.Tensor, folder: Path, sigma: float) -> None:
    save_nifti_images(images, folder, [f"sigma{sigma}_{i:04d}.nii.gz" for i in range(len(images))])


def _figure(examples: Mapping[str, torch.Tensor], path: Path) -> Path:
    return write_montage_png(list(examples.values()), path)
