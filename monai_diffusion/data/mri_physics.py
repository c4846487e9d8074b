"""MR signal equations and tissue relaxation parameters used by the embedded brain data set.

The signal model is the classic closed-form steady-state magnitude of a spin-echo (SE) and an
inversion-recovery spin-echo (IR-SE) sequence, assuming ``TE << TR`` and perfect refocusing pulses
(e.g. Haacke et al., *Magnetic Resonance Imaging: Physical Principles and Sequence Design*, 1999, ch. 8 and 15;
Bernstein, King & Zhou, *Handbook of MRI Pulse Sequences*, 2004, sec. 14.1-14.2):

- spin echo (eq. SE):            ``S = PD * (1 - exp(-TR / T1)) * exp(-TE / T2)``
- inversion recovery (eq. IR):   ``S = PD * |1 - 2 exp(-TI / T1) + exp(-TR / T1)| * exp(-TE / T2)``

Partial volume is modelled linearly: a voxel holding tissue fractions ``f_k`` has signal ``sum_k f_k S_k``.
Everything here is a small pure numpy function so that the maths can be tested on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "CONTRASTS",
    "TISSUES",
    "TISSUE_PARAMETERS",
    "LESION_PARAMETER_RANGES",
    "SEQUENCE_RANGES",
    "spin_echo",
    "inversion_recovery",
    "csf_null_inversion_time",
    "contrast_signal",
]

#: contrasts the simulator can produce, in the order they are written and shown
CONTRASTS: tuple[str, ...] = ("t1w", "t2w", "pd", "flair")

#: tissue classes in label order (label value = index + 1; 0 is background)
TISSUES: tuple[str, ...] = ("csf", "gm", "wm")

#: mean tissue parameters at 3 T: T1 and T2 in ms, PD as water content relative to CSF.
#: GM/WM T1 and T2 rounded from Wansapura et al., "NMR relaxation times in the human brain at 3.0 tesla",
#: JMRI 9:531-538 (1999); CSF is close to pure water (T1 about 4.2-4.5 s, T2 about 2 s); PD from the water
#: content reported by Neeb, Zilles & Shah, NeuroImage 29:910-922 (2006). Each subject draws its own values
#: around these (see ``TISSUE_JITTER`` in :mod:`monai_diffusion.data.simulate`).
TISSUE_PARAMETERS: dict[str, dict[str, float]] = {
    "csf": {"t1": 4300.0, "t2": 2000.0, "pd": 1.00},
    "gm": {"t1": 1330.0, "t2": 110.0, "pd": 0.80},
    "wm": {"t1": 830.0, "t2": 80.0, "pd": 0.69},
}

#: synthetic lesion parameters, drawn per lesion as multiples of the subject's white-matter values (T1, T2) and
#: as an absolute PD. Chosen to mimic T2/FLAIR-hyperintense, T1-hypointense white-matter lesions (demyelination,
#: oedema); they are not taken from one study.
LESION_PARAMETER_RANGES: dict[str, tuple[float, float]] = {
    "t1_factor": (1.5, 2.0),
    "t2_factor": (1.8, 2.8),
    "pd": (0.78, 0.88),
}

#: per-subject scanner parameters (ms), drawn uniformly from these ranges; the TI of FLAIR is not drawn but set to
#: null the subject's CSF. T1w is an inversion-recovery sequence (T1-FLAIR / MPRAGE-like): a T1w spin echo at
#: 3 T gives almost no grey/white contrast with these tissue values.
SEQUENCE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "t1w": {"tr": (1800.0, 2400.0), "te": (8.0, 15.0), "ti": (850.0, 1000.0)},
    "t2w": {"tr": (4000.0, 6500.0), "te": (80.0, 110.0)},
    "pd": {"tr": (3000.0, 5000.0), "te": (8.0, 20.0)},
    "flair": {"tr": (8000.0, 11000.0), "te": (80.0, 130.0)},
}


def _check_positive(name: str, value: np.ndarray | float) -> None:
    if np.any(np.asarray(value) <= 0):
        raise ValueError(f"{name} must be positive (times in ms), got a minimum of {float(np.min(value))}.")


def spin_echo(pd: np.ndarray | float, t1: np.ndarray | float, t2: np.ndarray | float, tr: float, te: float):
    """Spin-echo magnitude ``PD (1 - exp(-TR/T1)) exp(-TE/T2)`` (eq. SE in the module docstring).

    Args:
        pd: proton density (relative water content), any shape.
        t1: longitudinal relaxation time in ms, broadcastable with ``pd``.
        t2: transverse relaxation time in ms, broadcastable with ``pd``.
        tr: repetition time in ms.
        te: echo time in ms.

    Returns:
        The signal, broadcast shape of the inputs.

    Raises:
        ValueError: if a time is not positive.
    """
    for name, value in (("t1", t1), ("t2", t2), ("tr", tr), ("te", te)):
        _check_positive(name, value)
    return np.asarray(pd) * (1.0 - np.exp(-tr / np.asarray(t1))) * np.exp(-te / np.asarray(t2))


def inversion_recovery(
    pd: np.ndarray | float, t1: np.ndarray | float, t2: np.ndarray | float, tr: float, te: float, ti: float
):
    """Inversion-recovery spin-echo magnitude ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)`` (eq. IR).

    Args:
        pd: proton density, any shape.
        t1: T1 in ms, broadcastable with ``pd``.
        t2: T2 in ms, broadcastable with ``pd``.
        tr: repetition time in ms.
        te: echo time in ms.
        ti: inversion time in ms.

    Returns:
        The magnitude signal.

    Raises:
        ValueError: if a time is not positive.
    """
    for name, value in (("t1", t1), ("t2", t2), ("tr", tr), ("te", te), ("ti", ti)):
        _check_positive(name, value)
    t1 = np.asarray(t1)
    mz = 1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)
    return np.asarray(pd) * np.abs(mz) * np.exp(-te / np.asarray(t2))


def csf_null_inversion_time(t1: float, tr: float) -> float:
    """Inversion time nulling a tissue with longitudinal relaxation ``t1`` in eq. IR.

    ``TI = T1 ln(2 / (1 + exp(-TR / T1)))``, the root of ``1 - 2 exp(-TI/T1) + exp(-TR/T1)``.

    Args:
        t1: T1 of the tissue to null (CSF for FLAIR), ms.
        tr: repetition time, ms.

    Returns:
        The inversion time in ms.
    """
    _check_positive("t1", t1)
    _check_positive("tr", tr)
    return float(t1 * np.log(2.0 / (1.0 + np.exp(-tr / t1))))


def contrast_signal(contrast: str, tissue: Mapping[str, np.ndarray | float], sequence: Mapping[str, float]):
    """Signal of one contrast for ``tissue = {"pd", "t1", "t2"}`` and ``sequence = {"tr", "te"[, "ti"]}``.

    ``t2w`` and ``pd`` use eq. SE; ``t1w`` and ``flair`` use eq. IR (they need ``ti``).

    Args:
        contrast: one of :data:`CONTRASTS`.
        tissue: mapping with ``pd``, ``t1``, ``t2`` (scalars or arrays).
        sequence: mapping with ``tr``, ``te`` and, for FLAIR, ``ti`` (ms).

    Returns:
        The signal.

    Raises:
        ValueError: for an unknown contrast or a missing sequence parameter.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {list(CONTRASTS)}.")
    try:
        if contrast in ("t1w", "flair"):
            return inversion_recovery(
                tissue["pd"], tissue["t1"], tissue["t2"], sequence["tr"], sequence["te"], sequence["ti"]
            )
        return spin_echo(tissue["pd"], tissue["t1"], tissue["t2"], sequence["tr"], sequence["te"])
    except KeyError as err:
        raise ValueError(f"missing parameter {err} for contrast {contrast!r}.") from None
