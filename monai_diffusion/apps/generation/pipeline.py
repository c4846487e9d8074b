"""Sampling, saving and evaluating contrast-conditional generation (the generation bundle's workflow pieces).

* :class:`LatentGenerator` samples images for given contrast ids: noise in latent space, a sampler from
  :mod:`monai_diffusion.networks.schedulers`, classifier-free guidance by wrapping the network
  (:class:`~monai_diffusion.inferers.ClassifierFreeGuidance`), decoding by the first stage.
* :class:`GaussianLatentGenerator` is the non-diffusion baseline with the same interface.
* :func:`save_samples` writes NIfTI files and a PNG montage; :func:`evaluate_samples` measures feature distances
  (FID/KID with the project's own feature network), MS-SSIM diversity, contrast fidelity and tissue fractions
  against real images; :func:`generation_report` runs a generator end to end and writes ``metrics.json``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_diffusion.apps.generation.data import GENERATION_CONTRASTS
from monai_diffusion.apps.generation.latent import GaussianLatentPrior
from monai_diffusion.inferers.conditioning import NullCondition
from monai_diffusion.inferers.guidance import ClassifierFreeGuidance
from monai_diffusion.inferers.latent import LatentDiffusionInferer, decode_latent, frozen
from monai_diffusion.utils.image_io import save_nifti_images, write_montage_png

__all__ = [
    "LatentGenerator",
    "GaussianLatentGenerator",
    "contrast_labels",
    "save_samples",
    "load_reference",
    "reference_statistics",
    "evaluate_samples",
    "generation_report",
]


def contrast_labels(contrasts: Sequence[str], per_contrast: int, all_contrasts: Sequence[str] = GENERATION_CONTRASTS):
    """Class ids ``[c0]*n + [c1]*n + ...`` for the named contrasts.

    Raises:
        ValueError: an unknown contrast name or ``per_contrast < 1``.
    """
    all_contrasts = list(all_contrasts)
    unknown = [c for c in contrasts if c not in all_contrasts]
    if unknown:
        raise ValueError(f"unknown contrast(s) {unknown}: this model was trained on {all_contrasts}")
    if int(per_contrast) < 1:
        raise ValueError(f"per_contrast must be >= 1, got {per_contrast}")
    return torch.tensor([all_contrasts.index(c) for c in contrasts for _ in range(int(per_contrast))])


def _batches(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(n, start + batch_size))


class LatentGenerator(nn.Module):
    """Contrast-conditional latent diffusion sampling with classifier-free guidance.

    Args:
        autoencoder: the trained first stage (``AutoencoderKL``).
        network: the latent ``DiffusionModelUNet`` (class-conditional, ``num_class_embeds = classes + 1``).
        scheduler: any sampler of :mod:`monai_diffusion.networks.schedulers` on the training forward process.
        scale_factor: the latent scale factor used in training.
        latent_shape: (C, *spatial) of one latent.
        null_class: the null class id of condition dropout.
        guidance_scale: classifier-free guidance scale (1: conditional only).
        num_inference_steps: sampler steps.
        batch_size: images per sampling batch.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        network: nn.Module,
        scheduler,
        scale_factor: float,
        latent_shape: Sequence[int],
        null_class: int = 4,
        guidance_scale: float = 2.0,
        num_inference_steps: int = 25,
        batch_size: int = 64,
    ) -> None:
        super().__init__()
        if int(num_inference_steps) < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if float(guidance_scale) < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        self.autoencoder = autoencoder
        self.network = network
        self.scheduler = scheduler
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.null = NullCondition(class_label=null_class)
        self.guidance_scale = float(guidance_scale)
        self.num_inference_steps = int(num_inference_steps)
        self.batch_size = int(batch_size)
        self.inferer = LatentDiffusionInferer(scheduler, scale_factor=scale_factor, condition_mode="class_label")

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def nfe(self) -> int:
        """Network evaluations per sample (a guided step evaluates the conditional and the null branch)."""
        per_step = 1 if self.guidance_scale in (0.0, 1.0) else 2
        return per_step * self.num_inference_steps

    @torch.no_grad()
    def forward(
        self, labels: torch.Tensor, generator: torch.Generator | None = None, progress: bool = False
    ) -> torch.Tensor:
        """Images (N, 1, *spatial) in [-1, 1] for class ids ``labels`` (N,)."""
        labels = torch.as_tensor(labels).reshape(-1).long()
        num_classes = int(self.null.class_label or 0)
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"contrast ids must be in [0, {num_classes - 1}], got {sorted(set(labels.tolist()))}")
        self.network.eval()
        model = ClassifierFreeGuidance(self.network, self.guidance_scale, self.null)
        device = self.device
        out = []
        for sl in _batches(labels.numel(), self.batch_size):
            lab = labels[sl].to(device)
            noise = torch.randn((lab.numel(), *self.latent_shape), generator=generator).to(device)
            images = self.inferer.sample(
                noise,
                self.autoencoder,
                model,
                conditioning=lab,
                mode="class_label",
                num_inference_steps=self.num_inference_steps,
                progress=progress,
            )
            out.append(torch.as_tensor(images).float().clamp(-1, 1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)


class GaussianLatentGenerator(nn.Module):
    """The baseline: latents from a per-contrast Gaussian fitted to the training latents, decoded by the same decoder.

    Args:
        autoencoder: the trained first stage.
        prior: a fitted :class:`GaussianLatentPrior` (its latents are unscaled).
        batch_size: images per decoding batch.
    """

    def __init__(self, autoencoder: nn.Module, prior: GaussianLatentPrior, batch_size: int = 64) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.prior = prior
        self.batch_size = int(batch_size)

    def nfe(self) -> int:
        return 0

    @torch.no_grad()
    def forward(
        self, labels: torch.Tensor, generator: torch.Generator | None = None, progress: bool = False
    ) -> torch.Tensor:
        labels = torch.as_tensor(labels).reshape(-1).long()
        device = next(self.autoencoder.parameters()).device
        out = []
        for sl in _batches(labels.numel(), self.batch_size):
            z = self.prior.sample(labels[sl], generator=generator).to(device)
            with frozen(self.autoencoder):
                out.append(torch.as_tensor(decode_latent(self.autoencoder, z)).float().clamp(-1, 1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1)


@torch.no_grad()
def fit_gaussian_prior(
    autoencoder: nn.Module,
    loader,
    num_classes: int,
    latent_shape: Sequence[int],
    shrinkage: float = 0.1,
    identity: bool = False,
    max_batches: int | None = None,
) -> GaussianLatentPrior:
    """Fit :class:`GaussianLatentPrior` to the (unscaled, posterior-mean) latents of ``loader``'s images."""
    from monai_diffusion.inferers.latent import encode_latent

    prior = GaussianLatentPrior(num_classes, latent_shape, shrinkage=shrinkage, identity=identity)
    if identity:
        return prior
    device = next(autoencoder.parameters()).device
    zs, labels = [], []
    with frozen(autoencoder):
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            zs.append(encode_latent(autoencoder, torch.as_tensor(batch["image"]).float().to(device)).cpu())
            labels.append(torch.as_tensor(batch["contrast"]).reshape(-1))
    return prior.fit(torch.cat(zs), torch.cat(labels))


def save_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    output_dir: str | os.PathLike,
    contrasts: Sequence[str] = GENERATION_CONTRASTS,
    prefix: str = "sample",
    montage_columns: int = 8,
) -> dict[str, Any]:
    """Write each image as NIfTI (``samples/<prefix>_<contrast>_<i>.nii.gz``, intensities back in [0, 1]) and a PNG
    montage (one row per contrast, first ``montage_columns`` samples of each) to ``output_dir``.

    Returns:
        ``{"nifti": [paths], "montage": path}``.
    """
    out = Path(output_dir)
    arr = ((images.float().clamp(-1, 1) + 1) / 2).numpy()
    labels = torch.as_tensor(labels).reshape(-1)
    names = []
    counts: dict[int, int] = {}
    for lab in labels.tolist():
        i = counts.get(lab, 0)
        counts[lab] = i + 1
        names.append(f"{prefix}_{contrasts[lab]}_{i:03d}.nii.gz")
    paths = [str(path) for path in save_nifti_images(arr, out / "samples", names)]
    montage = out / f"{prefix}_montage.png"
    write_montage(arr, labels, montage, contrasts, montage_columns)
    return {"nifti": paths, "montage": str(montage)}


def write_montage(
    images01: np.ndarray,
    labels: torch.Tensor,
    path: str | os.PathLike,
    contrasts: Sequence[str] = GENERATION_CONTRASTS,
    columns: int = 8,
) -> Path:
    """A grey-scale PNG grid: one row per contrast present, ``columns`` images of each spread evenly over the set
    (3D: middle axial slice)."""
    labels = torch.as_tensor(labels).reshape(-1)
    rows = []
    for c in sorted(set(labels.tolist())):
        members = (labels == c).nonzero().reshape(-1)
        picks = np.unique(np.linspace(0, len(members) - 1, num=min(columns, len(members))).round().astype(int))
        # spread over the set (consecutive items are often neighbouring slices)
        rows.append([images01[i] for i in members[picks].tolist()])
    return write_montage_png(rows, path, columns)


def load_reference(items: Sequence[dict], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Real images in [-1, 1] and their contrast ids from :func:`contrast_items` items."""
    from monai_diffusion.apps.generation.data import generation_transforms

    items = list(items)
    if limit is not None and 0 < limit < len(items):
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    transform = generation_transforms()
    loaded = [transform(dict(it)) for it in items]
    images = torch.stack([torch.as_tensor(d["image"]).float() for d in loaded])
    labels = torch.tensor([int(d["contrast"]) for d in loaded])
    return images, labels


#: depths (fractions of the volume) of the axial slices a 3D volume contributes to the 2D feature network
FEATURE_SLICE_FRACTIONS: tuple[float, ...] = (0.35, 0.45, 0.5, 0.55, 0.65)


def feature_view(images: torch.Tensor, labels: torch.Tensor, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """What the 2D feature network sees: 2D images resized to ``size``; for 3D volumes, axial slices at
    :data:`FEATURE_SLICE_FRACTIONS` of the depth after trilinear resampling to ``size`` per side (the 32^3 volumes
    have twice the voxel size of the 2D slices the network was trained on, so resampling restores its grid)."""
    import torch.nn.functional as F

    labels = torch.as_tensor(labels).reshape(-1)
    if images.ndim == 4:
        if tuple(images.shape[-2:]) != (size, size):
            images = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
        return images, labels
    if images.ndim != 5:
        raise ValueError(f"expected (N, 1, H, W) or (N, 1, H, W, D) images, got {tuple(images.shape)}")
    vol = F.interpolate(images.float(), size=(size, size, size), mode="trilinear", align_corners=False)
    idx = [min(size - 1, int(round(f * (size - 1)))) for f in FEATURE_SLICE_FRACTIONS]
    slices = vol[..., idx].permute(0, 4, 1, 2, 3).reshape(-1, 1, size, size)
    return slices, labels.repeat_interleave(len(idx))


def reference_statistics(reference: torch.Tensor, reference_labels: torch.Tensor, network=None) -> dict[str, Any]:
    """What :func:`evaluate_samples` needs from the real images, computed once for any number of generators: the
    feature network's view of them, their features, contrast probabilities and tissue fractions."""
    from monai_diffusion.metrics import extract_features, load_feature_network, predict_contrast_and_tissue

    net = network if network is not None else load_feature_network()
    reference_labels = torch.as_tensor(reference_labels).reshape(-1)
    view, view_labels = feature_view(reference, reference_labels)
    probs, tissue = predict_contrast_and_tissue(view, net)
    return {
        "images": reference,
        "labels": reference_labels,
        "view_labels": view_labels,
        "features": extract_features(view, net),
        "probs": probs,
        "tissue": tissue,
        "network": net,
    }


def evaluate_samples(
    samples: torch.Tensor,
    sample_labels: torch.Tensor,
    reference: torch.Tensor | dict[str, Any],
    reference_labels: torch.Tensor | None = None,
    contrasts: Sequence[str] = GENERATION_CONTRASTS,
    generator_seed: int = 0,
    kid_subsets: int = 20,
    pairs: int | None = 200,
) -> dict[str, Any]:
    """Measure generated images against real ones with the project's feature network.

    ``reference`` is the real images (with ``reference_labels``) or, to measure several generators against the same
    images without recomputing their side, the output of :func:`reference_statistics`.

    Returns a dict with ``fid`` and ``kid_mean``/``kid_std`` (all contrasts pooled), ``fid_per_contrast``,
    ``ms_ssim`` (mean MS-SSIM of random pairs of the same contrast: lower is more diverse; the real images' value
    is ``ms_ssim_real``), ``contrast_accuracy`` (share of samples the feature network assigns to the requested
    contrast; ``contrast_accuracy_real`` is the same for the real images, the ceiling to read it against), and
    ``tissue_fractions`` (mean predicted CSF/GM/WM fractions of samples and of real images, and their absolute
    difference). ``pairs`` random pairs per contrast enter MS-SSIM (``None``: all pairs). 3D volumes enter the 2D
    feature network as axial slices (:func:`feature_view`). FID/KID here use features of a network trained on the
    embedded data, not Inception features: they compare methods within this project only
    (``docs/feature_network.md``).
    """
    from monai_diffusion.metrics import (
        extract_features,
        frechet_distance,
        kernel_inception_distance,
        ms_ssim_diversity,
        predict_contrast_and_tissue,
    )

    if not isinstance(reference, dict):
        if reference_labels is None:
            raise ValueError("reference_labels are needed with reference images")
        reference = reference_statistics(reference, reference_labels)
    real, reference_labels = reference["images"], reference["labels"]
    if samples.ndim != real.ndim:
        raise ValueError(
            f"generated images {tuple(samples.shape[1:])} and reference images {tuple(real.shape[1:])} differ in "
            "dimensionality: give a reference datalist of the same kind (2D slices or 3D volumes)"
        )
    net = reference["network"]
    g = torch.Generator().manual_seed(generator_seed)
    sample_labels = torch.as_tensor(sample_labels).reshape(-1)
    view_s, view_s_labels = feature_view(samples, sample_labels)
    view_r_labels = reference["view_labels"]
    f_s = extract_features(view_s, net)
    f_r = reference["features"]
    subset = int(min(len(f_s), len(f_r), 100))
    kid_mean, kid_std = kernel_inception_distance(f_s, f_r, subsets=kid_subsets, subset_size=subset, generator=g)
    out: dict[str, Any] = {
        "num_samples": int(len(samples)),
        "num_reference": int(len(real)),
        "fid": float(frechet_distance(f_s, f_r)),
        "kid_mean": float(kid_mean),
        "kid_std": float(kid_std),
        "fid_per_contrast": {},
        "ms_ssim": {},
        "ms_ssim_real": {},
    }
    probs, tissue = predict_contrast_and_tissue(view_s, net)
    out["contrast_accuracy"] = float((probs.argmax(1) == view_s_labels).float().mean())
    out["contrast_accuracy_real"] = float((reference["probs"].argmax(1) == view_r_labels).float().mean())
    for c in sorted(set(sample_labels.tolist())):
        name = contrasts[c]
        ms, mr = sample_labels == c, reference_labels == c
        fs, fr = view_s_labels == c, view_r_labels == c
        if int(ms.sum()) >= 2 and int(mr.sum()) >= 2:
            out["fid_per_contrast"][name] = float(frechet_distance(f_s[fs], f_r[fr]))
            out["ms_ssim"][name] = float(ms_ssim_diversity(samples[ms], pairs=pairs, generator=g))
            out["ms_ssim_real"][name] = float(ms_ssim_diversity(real[mr], pairs=pairs, generator=g))
    ts, tr = tissue.mean(0), reference["tissue"].mean(0)
    out["tissue_fractions"] = {
        "sample_mean": [float(v) for v in ts],
        "real_mean": [float(v) for v in tr],
        "abs_difference": [float(v) for v in (ts - tr).abs()],
        "classes": ["csf", "grey matter", "white matter"],
    }
    return out


def generation_report(
    generators: dict[str, nn.Module],
    reference_items: Sequence[dict],
    output_dir: str | os.PathLike,
    contrasts: Sequence[str] = GENERATION_CONTRASTS,
    per_contrast: int = 8,
    reference_limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
    save_nifti: bool = True,
) -> dict[str, Any]:
    """Sample ``per_contrast`` images per contrast from each generator, save them, measure them against the
    reference images, write ``metrics.json`` (with a ``table`` the report renders) and print the table.

    Args:
        generators: ``{name: generator}``, e.g. ``{"latent diffusion": ldm, "Gaussian latent prior": baseline}``.
        reference_items: real images (:func:`contrast_items` of the test split, or a user's datalist).
        output_dir: where samples, montages and ``metrics.json`` go.
        contrasts: the contrast names in class-id order.
        per_contrast: samples per contrast and generator.
        reference_limit: use at most this many real images.
        seed: seeds the sampling noise (the same noise for every generator).
        progress: progress bars.
        save_nifti: write every sample as NIfTI (the montage is always written).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    reference, reference_labels = load_reference(reference_items, reference_limit)
    present = sorted(set(reference_labels.tolist()))
    labels = contrast_labels([contrasts[c] for c in present], per_contrast, contrasts)
    real = reference_statistics(reference, reference_labels)  # once for every generator
    results: dict[str, Any] = {"generators": {}, "figures": []}
    for name, gen in generators.items():
        t0 = time.time()
        samples = gen(labels, generator=torch.Generator().manual_seed(seed), progress=progress)
        wall = time.time() - t0
        slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        files = (
            save_samples(samples, labels, out, contrasts, prefix=slug)
            if save_nifti
            else {"montage": str(write_montage(((samples + 1) / 2).numpy(), labels, out / f"{slug}_montage.png"))}
        )
        metrics = evaluate_samples(samples, labels, real, contrasts=contrasts, generator_seed=seed)
        nfe = getattr(gen, "nfe", None)
        metrics.update({"wall_s": wall, "nfe": int(nfe()) if callable(nfe) else None})
        results["generators"][name] = metrics
        results["figures"].append(
            {"title": f"{name}: samples (rows {[contrasts[c] for c in present]})", "path": Path(files["montage"]).name}
        )
    real_montage = write_montage(((reference + 1) / 2).numpy(), reference_labels, out / "real_montage.png")
    results["figures"].append({"title": "real test images", "path": real_montage.name})
    columns = ["method", "NFE", "FID", "KID x1e3", "MS-SSIM", "contrast acc.", "tissue |diff|", "wall s"]
    rows = []
    for name, m in results["generators"].items():
        ms = m["ms_ssim"]
        rows.append(
            [
                name,
                m["nfe"],
                round(m["fid"], 3),
                f"{1e3 * m['kid_mean']:.2f} +- {1e3 * m['kid_std']:.2f}",
                round(float(np.mean(list(ms.values()))), 3) if ms else None,
                round(m["contrast_accuracy"], 3),
                round(float(np.mean(m["tissue_fractions"]["abs_difference"])), 4),
                round(m["wall_s"], 1),
            ]
        )
    first = next(iter(results["generators"].values())) if results["generators"] else {}
    real_ms = first.get("ms_ssim_real", {})
    results["table"] = {"columns": columns, "rows": rows}
    results["notes"] = (
        f"{len(labels)} samples per method vs {len(reference)} real test images; MS-SSIM of real pairs "
        f"{float(np.mean(list(real_ms.values()))) if real_ms else float('nan'):.3f}; contrast accuracy on the real "
        f"images {first.get('contrast_accuracy_real', float('nan')):.3f}. FID/KID use this project's own "
        "feature network (docs/feature_network.md), comparable only within this project."
    )
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(columns, rows))
    print(results["notes"])
    return results


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (for the terminal and the logs)."""
    cells = [[str(c) for c in columns]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
