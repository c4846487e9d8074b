"""The embedded offline data set: synthetic multi-contrast brain MRI simulated from the MNI152 template.

See ``docs/data.md``. Public API: :func:`prepare_dataset`, :class:`BrainSimDataset`, :func:`load_datalist`,
:func:`load_transforms`, :func:`load_arrays`, :func:`synthetic_batch` (tensors without files),
:func:`simulate_subject`, :func:`make_grid`. Attributes are imported on first use so that
``monai-diffusion --help`` does not pay for importing MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "prepare_dataset": "brain_sim",
    "BrainSimDataset": "brain_sim",
    "load_datalist": "brain_sim",
    "load_transforms": "brain_sim",
    "assign_subjects": "brain_sim",
    "SECTIONS": "brain_sim",
    "LABELS": "brain_sim",
    "LESION_SHARE": "brain_sim",
    "SPLIT_FRACTIONS": "brain_sim",
    "simulate_subject": "simulate",
    "subject_seed": "simulate",
    "make_grid": "simulate",
    "Grid": "simulate",
    "CONTRASTS": "mri_physics",
    "TISSUE_PARAMETERS": "mri_physics",
    "write_preview": "preview",
    "synthetic_batch": "arrays",
    "load_arrays": "arrays",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
