"""Shared machinery of the MONAI bundles in ``bundles/``: weights with recorded hashes, the bundle CLI, the report.

Public API: :func:`find_root`, :func:`load_weights`, :func:`load_info`, :func:`check_hash`, :func:`export_weights`,
:func:`record_hashes`, :func:`sha256_of`, :class:`WeightsHashError`; the workflows are in :mod:`.runner`. Attributes
are imported on first use so that ``monai-diffusion --help`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    name: "weights"
    for name in (
        "WeightsHashError",
        "check_hash",
        "export_weights",
        "find_root",
        "load_info",
        "load_weights",
        "record_hashes",
        "sha256_of",
    )
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
