"""Multi-octave simplex noise for partial noising of images in diffusion-based anomaly detection (AnoDDPM).

**Simplex noise** (Perlin 2001) is a gradient noise: space is tiled by simplices (triangles in 2D, tetrahedra
in 3D), every lattice vertex gets a pseudo-random unit gradient ``g`` from a hashed permutation table, and the
value at a point ``x`` is a sum over the ``d + 1`` corners of the simplex containing ``x`` of radially
attenuated ramps::

    n(x) = s * sum_k max(0, r^2 - |x - v_k|^2)^4 * <g_k, x - v_k>.

The simplex is found by *skewing* the input (``x' = x + F sum(x)``, ``F = (sqrt(d + 1) - 1) / d``), which maps
the simplex lattice onto the integer lattice, flooring, and ranking the fractional coordinates: walking from
the cell's origin one unit along the axes in decreasing order of their fractional part visits the corners of
the simplex; *unskewing* (``G = (1 - 1 / sqrt(d + 1)) / d``) brings them back (Gustavson 2005). Here
``r^2 = 0.5`` in 2D and 3D, so every kernel vanishes before it leaves the simplices around its vertex and the
noise is continuous (with continuous first derivatives), is exactly zero at lattice vertices, and ``s`` is
chosen so that ``|n| <= 1`` everywhere (``s = 1 / sup_x sum_k max(0, r^2 - |x - v_k|^2)^4 |x - v_k|``, an
upper bound over all gradient choices). Features have the size of one lattice cell, so the noise is
band-limited around its lattice frequency, unlike white noise whose power is spread over all frequencies.

**Fractal (multi-octave) noise** sums octaves ``k = 0 .. octaves - 1`` with frequency ``frequency * 2**k``
(lattice cells per pixel, i.e. cycles per pixel) and amplitude ``persistence**k``.

**Why AnoDDPM uses it** (Wyatt et al. 2022): anomaly detection by *partial diffusion* noises a test image to
an intermediate step and lets a model trained on healthy images denoise it back; the anomaly map is the
residual. With i.i.d. Gaussian noise the destroyed information is mostly high-frequency, so a large lesion
survives the noising and is faithfully "reconstructed" rather than healed. Low-frequency simplex noise
corrupts structures at the scale of lesions, so the model must replace them with healthy anatomy. The model is
trained and sampled with this noise in place of ``torch.randn``; :func:`simplex_noise` therefore standardises
each field to zero mean and unit variance so that it can be passed as ``noise`` to ``scheduler.add_noise``.
AnoDDPM's setting is 6 octaves, starting frequency ``2**-6`` and persistence 0.8 (the defaults here).

References:
    - K. Perlin, "Noise hardware", in *Real-Time Shading*, SIGGRAPH 2001 course notes (simplex noise).
    - S. Gustavson, "Simplex noise demystified", Linköping University technical report, 2005.
    - J. Wyatt, A. Leach, S. M. Schmon, C. G. Willcocks, "AnoDDPM: Anomaly Detection with Denoising Diffusion
      Probabilistic Models using Simplex Noise", CVPR Workshops (NTIRE), 2022.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import torch

__all__ = ["simplex_noise", "simplex_2d", "simplex_3d", "SimplexNoise"]

#: size of the permutation table; the hash, hence the noise, is periodic with this many lattice cells
TABLE_SIZE = 256
#: squared kernel radius; 0.5 keeps every kernel inside the simplices around its vertex in 2D and 3D
_R2 = 0.5
#: 1 / sup_x sum_k max(0, r^2 - |x - v_k|^2)^4 |x - v_k| (2D: exactly 81 sqrt(6) / 2 = 99.204..., reached at an
#: edge midpoint; 3D: 107.653..., found numerically), rounded down so that ``|n| <= 1`` holds for any gradients
_SCALE = {2: 99.2, 3: 107.6}
#: points per chunk (times fields) evaluated at once, bounds the memory of large 3D volumes
_CHUNK = 1 << 20


def _gradients(dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Unit gradient vectors, ``(16, dim)``: 16 evenly spaced directions in 2D; in 3D the 12 cube-edge midpoint
    directions plus four of them repeated (Perlin's choice; the repeated four sum to zero, so no mean bias)."""
    if dim == 2:
        angles = torch.arange(16, dtype=torch.float64) * (2 * math.pi / 16)
        g = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    else:
        edges = [(1, 1, 0), (-1, 1, 0), (1, -1, 0), (-1, -1, 0), (1, 0, 1), (-1, 0, 1), (1, 0, -1), (-1, 0, -1)]
        edges += [(0, 1, 1), (0, -1, 1), (0, 1, -1), (0, -1, -1), (1, 1, 0), (-1, 1, 0), (0, -1, 1), (0, -1, -1)]
        g = torch.tensor(edges, dtype=torch.float64) / math.sqrt(2.0)
    return g.to(device=device, dtype=dtype)


def _hash(lattice: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Hash integer lattice points ``(N, P, d)`` with per-field permutation tables ``(N, TABLE_SIZE)`` to
    ``(N, P)`` values in ``[0, TABLE_SIZE)``: nested look-ups ``perm[x_0 + perm[x_1 + ...]]``."""
    n, p, d = lattice.shape
    mask = TABLE_SIZE - 1
    h = torch.zeros((n, p), dtype=torch.long, device=lattice.device)
    for axis in range(d - 1, -1, -1):
        h = torch.gather(perm, 1, (lattice[..., axis] + h) & mask)
    return h


def _simplex(points: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Single-octave simplex noise at ``points`` ``(N, P, d)`` (float64) with tables ``perm`` ``(N, TABLE_SIZE)``."""
    d = points.shape[-1]
    skew = (math.sqrt(d + 1) - 1) / d
    unskew = (1 - 1 / math.sqrt(d + 1)) / d
    cell = torch.floor(points + points.sum(-1, keepdim=True) * skew)
    local = points - (cell - cell.sum(-1, keepdim=True) * unskew)  # position relative to the cell origin
    lattice = cell.long()
    # rank of each fractional coordinate (0 = largest; ties broken by axis index): corner k of the simplex is the
    # cell origin plus ones on the k axes of largest rank
    larger = local.unsqueeze(-2) > local.unsqueeze(-1)  # [..., j, m]: coordinate m exceeds coordinate j
    earlier = torch.ones(d, d, dtype=torch.bool, device=points.device).tril(-1)  # [j, m]: m < j
    tie = (local.unsqueeze(-2) == local.unsqueeze(-1)) & earlier
    rank = (larger | tie).sum(-1)
    grads = _gradients(d, points.dtype, points.device)
    out = torch.zeros(points.shape[:-1], dtype=points.dtype, device=points.device)
    for k in range(d + 1):
        step = (rank < k).long()
        offset = local - step + k * unskew
        t = (_R2 - (offset * offset).sum(-1)).clamp_min(0)
        g = grads[_hash(lattice + step, perm) % grads.shape[0]]
        out = out + t.pow(4) * (g * offset).sum(-1)
    return out * _SCALE[d]


def _batched(points: torch.Tensor, perm: torch.Tensor, dim: int) -> torch.Tensor:
    if points.shape[-1] != dim:
        raise ValueError(f"points must have shape (..., {dim}), got {tuple(points.shape)}")
    perm = torch.as_tensor(perm, device=points.device).long()
    if perm.shape[-1] != TABLE_SIZE or perm.ndim not in (1, 2):
        raise ValueError(f"perm must have shape ({TABLE_SIZE},) or (N, {TABLE_SIZE}), got {tuple(perm.shape)}")
    pts = points.to(torch.float64)
    if perm.ndim == 1:
        values = _simplex(pts.reshape(1, -1, dim), perm[None])
    else:
        if pts.ndim < 2 or pts.shape[0] != perm.shape[0]:
            raise ValueError(f"with perm of shape {tuple(perm.shape)}, points must have shape (N, ..., {dim})")
        values = _simplex(pts.reshape(pts.shape[0], -1, dim), perm)
    return values.reshape(points.shape[:-1]).to(points.dtype if points.is_floating_point() else torch.float64)


def simplex_2d(points: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Single-octave 2D simplex noise, in ``[-1, 1]``, continuous, zero at the lattice vertices.

    Args:
        points: coordinates in lattice units, shape ``(..., 2)``.
        perm: a permutation of ``range(256)`` (the random field), shape ``(256,)``; or ``(N, 256)``, one table
            per leading index of ``points`` (then ``points`` is ``(N, ..., 2)``).

    Returns:
        Noise of shape ``points.shape[:-1]`` (dtype of ``points``; computed in float64).
    """
    return _batched(points, perm, 2)


def simplex_3d(points: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Single-octave 3D simplex noise, in ``[-1, 1]``, continuous, zero at the lattice vertices.

    Args:
        points: coordinates in lattice units, shape ``(..., 3)``.
        perm: a permutation of ``range(256)`` (the random field), shape ``(256,)``; or ``(N, 256)``, one table
            per leading index of ``points`` (then ``points`` is ``(N, ..., 3)``).

    Returns:
        Noise of shape ``points.shape[:-1]`` (dtype of ``points``; computed in float64).
    """
    return _batched(points, perm, 3)


def _check_params(octaves: int, frequency: float, persistence: float) -> None:
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"octaves must be an int >= 1, got {octaves!r}")
    for name, value in (("frequency", frequency), ("persistence", persistence)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in shape)
    except TypeError as e:
        raise ValueError(f"shape must be a sequence of ints (B, C, *spatial), got {shape!r}") from e
    if len(dims) not in (4, 5):
        raise ValueError(
            f"shape must be (B, C, *spatial) with 2 or 3 spatial dims, got {len(dims) - 2} spatial dims: {dims}"
        )
    if any(s < 1 for s in dims):
        raise ValueError(f"shape entries must be >= 1, got {dims}")
    return dims


def simplex_noise(
    shape: Sequence[int],
    octaves: int = 6,
    frequency: float = 1 / 64,
    persistence: float = 0.8,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Multi-octave simplex noise, standardised per (batch item, channel), a drop-in for ``torch.randn(shape)``.

    Pixel ``p`` (integer index per spatial axis, unit spacing on every axis) of field ``(b, c)`` is

        ``sum_k persistence**k * n_{b,c,k}(p * frequency * 2**k + o_{b,c,k})``,

    with ``n_{b,c,k}`` single-octave simplex noise using a permutation table drawn per ``(b, c)`` and an offset
    ``o_{b,c,k}`` uniform in ``[0, 256)^d`` drawn per ``(b, c, octave)`` (so octaves of one field and different
    fields are independent). Each field is then standardised to zero mean and unit (population) variance over
    its spatial dims, so that it can replace standard Gaussian noise, e.g. in ``scheduler.add_noise``; a field
    with a single pixel is returned as zero. The values are not Gaussian and neighbouring pixels are strongly
    correlated: this is the point (see the module docstring).

    Args:
        shape: ``(B, C, *spatial)`` with 2 or 3 spatial dims.
        octaves: number of octaves, an int >= 1 (AnoDDPM: 6).
        frequency: frequency of the first octave in lattice cells (cycles) per pixel, i.e. its features are about
            ``1 / frequency`` pixels wide. Default ``1 / 64 = 2**-6`` (AnoDDPM's setting for 256-pixel images);
            with 6 octaves the last one has ``1 / 2`` cycles per pixel, the Nyquist frequency. Scale it with the
            image size to keep the features at the same fraction of the field of view.
        persistence: amplitude ratio between consecutive octaves, > 0 (AnoDDPM: 0.8; < 1 favours low
            frequencies).
        generator: the only source of randomness (``None``: torch's global generator); the same seeded generator
            gives the same noise. The random numbers are drawn on the generator's device, then moved to ``device``.
        device: device of the output (default: the CPU).
        dtype: floating dtype of the output (computation is in float64).

    Returns:
        Noise of shape ``shape``, dtype ``dtype``, on ``device``.

    Raises:
        ValueError: on a shape without 2 or 3 spatial dims or with non-positive sizes, ``octaves`` not an int
            >= 1, or ``frequency``/``persistence`` not finite and > 0.
    """
    dims = _check_shape(shape)
    _check_params(octaves, frequency, persistence)
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    out_device = torch.device(device) if device is not None else torch.device("cpu")
    rng_device = generator.device if generator is not None else torch.device("cpu")
    batch, channels, spatial = dims[0], dims[1], dims[2:]
    d, fields = len(spatial), dims[0] * dims[1]

    # all random numbers come from ``generator``, in a fixed order
    perm = torch.argsort(torch.rand((fields, TABLE_SIZE), generator=generator, device=rng_device), dim=1)
    offsets = torch.rand((octaves, fields, d), generator=generator, device=rng_device, dtype=torch.float64)
    perm, offsets = perm.to(out_device), offsets.to(out_device) * TABLE_SIZE

    axes = [torch.arange(s, dtype=torch.float64, device=out_device) for s in spatial]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)  # (P, d) pixel indices
    n_points = grid.shape[0]
    chunk = max(1, _CHUNK // fields)
    noise = torch.zeros((fields, n_points), dtype=torch.float64, device=out_device)
    for k in range(octaves):
        freq, amp = frequency * 2.0**k, persistence**k
        for start in range(0, n_points, chunk):
            pts = grid[None, start : start + chunk] * freq + offsets[k][:, None, :]
            noise[:, start : start + chunk] += amp * _simplex(pts, perm)

    noise = noise - noise.mean(dim=1, keepdim=True)
    std = noise.std(dim=1, correction=0, keepdim=True)
    noise = noise / torch.where(std > 0, std, torch.ones_like(std))
    return noise.reshape(batch, channels, *spatial).to(dtype)


class SimplexNoise:
    """Callable multi-octave simplex noise generator, for use in place of ``torch.randn_like`` (e.g. from a
    bundle config: ``{"_target_": "monai_diffusion.apps.anomaly.simplex.SimplexNoise", "octaves": 6}``).

    Args:
        octaves: number of octaves, an int >= 1.
        frequency: first-octave frequency in cycles per pixel (default ``1 / 64``).
        persistence: amplitude ratio between consecutive octaves, > 0.

    See :func:`simplex_noise` for the meaning of the parameters and the standardisation of the output.
    """

    def __init__(self, octaves: int = 6, frequency: float = 1 / 64, persistence: float = 0.8) -> None:
        _check_params(octaves, frequency, persistence)
        self.octaves = octaves
        self.frequency = frequency
        self.persistence = persistence

    def __call__(
        self,
        shape_or_tensor_like: Union[torch.Tensor, Sequence[int]],
        generator: Optional[torch.Generator] = None,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> torch.Tensor:
        """Noise shaped like a tensor (also its device and floating dtype) or of a given ``(B, C, *spatial)`` shape.

        Args:
            shape_or_tensor_like: a tensor, or a shape ``(B, C, *spatial)`` with 2 or 3 spatial dims.
            generator: source of randomness (``None``: torch's global generator).
            device: output device (default: the tensor's, else the CPU).
            dtype: output dtype (default: the tensor's if floating, else float32).

        Returns:
            Standardised simplex noise, see :func:`simplex_noise`.
        """
        if isinstance(shape_or_tensor_like, torch.Tensor):
            ref = shape_or_tensor_like
            shape: Sequence[int] = tuple(ref.shape)
            device = ref.device if device is None else device
            if dtype is None and ref.is_floating_point():
                dtype = ref.dtype
        else:
            shape = shape_or_tensor_like
        return simplex_noise(
            shape,
            octaves=self.octaves,
            frequency=self.frequency,
            persistence=self.persistence,
            generator=generator,
            device=device,
            dtype=torch.float32 if dtype is None else dtype,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(octaves={self.octaves}, frequency={self.frequency}, persistence={self.persistence})"
        )
