"""Find, run, evaluate and verify the bundles in ``bundles/``: a thin layer over ``monai.bundle``.

A bundle is a folder ``<name>/`` with ``configs/metadata.json`` and the MONAI configs ``inference.json``,
``train.json``, ``evaluate.json`` (an overlay on ``inference.json`` that adds the baselines),
``multi_gpu_train.json`` (an overlay on ``train.json``), optional ``quick.json`` (an overlay with the bundle's quick
setting) and ``logging.conf``; weights in ``models/`` with their sha256 in the metadata; a model card in
``docs/README.md``. Everything here runs the same configs that ``python -m monai.bundle run`` runs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "bundles_dir",
    "list_bundles",
    "bundle_configs",
    "run_workflow",
    "run_bundle",
    "evaluate_bundle",
    "check_metadata",
    "verify_bundle",
    "REQUIRED_METADATA_KEYS",
    "REQUIRED_INFERENCE_IDS",
]

#: keys MONAI documents for a bundle's ``metadata.json`` (checked offline: the schema download is not available)
REQUIRED_METADATA_KEYS: tuple[str, ...] = (
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
)
#: ids every inference config defines, so that ``--output_dir D`` etc. override them
REQUIRED_INFERENCE_IDS: tuple[str, ...] = ("bundle_root", "dataset_dir", "output_dir", "device", "datalist")


def bundles_dir() -> Path:
    """The folder of bundles: ``$MONAI_DIFFUSION_BUNDLES``, ``./bundles``, or ``bundles/`` beside the package."""
    if os.environ.get("MONAI_DIFFUSION_BUNDLES"):
        return Path(os.environ["MONAI_DIFFUSION_BUNDLES"])
    if (Path.cwd() / "bundles").is_dir():
        return Path.cwd() / "bundles"
    return Path(__file__).resolve().parents[2] / "bundles"


def list_bundles(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One entry per bundle folder: name, path, version, title, task, category and whether its weights are present."""
    root = Path(root) if root is not None else bundles_dir()
    out = []
    for meta in sorted(root.glob("*/configs/metadata.json")):
        folder = meta.parent.parent
        data = json.loads(meta.read_text())
        weights = data.get("weights", {})
        out.append(
            {
                "name": folder.name,
                "path": str(folder),
                "version": data.get("version"),
                "title": data.get("name"),
                "task": data.get("task"),
                "category": data.get("survey_category"),
                "weights": bool(weights) and all((folder / rel).is_file() for rel in weights),
            }
        )
    return out


def _bundle_path(name: str | os.PathLike) -> Path:
    path = Path(name)
    if (path / "configs" / "metadata.json").is_file():
        return path
    from monai_diffusion.bundle.weights import find_root

    try:
        return Path(find_root(str(name)))
    except FileNotFoundError:
        known = [b["name"] for b in list_bundles()]
        raise ValueError(f"no bundle {str(name)!r} in {bundles_dir()}; bundles there: {known}") from None


def bundle_configs(name: str | os.PathLike, kind: str = "inference", quick: bool = False) -> list[str]:
    """The config files of a run: ``inference`` / ``evaluate`` (inference + evaluate overlay) / ``train`` /
    ``multi_gpu_train`` (train + overlay), plus ``quick.json`` when ``quick``."""
    folder = _bundle_path(name) / "configs"
    files = {
        "inference": ["inference.json"],
        "evaluate": ["inference.json", "evaluate.json"],
        "train": ["train.json"],
        "multi_gpu_train": ["train.json", "multi_gpu_train.json"],
    }
    if kind not in files:
        raise ValueError(f"kind must be one of {sorted(files)}, got {kind!r}")
    names = files[kind] + (["quick.json"] if quick and (folder / "quick.json").is_file() else [])
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"bundle {folder.parent.name!r} has no {missing}")
    return [str(folder / n) for n in names]


def run_workflow(config_files: Sequence[str], meta_file: str, overrides: Mapping[str, Any] | None = None) -> list:
    """Run a MONAI ``ConfigWorkflow`` (initialize, run, finalize), as ``python -m monai.bundle run`` does."""
    import warnings

    from monai.bundle import ConfigWorkflow

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resolved to an importable callable.*")
        workflow = ConfigWorkflow(
            config_file=list(config_files), meta_file=meta_file, workflow_type=None, **dict(overrides or {})
        )
        workflow.initialize()
        try:
            return workflow.run()
        finally:
            workflow.finalize()


def run_bundle(
    name: str | os.PathLike, kind: str = "inference", quick: bool = False, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run one of a bundle's workflows; returns ``{"output_dir", "wall_s", "metrics"}`` (metrics when written)."""
    folder = _bundle_path(name)
    overrides = {"bundle_root": str(folder), **dict(overrides or {})}
    files = bundle_configs(folder, kind, quick)
    t0 = time.time()
    run_workflow(files, str(folder / "configs" / "metadata.json"), overrides)
    wall = time.time() - t0
    result: dict[str, Any] = {"bundle": folder.name, "kind": kind, "wall_s": wall}
    out = overrides.get("output_dir")
    if out is None:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        parser.read_config(files)
        parser.update(dict(overrides))
        out = parser.get_parsed_content("output_dir") if "output_dir" in parser else None
    if out is not None:
        result["output_dir"] = str(out)
        metrics = Path(out) / "metrics.json"
        if metrics.is_file():
            result["metrics"] = json.loads(metrics.read_text())
    return result


def evaluate_bundle(
    name: str | os.PathLike, quick: bool = False, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Run the bundle and its baselines on the same test split (``evaluate.json``) and return the metrics."""
    return run_bundle(name, "evaluate", quick, overrides)


def check_metadata(name: str | os.PathLike) -> list[str]:
    """Problems with a bundle's metadata and weights (empty when all is well).

    Checks MONAI's documented metadata keys, that the changelog has the current version, that
    ``network_data_format`` has ``inputs`` and ``outputs``, that every file in ``models/`` has a recorded sha256 that
    matches, and that every recorded file exists.
    """
    from monai_diffusion.bundle.weights import sha256_of

    folder = _bundle_path(name)
    meta = json.loads((folder / "configs" / "metadata.json").read_text())
    problems = [f"metadata.json: missing key {k!r}" for k in REQUIRED_METADATA_KEYS if k not in meta]
    if "version" in meta and meta["version"] not in meta.get("changelog", {}):
        problems.append(f"metadata.json: changelog has no entry for version {meta['version']!r}")
    fmt = meta.get("network_data_format", {})
    for part in ("inputs", "outputs"):
        if not fmt.get(part):
            problems.append(f"metadata.json: network_data_format has no {part!r}")
    recorded = meta.get("weights", {})
    models = folder / "models"
    present = (
        sorted(p.relative_to(folder).as_posix() for p in models.glob("*") if p.is_file()) if models.is_dir() else []
    )
    present = [p for p in present if not p.endswith((".md", ".gitkeep"))]
    for rel in present:
        if rel not in recorded:
            problems.append(f"{rel}: no sha256 recorded in metadata.json")
        elif sha256_of(folder / rel) != recorded[rel]["sha256"]:
            problems.append(f"{rel}: sha256 does not match metadata.json")
    for rel in recorded:
        if rel not in present:
            problems.append(f"{rel}: recorded in metadata.json but missing")
    return problems


def verify_bundle(name: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Metadata/weights checks, required inference ids, and ``monai.bundle.verify_net_in_out`` on ``network_def``.

    Inputs of ``network_data_format`` after the first (e.g. ``timesteps``, ``class_labels``) are passed as extra
    forward arguments: zeros of their dtype with one entry per batch item.

    Raises:
        ValueError: listing every problem found.
    """
    import torch
    from monai.bundle import ConfigParser, verify_net_in_out

    folder = _bundle_path(name)
    problems = check_metadata(folder)
    inference = folder / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(inference))
    problems += [f"inference.json: missing id {k!r}" for k in REQUIRED_INFERENCE_IDS if k not in parser]
    meta_file = folder / "configs" / "metadata.json"
    inputs = json.loads(meta_file.read_text())["network_data_format"]["inputs"]
    extra = {}
    for key, spec in list(inputs.items())[1:]:
        dtype = getattr(torch, spec.get("dtype", "float32"))
        extra[key] = torch.zeros(1, dtype=dtype, device=device)
    if not problems:
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(meta_file),
            config_file=str(inference),
            device=device,
            extra_forward_args=extra or None,
            bundle_root=str(folder),
        )
    if problems:
        raise ValueError(f"bundle {folder.name!r} failed verification:\n- " + "\n- ".join(problems))
    return {"bundle": folder.name, "checked": ["metadata", "weights sha256", "inference ids", "verify_net_in_out"]}
