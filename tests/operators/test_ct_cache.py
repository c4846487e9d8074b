"""The cached sparse projector of ``ParallelBeamCT`` and its vectorised FBP: same numbers as the uncached maths,
exact adjoints, a cache that follows dtype, device, size and angle changes, and a bounded cache size."""

from __future__ import annotations

import copy
import math
import pickle
import unittest

import torch
from parameterized import parameterized

from monai_diffusion.operators import batch_inner
from monai_diffusion.operators.ct import ParallelBeamCT, ramp_filter
from tests.test_utils import assert_allclose, skip_if_no_cuda

ANGLES = [0.0, 13.7, 45.0, 90.0, 101.3, 135.0, 170.0]  # irregular, with the axis-aligned special cases


def _rand(shape, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def _loop_backprojection(op: ParallelBeamCT, q: torch.Tensor) -> torch.Tensor:
    """The former implementation: one angle at a time, linear interpolation on the detector."""
    n, length = op.image_size, q.shape[-1]
    flat = q.reshape(-1, op.num_angles, length)
    c = torch.arange(n, dtype=q.dtype) - n // 2
    out = torch.zeros(flat.shape[0], n, n, dtype=q.dtype)
    for a, th in enumerate(torch.deg2rad(op.theta.to(q.dtype))):
        t = c.reshape(1, -1) * torch.cos(th) - c.reshape(-1, 1) * torch.sin(th) + length // 2
        t0 = torch.floor(t)
        for k, w in ((t0, 1 - (t - t0)), (t0 + 1, t - t0)):
            inside = (k >= 0) & (k < length)
            out += torch.where(inside, w, 0.0) * flat[:, a, k.long().clamp(0, length - 1)]
    return out.reshape(*q.shape[:-2], n, n)


class TestCachedProjector(unittest.TestCase):
    @parameterized.expand(
        [("2d_even", 2, 16, (2, 3, 16, 16)), ("2d_odd", 2, 15, (1, 2, 15, 15)), ("3d", 3, 12, (2, 1, 3, 12, 12))]
    )
    def test_cached_equals_uncached_and_adjoint(self, _, dims, n, shape):
        cached = ParallelBeamCT(n, ANGLES, dims, angle_chunk=3)
        uncached = ParallelBeamCT(n, ANGLES, dims, angle_chunk=3, cache_projector=False)
        x = _rand(shape, 0)
        ax = cached.A(x)
        self.assertEqual(ax.shape, (*shape[:-2], len(ANGLES), n))
        y = _rand(tuple(ax.shape), 1)
        self.assertLess(_rel(ax, uncached.A(x)), 1e-13)
        aty = cached.A_adjoint(y)
        self.assertLess(_rel(aty, uncached.A_adjoint(y)), 1e-13)
        self.assertGreater(cached.projector_cache_nbytes, 0)
        self.assertEqual(uncached.projector_cache_nbytes, 0)
        # exact adjoints: <A x, y> = <x, A^T y> to float64 rounding
        lhs, rhs = batch_inner(ax, y), batch_inner(x, aty)
        self.assertLess(float(((lhs - rhs).abs() / lhs.abs()).max()), 1e-13)
        # float32: the same matrix in float32 weights, agreeing to float32 rounding
        ax32 = cached.A(x.float())
        self.assertEqual(ax32.dtype, torch.float32)
        self.assertLess(_rel(ax32, ax), 1e-6)
        self.assertLess(_rel(cached.A_adjoint(y.float()), aty), 1e-6)

    def test_autograd_is_the_adjoint(self):
        op = ParallelBeamCT(8, [0.0, 30.0, 77.0])
        x = _rand((1, 1, 8, 8), 2).requires_grad_(True)
        y = _rand((1, 1, 3, 8), 3).requires_grad_(True)
        self.assertTrue(torch.autograd.gradcheck(op.A, (x,), fast_mode=True))
        self.assertTrue(torch.autograd.gradcheck(op.A_adjoint, (y,), fast_mode=True))
        self.assertTrue(torch.autograd.gradgradcheck(lambda z: op.A(z).pow(2).sum(), (x,), fast_mode=True))
        (g,) = torch.autograd.grad(op.A(x).mul(y.detach()).sum(), x)
        assert_allclose(g, op.A_adjoint(y.detach()), rtol=1e-14, atol=1e-14)

    def test_half_precision_runs_in_float32(self):
        op = ParallelBeamCT(8, 4)
        x = _rand((1, 1, 8, 8), 4)
        out = op.A(x.half())
        self.assertEqual(out.dtype, torch.float16)
        self.assertLess(_rel(out, op.A(x.half().float())), 1e-3)
        self.assertEqual(op._cache.dtype, torch.float32)


class TestCacheInvalidation(unittest.TestCase):
    def test_dtype_change_rebuilds(self):
        op = ParallelBeamCT(16, ANGLES)
        ref = ParallelBeamCT(16, ANGLES, cache_projector=False)
        x = _rand((1, 1, 16, 16), 5)
        op.A(x.float())
        bytes32 = op.projector_cache_nbytes
        # float64 input after float32: float64 weights (float32 ones would be off by ~1e-7), the old entry dropped
        self.assertLess(_rel(op.A(x), ref.A(x)), 1e-13)
        self.assertEqual(op._cache.dtype, torch.float64)
        self.assertGreater(op.projector_cache_nbytes, bytes32)
        fresh = ParallelBeamCT(16, ANGLES)
        fresh.A(x)
        self.assertEqual(op.projector_cache_nbytes, fresh.projector_cache_nbytes)

    def test_module_moves_drop_the_cache(self):
        op = ParallelBeamCT(12, 5)
        x = _rand((1, 1, 12, 12), 6)
        for move in (lambda m: m.to("cpu"), lambda m: m.double(), lambda m: m.float()):
            op.A(x)
            self.assertGreater(op.projector_cache_nbytes, 0)
            move(op)
            self.assertEqual(op.projector_cache_nbytes, 0)
        # copies do not carry the cache; the state_dict never holds it
        op.A(x)
        self.assertEqual(copy.deepcopy(op).projector_cache_nbytes, 0)
        self.assertEqual(pickle.loads(pickle.dumps(op)).projector_cache_nbytes, 0)
        self.assertEqual(list(op.state_dict()), ["theta"])

    def test_size_and_angle_changes_rebuild(self):
        op = ParallelBeamCT(12, [0.0, 40.0, 80.0])
        x = _rand((2, 1, 12, 12), 7)
        op.A(x)
        # angles changed in place (load_state_dict copies into the buffer): same count, new values
        op.load_state_dict({"theta": torch.tensor([10.0, 50.0, 170.0], dtype=torch.float64)})
        fresh = ParallelBeamCT(12, [10.0, 50.0, 170.0], cache_projector=False)
        self.assertLess(_rel(op.A(x), fresh.A(x)), 1e-13)
        # the buffer replaced by one with another number of angles
        op.theta = torch.tensor([0.0, 60.0, 120.0, 150.0], dtype=torch.float64)
        fresh = ParallelBeamCT(12, [0.0, 60.0, 120.0, 150.0], cache_projector=False)
        self.assertLess(_rel(op.A(x), fresh.A(x)), 1e-13)
        # a new image size
        op.image_size = 9
        x9 = _rand((1, 1, 9, 9), 8)
        fresh = ParallelBeamCT(9, [0.0, 60.0, 120.0, 150.0], cache_projector=False)
        self.assertLess(_rel(op.A(x9), fresh.A(x9)), 1e-13)
        self.assertEqual(op._cache.size, 9)
        # unchanged angles in a new tensor: the content check keeps the cached matrices
        matrix = op._cache.matrix
        op.theta = op.theta.clone()
        op.A(x9)
        self.assertIs(op._cache.matrix, matrix)

    @skip_if_no_cuda
    def test_device_change_rebuilds(self):
        op = ParallelBeamCT(16, ANGLES)
        x = _rand((2, 1, 16, 16), 9)
        ref = op.A(x)
        out = op.to("cuda").A(x.cuda())
        self.assertEqual(op._cache.device.type, "cuda")
        self.assertLess(_rel(out.cpu(), ref), 1e-13)
        self.assertLess(_rel(op.A_adjoint(out).cpu(), op.to("cpu").A_adjoint(ref)), 1e-13)
        y = op.to("cuda").A(x.cuda())
        self.assertLess(_rel(op.fbp(y).cpu(), op.to("cpu").fbp(ref)), 1e-12)


class TestCacheSize(unittest.TestCase):
    def test_cache_bytes_bounded(self):
        # 64x64, 90 angles: W and W^T in CSR with int32 indices hold about 2 entries per (angle, pixel);
        # bound: 32 bytes per (angle, pixel) in float32, 48 in float64 (the per-sample weights of the uncached
        # build, int64 indices and float64 weights for 4 neighbours, take 64)
        n, n_angles = 64, 90
        op = ParallelBeamCT(n, n_angles)
        w32, _ = op.projector(torch.float32, "cpu")
        bytes32 = op.projector_cache_nbytes
        self.assertEqual(w32.col_indices().dtype, torch.int32)
        self.assertLess(bytes32, 32 * n_angles * n * n)
        self.assertLessEqual(w32.values().numel(), 4 * n_angles * n * n)
        op.projector(torch.float64, "cpu")
        bytes64 = op.projector_cache_nbytes
        self.assertLess(bytes64, 48 * n_angles * n * n)
        # one entry at a time: the float32 matrices were dropped, float64 values cost 4 more bytes per entry
        self.assertEqual(bytes64 - bytes32, 2 * 4 * w32.values().numel())


class TestVectorisedFBP(unittest.TestCase):
    @parameterized.expand([("even", 16, (2, 1)), ("odd", 15, (1, 2))])
    def test_matches_loop(self, _, n, lead):
        op = ParallelBeamCT(n, ANGLES)
        q = op.filter_sinogram(_rand((*lead, len(ANGLES), n), 10))
        ref = _loop_backprojection(op, q)
        self.assertLess(_rel(op.backproject_pixel(q), ref), 1e-13)
        self.assertLess(_rel(op.backproject_pixel(q, max_elements=1), ref), 1e-13)  # one angle per block
        self.assertLess(_rel(op.backproject_pixel(q.float()), ref), 1e-5)

    def test_fbp_3d_and_filter(self):
        op = ParallelBeamCT(12, 6, spatial_dims=3)
        y = _rand((1, 2, 3, 6, 12), 11)
        q = op.filter_sinogram(y)
        self.assertEqual(q.shape[-1], math.ceil(math.sqrt(2) * 12))
        # the real-FFT filter equals the complex-FFT one
        size = q.shape[-1]
        pad = torch.nn.functional.pad(y, (size // 2 - 6, 64 - 12 - (size // 2 - 6)))
        full = torch.fft.ifft(torch.fft.fft(pad, dim=-1) * ramp_filter(64), dim=-1).real[..., :size]
        self.assertLess(_rel(q, full), 1e-13)
        rec = op.fbp(y)
        self.assertEqual(rec.shape, (1, 2, 3, 12, 12))
        ref = _loop_backprojection(op, q) * (math.pi / 12)
        c = torch.arange(12) - 6
        ref = ref * ((c[:, None] ** 2 + c[None, :] ** 2) <= 36)
        self.assertLess(_rel(rec, ref), 1e-13)


if __name__ == "__main__":
    unittest.main()
