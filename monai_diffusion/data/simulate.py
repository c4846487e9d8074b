"""Synthetic subjects: the MNI152 template under a random smooth deformation, bias field, tissue-parameter and
scanner-parameter variation, optional synthetic lesions, and Rician noise; rendered as T1w, T2w, PD and FLAIR.

One integer ``subject_seed`` defines a subject. Randomness is split into four independent numpy streams spawned
from it (anatomy, intensity, noise, lesions), so the same subject rendered with and without lesions differs only
inside the lesion mask, and asking for fewer contrasts does not change the others.

Image model for contrast ``c`` at voxel ``x`` (all maps on the output grid):

``S_c(x) = B(x) [ (1 - a(x)) sum_k f_k(x) S_c(theta_k) + a(x) S_c(theta_lesion) ]`` (partial-volume model),
``I_c(x) = clip( | S_c(x) / s_c + sigma (n_1 + i n_2) |, 0, 1 ) * [label(x) > 0]`` (Rician magnitude),

with tissue fractions ``f_k`` (CSF, GM, WM) of the deformed template, bias field ``B``, lesion fraction ``a``
(zero outside the lesion mask), the signal equations of :mod:`monai_diffusion.data.mri_physics`, a per-subject
scale ``s_c`` = 99.5th percentile of the lesion-free noiseless signal inside the brain (so each contrast lies in
``[0, 1]`` with the brightest healthy tissue near 1) and noise level ``sigma`` relative to that scale.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from monai_diffusion.data.mri_physics import (
    CONTRASTS,
    LESION_PARAMETER_RANGES,
    SEQUENCE_RANGES,
    TISSUE_PARAMETERS,
    TISSUES,
    contrast_signal,
    csf_null_inversion_time,
)
from monai_diffusion.data.template import load_tissue_maps, smoothed_tissue_maps

__all__ = [
    "Grid",
    "make_grid",
    "subject_seed",
    "simulate_subject",
    "SIMULATION_RANGES",
    "TISSUE_JITTER",
    "NORMALISATION_PERCENTILE",
]

#: relative standard deviation of the per-subject log-normal jitter of each tissue's T1, T2 and PD
TISSUE_JITTER: float = 0.05
#: percentile (inside the brain, lesion-free, noiseless) that maps to intensity 1.0
NORMALISATION_PERCENTILE: float = 99.5
#: ranges of the per-subject random draws (uniform unless stated)
SIMULATION_RANGES: dict[str, tuple[float, float]] = {
    "rotation_deg": (-6.0, 6.0),  # per axis
    "scale": (0.92, 1.08),  # per axis
    "translation_mm": (-3.0, 3.0),  # per axis
    "deformation_mm": (1.5, 4.0),  # std of the smooth displacement per component
    "bias_std": (0.05, 0.15),  # std of the log bias field
    "noise_sigma": (0.01, 0.03),  # Rician sigma relative to the intensity scale
    "lesion_count": (1, 5),  # integers, inclusive
    "lesion_radius_mm": (3.0, 12.0),  # per semi-axis
    "lesion_strength": (0.8, 1.0),  # lesion fraction a inside the mask
}
_FOV_MARGIN = 1.2  # in-plane (and 3D) field of view = largest brain extent times this: room for the deformations
_Z_MARGIN = 1.35  # 2D: the slice stack covers the brain height times this (slices without brain are dropped)


@dataclass(frozen=True)
class Grid:
    """An axis-aligned output grid in template (RAS, mm) space.

    Attributes:
        shape: number of voxels along x, y, z.
        spacing: isotropic voxel size in mm.
        origin: world position (mm) of voxel ``(0, 0, 0)``.
    """

    shape: tuple[int, int, int]
    spacing: float
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world matrix (RAS, mm)."""
        aff = np.diag([self.spacing, self.spacing, self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    @property
    def centre(self) -> np.ndarray:
        """World position of the grid centre (mm)."""
        return np.asarray(self.origin) + self.spacing * (np.asarray(self.shape) - 1) / 2.0

    def world(self) -> np.ndarray:
        """World coordinates of every voxel, float64 array ``(3, *shape)``."""
        axes = [o + self.spacing * np.arange(n) for o, n in zip(self.origin, self.shape)]
        return np.stack(np.meshgrid(*axes, indexing="ij"))


@functools.lru_cache(maxsize=1)
def _brain_box() -> tuple[np.ndarray, np.ndarray]:
    """World (mm) lower and upper corners of the template brain."""
    fractions, affine = load_tissue_maps()
    idx = np.argwhere(fractions.sum(0) > 0)
    lo, hi = idx.min(0), idx.max(0)
    return (affine[:3, :3] @ lo + affine[:3, 3]), (affine[:3, :3] @ hi + affine[:3, 3])


def make_grid(dim: int, size: int) -> Grid:
    """The output grid of the data set.

    3D: a ``size^3`` cube covering the template brain's largest extent plus 20% (room for the random affine and
    deformation), isotropic voxels. 2D: ``size x size`` axial slices with the same in-plane coverage, stacked along
    z at the same spacing over the brain's height plus 35%; each slice that holds brain becomes one 2D image.

    Args:
        dim: 2 or 3.
        size: voxels per in-plane side (2D) or per side (3D), at least 8.

    Returns:
        The :class:`Grid`.

    Raises:
        ValueError: for another ``dim`` or a ``size`` below 8.
    """
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}.")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise ValueError(f"size must be an integer of at least 8 voxels, got {size!r}.")
    lo, hi = _brain_box()
    extent = hi - lo
    centre = (lo + hi) / 2.0
    if dim == 3:
        spacing = float(extent.max() * _FOV_MARGIN / size)
        shape = (int(size),) * 3
    else:
        spacing = float(extent[:2].max() * _FOV_MARGIN / size)
        nz = int(np.ceil(extent[2] * _Z_MARGIN / spacing))
        shape = (int(size), int(size), nz)
    origin = centre - spacing * (np.asarray(shape) - 1) / 2.0
    return Grid(
        shape=shape,
        spacing=round(spacing, 6),
        origin=(round(float(origin[0]), 6), round(float(origin[1]), 6), round(float(origin[2]), 6)),
    )


def subject_seed(seed: int, index: int) -> int:
    """The seed of subject ``index`` in a data set built with ``seed`` (a 32-bit integer, stable across runs).

    Args:
        seed: data-set seed (non-negative).
        index: subject index (non-negative).

    Returns:
        The subject seed.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}.")
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


@functools.lru_cache(maxsize=32)
def _upsampling_matrix(n_out: int, control: int) -> np.ndarray:
    """``(n_out, control)`` matrix of 1D cubic-spline upsampling (``scipy.ndimage.zoom``, order 3, grid mode)."""
    from scipy.ndimage import zoom

    eye = np.eye(control)
    cols = [zoom(eye[i], n_out / control, order=3, mode="nearest", grid_mode=True)[:n_out] for i in range(control)]
    out = np.stack(cols, 1)
    out.setflags(write=False)
    return out


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], control: int, std: float) -> np.ndarray:
    """A smooth random field: i.i.d. normal values on a ``control^3`` lattice, cubic-spline upsampled to ``shape``.

    The tensor-product spline is applied one axis at a time (three small matrix products), which is exact and far
    faster than a 3D ``zoom``.
    """
    coarse = rng.normal(0.0, std, size=(control,) * 3)
    mx, my, mz = (_upsampling_matrix(int(n), control) for n in shape)
    return np.einsum("ai,bj,ck,ijk->abc", mx, my, mz, coarse, optimize=True).astype(np.float32)


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _uniform(rng: np.random.Generator, key: str, n: int | None = None):
    lo, hi = SIMULATION_RANGES[key]
    return rng.uniform(lo, hi, size=n)


def _deformed_fractions(rng: np.random.Generator, grid: Grid) -> tuple[np.ndarray, dict]:
    """Tissue fractions of the template under a random affine + smooth displacement, sampled on ``grid``."""
    from scipy.ndimage import map_coordinates

    angles = _uniform(rng, "rotation_deg", 3)
    scales = _uniform(rng, "scale", 3)
    shift = _uniform(rng, "translation_mm", 3)
    amp = float(_uniform(rng, "deformation_mm"))
    disp = np.stack([_smooth_field(rng, grid.shape, 5, amp) for _ in range(3)])
    matrix = _rotation(angles) @ np.diag(scales)
    centre = grid.centre
    world = grid.world().reshape(3, -1)
    source = centre[:, None] + matrix @ (world - centre[:, None]) + shift[:, None] + disp.reshape(3, -1)
    _, t_affine = load_tissue_maps()
    index = np.linalg.inv(t_affine) @ np.vstack([source, np.ones((1, source.shape[1]))])
    maps = smoothed_tissue_maps(round(0.4 * grid.spacing, 1) if grid.spacing > 1.5 else 0.0)
    fractions = np.stack(
        [map_coordinates(m, index[:3], order=1, mode="constant", cval=0.0).reshape(grid.shape) for m in maps]
    ).astype(np.float32)
    params = {
        "rotation_deg": angles.round(4).tolist(),
        "scale": scales.round(4).tolist(),
        "translation_mm": shift.round(4).tolist(),
        "deformation_std_mm": round(amp, 4),
    }
    return fractions, params


def _draw_intensity(rng: np.random.Generator) -> tuple[dict, dict, float, float]:
    """Per-subject tissue parameters, scanner parameters, bias-field strength and noise level."""
    tissues = {}
    for tissue in TISSUES:
        base = TISSUE_PARAMETERS[tissue]
        jitter = np.exp(rng.normal(0.0, TISSUE_JITTER, size=3))
        tissues[tissue] = {
            k: round(float(base[k] * j), 4 if k == "pd" else 2) for k, j in zip(("t1", "t2", "pd"), jitter)
        }
    tissues["csf"]["pd"] = min(tissues["csf"]["pd"], 1.0)
    sequences = {}
    for contrast in CONTRASTS:
        ranges = SEQUENCE_RANGES[contrast]
        seq = {k: round(float(rng.uniform(*ranges[k])), 2) for k in ("tr", "te", "ti") if k in ranges}
        if contrast == "flair":
            seq["ti"] = round(csf_null_inversion_time(tissues["csf"]["t1"], seq["tr"]), 2)
        sequences[contrast] = seq
    bias_std = float(_uniform(rng, "bias_std"))
    noise = float(_uniform(rng, "noise_sigma"))
    return tissues, sequences, bias_std, noise


def _lesions(rng: np.random.Generator, grid: Grid, label: np.ndarray, wm_t1: float, wm_t2: float):
    """Random smooth lesions inside the parenchyma: returns lesion fraction map, per-voxel (t1, t2, pd), params."""
    shape = grid.shape
    strength = np.zeros(shape, np.float32)
    t1 = np.ones(shape, np.float32)  # placeholders outside lesions keep the signal equations well defined
    t2 = np.ones(shape, np.float32)
    pd = np.zeros(shape, np.float32)
    lo_count, hi_count = (int(v) for v in SIMULATION_RANGES["lesion_count"])
    count = int(rng.integers(lo_count, hi_count + 1))
    lumps = np.clip(_smooth_field(rng, shape, 6, 0.35), -0.6, 0.6)  # boundary irregularity shared by the lesions
    parenchyma = label >= 2
    wm = np.argwhere(label == 3)
    candidates = wm if len(wm) else np.argwhere(parenchyma)
    world = grid.world()
    info = []
    for _ in range(count):
        radii = np.maximum(_uniform(rng, "lesion_radius_mm", 3), 0.75 * grid.spacing)
        rot = _rotation(rng.uniform(-180.0, 180.0, size=3))
        a = float(_uniform(rng, "lesion_strength"))
        lo_t1, hi_t1 = LESION_PARAMETER_RANGES["t1_factor"]
        lo_t2, hi_t2 = LESION_PARAMETER_RANGES["t2_factor"]
        params = {
            "t1": round(float(wm_t1 * rng.uniform(lo_t1, hi_t1)), 2),
            "t2": round(float(wm_t2 * rng.uniform(lo_t2, hi_t2)), 2),
            "pd": round(float(rng.uniform(*LESION_PARAMETER_RANGES["pd"])), 4),
        }
        pick = int(rng.integers(0, max(len(candidates), 1)))
        if not len(candidates):
            continue
        centre_idx = candidates[pick]
        centre = world[(slice(None), *centre_idx)]
        local = np.einsum("ij,j...->i...", rot.T, world - centre.reshape(3, 1, 1, 1)) / radii.reshape(3, 1, 1, 1)
        dist = np.sqrt((local**2).sum(0)) * (1.0 + lumps)  # lumps are clipped to [-0.6, 0.6]: stays positive
        inside = (dist < 1.0) & parenchyma
        inside[tuple(centre_idx)] = True  # every lesion covers at least its centre voxel
        strength[inside] = a
        t1[inside], t2[inside], pd[inside] = params["t1"], params["t2"], params["pd"]
        info.append(
            {
                "centre_mm": centre.round(2).tolist(),
                "radii_mm": radii.round(2).tolist(),
                "strength": round(a, 4),
                **params,
            }
        )
    return strength, (t1, t2, pd), info


def simulate_subject(
    seed: int, grid: Grid, lesions: bool, contrasts: Sequence[str] = CONTRASTS, clean: bool = False
) -> dict[str, Any]:
    """Render one synthetic subject on ``grid`` (see the module docstring for the image model).

    Args:
        seed: the subject seed (e.g. from :func:`subject_seed`); it alone defines the subject.
        grid: the output grid (:func:`make_grid`).
        lesions: insert the subject's synthetic lesions; ``False`` renders the same subject healthy.
        contrasts: which of :data:`~monai_diffusion.data.mri_physics.CONTRASTS` to render.
        clean: also return the noiseless rendering of each contrast as ``"<contrast>_clean"`` (the same image
            model without the Rician noise: ``clip(S_c / s_c, 0, 1)`` inside the brain), the exact target for
            denoising. It draws nothing, so the other outputs do not change.

    Returns:
        ``{contrast: float32 image in [0, 1]}`` for each requested contrast (and ``"<contrast>_clean"`` with
        ``clean``), plus ``"label"`` (uint8 tissue labels,
        0 background, 1 CSF, 2 GM, 3 WM), ``"lesion"`` (uint8 exact lesion mask, all zero when ``lesions`` is
        False) and ``"params"`` (JSON-serialisable simulation parameters), all arrays of ``grid.shape``.

    Raises:
        ValueError: for an unknown contrast.
    """
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown or not len(contrasts):
        raise ValueError(f"contrasts must be a non-empty subset of {list(CONTRASTS)}, got {list(contrasts)}.")
    anatomy_rng, intensity_rng, noise_rng, lesion_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(4)
    )
    fractions, geometry = _deformed_fractions(anatomy_rng, grid)
    total = fractions.sum(0)
    label = np.where(total >= 0.5, fractions.argmax(0) + 1, 0).astype(np.uint8)
    brain = label > 0

    tissues, sequences, bias_std, noise_sigma = _draw_intensity(intensity_rng)
    bias = np.exp(_smooth_field(intensity_rng, grid.shape, 4, bias_std)).astype(np.float32)

    if lesions:  # the lesion stream is independent, so skipping it leaves everything else unchanged
        strength, (l_t1, l_t2, l_pd), lesion_info = _lesions(
            lesion_rng, grid, label, tissues["wm"]["t1"], tissues["wm"]["t2"]
        )
    else:
        strength, lesion_info = np.zeros(grid.shape, np.float32), []
    mask = strength > 0

    out: dict[str, Any] = {}
    scales = {}
    for contrast in CONTRASTS:  # always draw the noise of every contrast so that streams do not depend on the choice
        n_re = noise_rng.standard_normal(grid.shape, dtype=np.float32)
        n_im = noise_rng.standard_normal(grid.shape, dtype=np.float32)
        if contrast not in contrasts:
            continue
        seq = sequences[contrast]
        tissue_signal = [float(contrast_signal(contrast, tissues[t], seq)) for t in TISSUES]
        healthy = bias * np.tensordot(np.asarray(tissue_signal, np.float32), fractions, axes=1)
        scale = float(np.percentile(healthy[brain], NORMALISATION_PERCENTILE)) if brain.any() else 1.0
        scale = scale if scale > 0 else 1.0
        signal = healthy
        if mask.any():
            lesion_signal = bias * contrast_signal(contrast, {"t1": l_t1, "t2": l_t2, "pd": l_pd}, seq)
            signal = np.where(mask, (1.0 - strength) * healthy + strength * lesion_signal, healthy)
        image = np.abs((signal / scale + noise_sigma * n_re) + 1j * (noise_sigma * n_im))
        out[contrast] = (np.clip(image, 0.0, 1.0) * brain).astype(np.float32)
        if clean:
            out[f"{contrast}_clean"] = (np.clip(signal / scale, 0.0, 1.0) * brain).astype(np.float32)
        scales[contrast] = round(scale, 6)

    out["label"] = label
    out["lesion"] = mask.astype(np.uint8)
    out["params"] = {
        "subject_seed": int(seed),
        **geometry,
        "bias_std": round(bias_std, 4),
        "noise_sigma": round(noise_sigma, 4),
        "tissues": tissues,
        "sequences": {c: sequences[c] for c in contrasts},
        "intensity_scale": scales,
        "lesions": lesion_info,
    }
    return out
