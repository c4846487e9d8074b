"""The real anatomy behind the embedded data set: the MNI152 2009a template shipped inside nilearn.

Only three files are read, all installed by ``pip install nilearn`` (no download):
``mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz`` (Fonov et al., NeuroImage 54:313-327, 2011;
197 x 233 x 189 voxels at 1 mm, RAS). The template is skull-stripped, so ``T1 > 0`` is the brain mask.

Tissue fractions. GM and WM are the template's probability maps. CSF is, as a first step, the brain mask minus
GM minus WM. That residual also holds deep structures the GM/WM maps leave out (brain stem, parts of the
cerebellum), which would come out CSF-bright on T2w; so the residual is split with the T1 template itself using a
linear partial-volume model ``T1 = sum_k f_k mu_k`` with the template's median intensity ``mu_k`` of each pure
tissue: the part of the residual whose intensity is CSF-like stays CSF, the rest goes to GM or WM according to
its intensity. About 14% of the residual moves. The three fractions sum to the brain mask.
"""

from __future__ import annotations

import functools
import os

import numpy as np

__all__ = ["template_files", "load_tissue_maps", "smoothed_tissue_maps", "TEMPLATE_INTENSITY"]

#: median T1-template intensity (0-1 scale) of voxels whose GM, WM or residual-CSF fraction exceeds 0.9,
#: measured once on the nilearn file; used to split the residual (see module docstring)
TEMPLATE_INTENSITY: dict[str, float] = {"csf": 0.27, "gm": 0.65, "wm": 0.87}


def template_files() -> dict[str, str]:
    """Paths of the MNI152 2009a T1, GM and WM files inside the installed nilearn package.

    Returns:
        ``{"t1": path, "gm": path, "wm": path}``.

    Raises:
        FileNotFoundError: if nilearn is not installed or does not ship the files.
    """
    try:
        import nilearn.datasets
    except ImportError as err:  # pragma: no cover - nilearn is a runtime dependency
        raise FileNotFoundError("the embedded data set needs nilearn (pip install nilearn): " + str(err)) from err
    folder = os.path.join(os.path.dirname(nilearn.datasets.__file__), "data")
    files = {k: os.path.join(folder, f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz") for k in ("t1", "gm", "wm")}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"nilearn does not ship the MNI152 2009a files {missing}; reinstall nilearn>=0.10.")
    return files


@functools.lru_cache(maxsize=1)
def load_tissue_maps() -> tuple[np.ndarray, np.ndarray]:
    """Load the template once per process and return its tissue fractions and affine.

    Returns:
        ``(fractions, affine)``: ``fractions`` is float32 ``(3, X, Y, Z)`` holding CSF, GM and WM fractions in
        ``[0, 1]`` that sum to the brain mask, cropped to the brain's bounding box (about 145 x 181 x 155 voxels);
        ``affine`` is the matching 4x4 voxel-to-mm (RAS) matrix.
        Treat both as read-only (they are cached).
    """
    import nibabel as nib

    files = template_files()
    imgs = {k: nib.nifti1.load(p) for k, p in files.items()}
    raw = {k: np.asarray(imgs[k].dataobj) for k in ("t1", "gm", "wm")}
    # crop to the brain's bounding box (everything outside is zero): halves the work of every later step
    nonzero = np.argwhere(raw["t1"] > 0)
    lo, hi = nonzero.min(0), nonzero.max(0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    t1, gm, wm = (raw[k][box].astype(np.float32) / np.float32(255.0) for k in ("t1", "gm", "wm"))
    mask = (t1 > 0).astype(np.float32)
    gm, wm = gm * mask, wm * mask
    residual = np.clip(mask - gm - wm, 0.0, 1.0)
    mu = TEMPLATE_INTENSITY
    # mean intensity of the residual part of each voxel under the linear partial-volume model
    q = np.where(residual > 0.02, (t1 - mu["gm"] * gm - mu["wm"] * wm) / np.maximum(residual, 0.02), mu["csf"])
    csf_share = np.clip((mu["gm"] - q) / (mu["gm"] - mu["csf"]), 0.0, 1.0)
    wm_share = np.clip((q - mu["gm"]) / (mu["wm"] - mu["gm"]), 0.0, 1.0)
    csf = residual * csf_share
    gm = gm + residual * (1.0 - csf_share) * (1.0 - wm_share)
    wm = wm + residual * (1.0 - csf_share) * wm_share
    fractions = np.stack([csf, gm, wm]).astype(np.float32)
    fractions.setflags(write=False)
    affine = np.asarray(imgs["t1"].affine, dtype=np.float64).copy()
    affine[:3, 3] += affine[:3, :3] @ lo  # voxel (0, 0, 0) of the cropped arrays
    affine.setflags(write=False)
    return fractions, affine


@functools.lru_cache(maxsize=4)
def smoothed_tissue_maps(sigma_mm: float) -> np.ndarray:
    """Tissue fractions low-pass filtered with a Gaussian of ``sigma_mm`` (anti-aliasing before resampling).

    Args:
        sigma_mm: standard deviation in mm (the template has 1 mm voxels); ``0`` returns the raw maps.

    Returns:
        Read-only float32 array ``(3, X, Y, Z)``; cached per ``sigma_mm``.
    """
    from scipy.ndimage import gaussian_filter

    fractions, _ = load_tissue_maps()
    if sigma_mm <= 0:
        return fractions
    out = np.stack([gaussian_filter(f, sigma=float(sigma_mm), mode="constant") for f in fractions])
    out.setflags(write=False)
    return out
