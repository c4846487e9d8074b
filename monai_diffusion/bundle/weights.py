"""Bundle weights: where a bundle lives, sha256 hashes recorded in ``metadata.json``, checked loading, export.

Every weights file under ``bundles/<name>/models/`` has its sha256 in ``configs/metadata.json`` under
``"weights": {"models/<file>": {"sha256": ...}}``. :func:`load_weights` refuses a file whose hash does not match,
naming the file, and loads with ``torch.load(weights_only=True)``. :func:`export_weights` writes the files at the
end of a training run and records their hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "find_root",
    "sha256_of",
    "check_hash",
    "load_weights",
    "load_info",
    "export_weights",
    "record_hashes",
    "WeightsHashError",
]


class WeightsHashError(ValueError):
    """A weights file whose sha256 differs from the one recorded in the bundle's metadata."""


def find_root(name: str) -> str:
    """The folder of bundle ``name``: ``$MONAI_DIFFUSION_BUNDLES/<name>``, ``./bundles/<name>``, ``.`` if it is the
    bundle itself, or ``bundles/<name>`` next to the installed (editable) package.

    Raises:
        FileNotFoundError: when none of these holds ``configs/metadata.json``.
    """
    candidates = []
    if os.environ.get("MONAI_DIFFUSION_BUNDLES"):
        candidates.append(Path(os.environ["MONAI_DIFFUSION_BUNDLES"]) / name)
    candidates += [Path.cwd() / "bundles" / name, Path.cwd(), Path(__file__).resolve().parents[2] / "bundles" / name]
    for path in candidates:
        if (path / "configs" / "metadata.json").is_file() and (path.name == name):
            return str(path)
    raise FileNotFoundError(
        f"bundle {name!r} not found in {[str(c) for c in candidates]}; pass --bundle_root or set MONAI_DIFFUSION_BUNDLES"
    )


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_hash(bundle_root: Path, rel: str) -> str | None:
    meta = bundle_root / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    entry = json.loads(meta.read_text()).get("weights", {}).get(rel)
    return None if entry is None else str(entry["sha256"])


def check_hash(path: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> Path:
    """Check a bundle file's sha256 against ``configs/metadata.json`` (``bundle_root`` default: ``path``'s
    grandparent, i.e. ``<bundle>/models/<file>``) and return its path.

    Raises:
        FileNotFoundError: missing file.
        WeightsHashError: hash missing from the metadata or different.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found; train the bundle first (configs/train.json)")
    root = Path(bundle_root) if bundle_root is not None else path.resolve().parent.parent
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    expected = _recorded_hash(root, rel)
    if expected is None:
        raise WeightsHashError(f"{path}: no sha256 recorded for {rel!r} in {root / 'configs' / 'metadata.json'}")
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsHashError(
            f"{path}: sha256 {actual} does not match {expected} recorded in the bundle metadata; the file is "
            "corrupt or was replaced: retrain, or restore it from the repository"
        )
    return path


def load_info(path: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> dict:
    """Read a bundle's JSON side file (e.g. ``models/model_info.json``) after checking its hash."""
    return json.loads(check_hash(path, bundle_root).read_text())


def load_weights(
    network: nn.Module | None,
    path: str | os.PathLike,
    bundle_root: str | os.PathLike | None = None,
    key: str | None = None,
    strict: bool = True,
    verify: bool = True,
) -> Any:
    """Load a state dict (``weights_only=True``) after checking its sha256 against the bundle metadata.

    Args:
        network: module to load into (returned); ``None`` returns the loaded object itself.
        path: the weights file.
        bundle_root: the bundle folder whose ``configs/metadata.json`` records the hash (default: two levels above
            ``path``, i.e. ``<bundle>/models/<file>``).
        key: load ``obj[key]`` (a file holding several state dicts).
        strict: as for ``load_state_dict``.
        verify: refuse a file whose hash is missing from or differs from the metadata.

    Raises:
        FileNotFoundError: missing file.
        WeightsHashError: hash missing or different.
    """
    path = Path(path)
    if verify:
        check_hash(path, bundle_root)
    elif not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} not found; train the bundle first (configs/train.json)")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if key is not None:
        obj = obj[key]
    if network is None:
        return obj
    network.load_state_dict(obj, strict=strict)
    return network


def record_hashes(bundle_root: str | os.PathLike, files: list[str | os.PathLike]) -> dict[str, str]:
    """Write the sha256 of ``files`` (inside the bundle) into ``configs/metadata.json`` ``"weights"``."""
    root = Path(bundle_root)
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    weights = meta.setdefault("weights", {})
    out = {}
    for f in files:
        rel = Path(f).resolve().relative_to(root.resolve()).as_posix()
        out[rel] = weights.setdefault(rel, {})["sha256"] = sha256_of(f)
    meta_path.write_text(json.dumps(meta, indent=4) + "\n")
    return out


def export_weights(
    bundle_root: str | os.PathLike, modules: Mapping[str, nn.Module | Mapping[str, Any]], extra: Mapping | None = None
) -> dict[str, str]:
    """Save ``{file name: module or state dict}`` under ``<bundle>/models/`` and record their hashes.

    Args:
        bundle_root: the bundle folder.
        modules: e.g. ``{"model.pt": ema.averaged, "autoencoder.pt": autoencoder}``.
        extra: optional JSON-serialisable values saved to ``models/model_info.json`` (e.g. the latent scale factor).

    Returns:
        ``{relative path: sha256}`` of the written files.
    """
    models = Path(bundle_root) / "models"
    models.mkdir(parents=True, exist_ok=True)
    files: list[str | os.PathLike] = []
    for name, module in modules.items():
        state = module.state_dict() if isinstance(module, nn.Module) else dict(module)
        state = {k: v.detach().cpu().contiguous() if torch.is_tensor(v) else v for k, v in state.items()}
        for k, v in state.items():
            if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all():
                raise ValueError(f"refusing to export {name}: tensor {k!r} has non-finite values")
        torch.save(state, models / name)
        files.append(models / name)
    if extra is not None:
        info = models / "model_info.json"
        info.write_text(json.dumps(dict(extra), indent=2, sort_keys=True) + "\n")
        files.append(info)
    return record_hashes(bundle_root, files)
