"""Evaluation of anomaly detectors on a datalist with exact lesion masks (the embedded set, or a user's own).

Protocol (``docs/bundles.md``): maps are computed for every slice (or volume) of the section with at least
``min_brain_voxels`` brain voxels. The binarisation threshold of a detector is the one that maximises the pooled
Dice on the validation split; the test split is never used to choose it. On the test split:

* pixel AUPRC, best achievable Dice and Dice at the validation threshold, pooled over the brain pixels of the
  lesion subjects' images (Baur et al. 2021's [AUPRC] and [Dice]);
* image-level AUROC (images with lesion pixels against images without) and subject-level AUROC (lesion subjects
  against healthy subjects), scoring an image by the mean of its top 1 % brain pixels and a subject by its
  highest-scoring image.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from monai_diffusion.utils.image_io import save_nifti_images, write_montage_png

__all__ = [
    "anomaly_items",
    "load_anomaly_data",
    "compute_maps",
    "image_scores",
    "score_maps",
    "anomaly_report",
]


def anomaly_items(
    datalist: str | os.PathLike | Sequence[dict],
    section: str,
    contrast: str,
    min_brain_voxels: int = 800,
    limit: int | None = None,
    mask_key: str = "label",
) -> list[dict]:
    """Items ``{"image", "brain", "lesion", "subject", "healthy", "contrast"}`` of one contrast.

    Args:
        datalist: datalist JSON (paths relative to it) or loaded items; items need the contrast key, a brain mask
            (``mask_key``; nonzero inside the brain, e.g. the embedded set's tissue label) and, for evaluation,
            ``lesion``.
        section: e.g. ``"validation"`` or ``"test"``.
        contrast: the contrast key (``"flair"``, ...).
        min_brain_voxels: skip near-empty edge slices.
        limit: keep at most this many items, spread over the section (quick runs).
        mask_key: the key of the brain mask.

    Raises:
        ValueError: an item without a brain mask.
    """
    from monai_diffusion.apps.generation.data import contrast_items

    items = contrast_items(datalist, section, [contrast], min_brain_voxels, limit=limit)
    out = []
    for it in items:
        if mask_key not in it:
            raise ValueError(
                f"datalist items need a brain mask under {mask_key!r} (nonzero inside the brain); item keys: "
                f"{sorted(it)}"
            )
        new = {"image": it["image"], "brain": it[mask_key], "contrast": contrast}
        new["subject"] = str(it.get("subject", it["image"]))
        new["healthy"] = bool(it.get("healthy", "lesion" not in it))
        if "lesion" in it:
            new["lesion"] = it["lesion"]
        out.append(new)
    return out


def load_anomaly_data(items: Sequence[dict]) -> dict[str, Any]:
    """Load items to tensors: ``image`` in [-1, 1], ``brain`` and ``lesion`` as {0, 1} floats (lesion all zero
    when absent), plus the ``subject`` list and ``healthy`` flags."""
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityRanged

    items = list(items)
    if not items:
        raise ValueError("no items to load")
    keys = ["image", "brain"] + (["lesion"] if all("lesion" in it for it in items) else [])
    transform = Compose(
        [
            LoadImaged(keys=keys, image_only=True),
            EnsureChannelFirstd(keys=keys),
            ScaleIntensityRanged(keys="image", a_min=0.0, a_max=1.0, b_min=-1.0, b_max=1.0, clip=True),
            EnsureTyped(keys=keys, track_meta=False, dtype=torch.float32),
        ]
    )
    loaded = [transform(dict(it)) for it in items]
    image = torch.stack([d["image"] for d in loaded])
    brain = (torch.stack([d["brain"] for d in loaded]) > 0).float()
    lesion = (torch.stack([d["lesion"] for d in loaded]) > 0).float() if "lesion" in keys else torch.zeros_like(image)
    return {
        "image": image,
        "brain": brain,
        "lesion": lesion,
        "subject": [it["subject"] for it in items],
        "healthy": torch.tensor([bool(it["healthy"]) for it in items]),
        "contrast": items[0]["contrast"],
    }


def compute_maps(
    detector, data: Mapping[str, Any], batch_size: int = 32, seed: int = 0, progress: bool = False
) -> dict[str, torch.Tensor]:
    """Run ``detector`` over ``data`` (from :func:`load_anomaly_data`) in batches with seeded noise."""
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(seed)
    maps, recons = [], []
    n = data["image"].shape[0]
    for start in tqdm(range(0, n, batch_size), desc="anomaly maps", disable=not progress, leave=False):
        sl = slice(start, start + batch_size)
        out = detector(data["image"][sl], data["contrast"], data["brain"][sl], generator=generator)
        maps.append(out["map"].cpu())
        recons.append(out["reconstruction"].cpu())
    return {"map": torch.cat(maps), "reconstruction": torch.cat(recons)}


def image_scores(maps: torch.Tensor, brain: torch.Tensor, top_fraction: float = 0.01) -> torch.Tensor:
    """Per image: the mean of its highest ``top_fraction`` of brain-pixel scores (at least one pixel)."""
    scores = []
    for m, b in zip(maps, brain):
        values = m[b > 0]
        k = max(1, int(round(top_fraction * values.numel())))
        scores.append(values.topk(k).values.mean())
    return torch.stack(scores)


def score_maps(
    maps: torch.Tensor, data: Mapping[str, Any], threshold: float | None = None
) -> dict[str, float | int | None]:
    """The metrics of the module docs for one detector's maps on one split."""
    from monai_diffusion.metrics import auprc, auroc, best_dice

    brain, lesion = data["brain"], data["lesion"]
    healthy = data["healthy"]
    lesion_subject = ~healthy
    out: dict[str, float | int | None] = {"images": int(maps.shape[0]), "lesion_pixels": int(lesion.sum())}
    if lesion_subject.any() and lesion[lesion_subject].sum() > 0:
        m, t, b = maps[lesion_subject], lesion[lesion_subject], brain[lesion_subject]
        inside = b > 0
        out["auprc"] = auprc(m[inside], t[inside])
        out["best_dice"], out["best_threshold"] = best_dice(m, t, mask=b)
        if threshold is not None:
            out["dice"] = best_dice(m, t, thresholds=[threshold], mask=b)[0]
            out["threshold"] = float(threshold)
    scores = image_scores(maps, brain)
    has_lesion = lesion.flatten(1).sum(1) > 0
    if has_lesion.any() and (~has_lesion).any():
        out["image_auroc"] = auroc(scores, has_lesion.long())
    subjects = sorted(set(data["subject"]))
    subject_of = list(data["subject"])
    subj_score = torch.stack([scores[torch.tensor([s == x for s in subject_of])].max() for x in subjects])
    subj_label = torch.tensor([not bool(healthy[data["subject"].index(x)]) for x in subjects])
    out["subjects"] = len(subjects)
    if subj_label.any() and (~subj_label).any():
        out["subject_auroc"] = auroc(subj_score, subj_label.long())
    return out


def _montage(data: Mapping[str, Any], results: Mapping[str, Mapping[str, torch.Tensor]], path: Path, n: int = 6):
    """Rows: input, lesion mask, then each detector's map (each map scaled to its own 99.9th percentile)."""
    lesion_area = data["lesion"].flatten(1).sum(1)
    order = torch.argsort(lesion_area, descending=True)[: max(1, n * 3)]
    picks = order[torch.linspace(0, len(order) - 1, min(n, len(order))).round().long()]
    rows = [[(data["image"][i] + 1) / 2 for i in picks], [data["lesion"][i] for i in picks]]
    for res in results.values():
        m = res["map"]
        scale = float(torch.quantile(m[data["brain"] > 0].float(), 0.999)) or 1.0
        rows.append([(m[i] / scale).clamp(0, 1) for i in picks])
    return write_montage_png(rows, path)


def anomaly_report(
    detectors: Mapping[str, Any],
    datalist: str | os.PathLike | Sequence[dict],
    output_dir: str | os.PathLike,
    contrasts: Sequence[str] = ("flair",),
    min_brain_voxels: int = 800,
    limit: int | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    save_nifti: bool = False,
) -> dict[str, Any]:
    """Evaluate every detector on every contrast: threshold on validation, metrics on test; write
    ``metrics.json`` (``table``, ``notes``, ``figures`` for the report), montages and optionally the maps.

    Args:
        detectors: ``{name: detector}`` (callables as in :mod:`~monai_diffusion.apps.anomaly.detectors`). A
            detector may be ``{"detector": d, "contrasts": [...]}`` to run on some contrasts only.
        datalist: the datalist with ``validation`` and ``test`` sections.
        output_dir: where results go.
        contrasts: contrast keys to evaluate.
        min_brain_voxels, limit: item selection (``limit`` per section and contrast, for quick runs).
        batch_size, seed: batching and the noise seed (the same noise for every detector).
        progress: progress bars.
        save_nifti: write each test map as NIfTI under ``maps/<detector>/``.
    """
    import re

    from monai_diffusion.apps.generation.pipeline import format_table

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"detectors": {}, "figures": []}
    rows = []
    for contrast in contrasts:
        val = load_anomaly_data(anomaly_items(datalist, "validation", contrast, min_brain_voxels, limit))
        test = load_anomaly_data(anomaly_items(datalist, "test", contrast, min_brain_voxels, limit))
        test_maps: dict[str, dict[str, torch.Tensor]] = {}
        for name, entry in detectors.items():
            det, only = (entry["detector"], entry.get("contrasts")) if isinstance(entry, Mapping) else (entry, None)
            if only is not None and contrast not in only:
                continue
            t0 = time.time()
            val_maps = compute_maps(det, val, batch_size, seed, progress)["map"]
            threshold = score_maps(val_maps, val).get("best_threshold")
            test_res = compute_maps(det, test, batch_size, seed + 1, progress)
            wall = time.time() - t0
            metrics = score_maps(test_res["map"], test, threshold)
            metrics["wall_s"] = wall
            metrics["validation_images"] = int(val["image"].shape[0])
            results["detectors"].setdefault(name, {})[contrast] = metrics
            test_maps[name] = test_res
            if save_nifti:
                _save_maps(test_res["map"], out / "maps" / re.sub(r"[^a-z0-9]+", "_", name.lower()), contrast)
            rows.append(
                [
                    name,
                    contrast,
                    _r(metrics.get("auprc")),
                    _r(metrics.get("best_dice")),
                    _r(metrics.get("dice")),
                    _r(metrics.get("image_auroc")),
                    _r(metrics.get("subject_auroc")),
                    round(wall, 1),
                ]
            )
        fig = _montage(test, test_maps, out / f"maps_{contrast}.png")
        results["figures"].append(
            {"title": f"{contrast}: input, lesion mask, then the maps of {', '.join(test_maps)}", "path": fig.name}
        )
        results.setdefault("split", {})[contrast] = {
            "validation_images": int(val["image"].shape[0]),
            "test_images": int(test["image"].shape[0]),
            "test_subjects": len(set(test["subject"])),
            "test_lesion_subjects": len({s for s, h in zip(test["subject"], test["healthy"].tolist()) if not h}),
        }
    columns = ["method", "contrast", "AUPRC", "best Dice", "Dice (val thr.)", "image AUROC", "subject AUROC", "wall s"]
    results["table"] = {"columns": columns, "rows": rows}
    split: dict[str, Any] = next(iter(results.get("split", {}).values()), {})
    results["notes"] = (
        f"Test split: {split.get('test_images')} images of {split.get('test_subjects')} subjects "
        f"({split.get('test_lesion_subjects')} with lesions); thresholds chosen on the validation split. Pixel "
        "metrics pooled over the brain pixels of the lesion subjects' images; subject AUROC over very few subjects "
        "is coarse."
    )
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    print(format_table(columns, rows))
    print(results["notes"])
    return results


def _r(value: Any, digits: int = 3) -> Any:
    return None if value is None else round(float(value), digits)


def _save_maps(maps: torch.Tensor, folder: Path, contrast: str) -> None:
    save_nifti_images(maps, folder, [f"{contrast}_{i:04d}.nii.gz" for i in range(len(maps))])
