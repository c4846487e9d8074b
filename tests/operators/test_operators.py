"""Contract tests every forward operator inherits (adjointness, pseudo-inverse, projections, config), plus
operator-specific checks (CT against skimage, MRI Hermitian symmetry, bad input)."""

from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.networks.blocks.fft_utils_t import fftn_centered_t, ifftn_centered_t
from parameterized import parameterized

from monai_diffusion.operators import (
    IdentityOperator,
    InpaintingOperator,
    LinearOperator,
    MRIOperator,
    ParallelBeamCT,
    SuperResolutionOperator,
    batch_inner,
    fft_centered,
    hermitian_flip,
    ifft_centered,
    synthetic_coil_maps,
)
from tests.test_utils import SPATIAL_2D, SPATIAL_3D, assert_allclose, assert_relative_error, skip_if_no_cuda


def _rand(shape, complex_: bool, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if complex_:
        return torch.complex(
            torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)
        )
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _line_mask(shape, seed=0, keep=0.4):
    g = torch.Generator().manual_seed(seed)
    lines = (torch.rand(shape[-1], generator=g) < keep).float()
    lines[shape[-1] // 2] = 1
    return lines.expand(*shape).clone()


class OperatorContract:
    """Mixin: subclasses set ``configs`` = [(name, spatial_dims)] and implement ``make(spatial_dims)``."""

    #: exactness expected of ``A A^+ A = A`` (exact closed forms: 1e-6; CG: looser)
    pinv_tol = 1e-6

    def make(self, spatial_dims: int) -> tuple[LinearOperator, tuple[int, ...], bool]:
        """Return (operator, image shape, complex image)."""
        raise NotImplementedError

    def config(self, spatial_dims: int) -> dict | None:
        """A bundle config dict building the operator (JSON-serialisable arguments) or None."""
        return None

    def _cases(self):
        for dims in self.dims:
            op, shape, cplx = self.make(dims)
            yield dims, op, shape, cplx

    def test_adjointness_float64(self):
        for dims, op, shape, cplx in self._cases():
            x = _rand(shape, cplx, 1)
            ax = op.A(x)
            y = _rand(tuple(ax.shape), ax.is_complex(), 2)
            lhs = batch_inner(ax, y)
            rhs = batch_inner(x, op.A_adjoint(y))
            assert_relative_error(lhs, rhs, 1e-6, msg=f"<Ax,y> vs <x,A^H y> ({type(op).__name__}, {dims}D)")
            assert_allclose(op.A_adjoint_A(x), op.A_adjoint(op.A(x)), rtol=1e-10, atol=1e-10)
            self.assertEqual(op.A_adjoint(y).shape, x.shape)
            self.assertEqual(op(x).shape, ax.shape)

    def test_pinv_and_projection(self):
        for dims, op, shape, cplx in self._cases():
            x = _rand(shape, cplx, 3)
            ax = op.A(x)
            assert_relative_error(op.A(op.pinv(ax)), ax, self.pinv_tol, msg=f"A A^+ A = A ({dims}D)")
            z = _rand(shape, cplx, 4)
            p = op.project(z, ax)
            assert_relative_error(op.A(p), ax, self.pinv_tol, msg="measured part equals the data")
            if op.exact_pinv:
                # exact pseudo-inverses only: CG on an ill-conditioned normal equation amplifies rounding in the
                # near-null space, so a second CG projection of an already-consistent image is not a no-op
                assert_relative_error(op.project(p, ax), p, 1e-10, msg="projection is idempotent")
                # A^+ A is the orthogonal projector onto the row space: A^+ A A^+ = A^+
                assert_relative_error(op.pinv(op.A(op.pinv(ax))), op.pinv(ax), 1e-6)

    def test_soft_projection(self):
        for _dims, op, shape, cplx in self._cases():
            x = _rand(shape, cplx, 5)
            y = op.A(_rand(shape, cplx, 6))
            assert_allclose(op.soft_project(x, y, 0.0), x, rtol=1e-8, atol=1e-8)
            w = 3.0
            z = op.soft_project(x, y, w)
            grad = (z - x) + w * op.A_adjoint(op.A(z) - y)  # optimality of argmin ||z-x||^2 + w||Az-y||^2
            self.assertLess(float(grad.abs().max()), 1e-5 * float(x.abs().max()))
            # larger weight pulls the measured part towards y
            d1 = float((op.A(op.soft_project(x, y, 1.0)) - y).abs().norm())
            d2 = float((op.A(op.soft_project(x, y, 100.0)) - y).abs().norm())
            self.assertLess(d2, d1)

    def test_wrong_rank_raises(self):
        for _dims, op, shape, cplx in self._cases():
            with self.assertRaises(ValueError):
                op.A(_rand(shape[1:], cplx, 0))

    def test_bundle_config(self):
        for dims in self.dims:
            cfg = self.config(dims)
            if cfg is None:
                continue
            op = ConfigParser({"op": cfg}).get_parsed_content("op")
            ref, shape, cplx = self.make(dims)
            x = _rand(shape, cplx, 7)
            assert_allclose(op.A(x), ref.A(x), rtol=1e-6, atol=1e-6)

    def test_buffers_move_with_module(self):
        for _dims, op, _shape, _cplx in self._cases():
            sd = op.state_dict()
            for name, _buf in op.named_buffers():
                self.assertIn(name, sd)


class TestIdentity(OperatorContract, unittest.TestCase):
    dims = (2, 3)

    def make(self, spatial_dims):
        shape = (2, 1, *(SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D))
        return IdentityOperator(spatial_dims), shape, False

    def config(self, spatial_dims):
        return {"_target_": "monai_diffusion.operators.IdentityOperator", "spatial_dims": spatial_dims}


class TestInpainting(OperatorContract, unittest.TestCase):
    dims = (2, 3)

    def make(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        mask = (torch.rand(sp, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        return InpaintingOperator(mask, spatial_dims), (2, 2, *sp), True

    def config(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        mask = (torch.rand(sp, generator=torch.Generator().manual_seed(0)) > 0.5).float()
        return {
            "_target_": "monai_diffusion.operators.InpaintingOperator",
            "mask": mask.tolist(),
            "spatial_dims": spatial_dims,
        }

    def test_non_binary_mask(self):
        with self.assertRaises(ValueError):
            InpaintingOperator(torch.full((4, 4), 0.5))


class TestSuperResolution(OperatorContract, unittest.TestCase):
    dims = (2, 3)

    def make(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        return SuperResolutionOperator(2 if spatial_dims == 3 else 4, spatial_dims), (2, 1, *sp), False

    def config(self, spatial_dims):
        return {
            "_target_": "monai_diffusion.operators.SuperResolutionOperator",
            "factor": 2 if spatial_dims == 3 else 4,
            "spatial_dims": spatial_dims,
        }

    def test_bad_factor(self):
        with self.assertRaises(ValueError):
            SuperResolutionOperator(0)
        with self.assertRaises(ValueError):
            SuperResolutionOperator(3).A(torch.zeros(1, 1, 16, 16))


class TestMRISingleCoilComplex(OperatorContract, unittest.TestCase):
    dims = (2, 3)

    def make(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        return MRIOperator(_line_mask(sp), spatial_dims=spatial_dims), (2, 2, *sp), True

    def config(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        return {
            "_target_": "monai_diffusion.operators.MRIOperator",
            "mask": _line_mask(sp).tolist(),
            "spatial_dims": spatial_dims,
        }

    def test_real_image_rejected(self):
        op, shape, _ = self.make(2)
        with self.assertRaises(TypeError):
            op.A(torch.zeros(shape))
        with self.assertRaises(TypeError):
            op.A_adjoint(torch.zeros(shape))

    def test_mask_kspace_mismatch(self):
        op = MRIOperator(_line_mask((16, 16)))
        with self.assertRaises(ValueError):
            op.A_adjoint(torch.zeros(1, 1, 16, 12, dtype=torch.complex64))
        with self.assertRaises(ValueError):
            MRIOperator(torch.full((4, 4), 0.3))

    def test_fft_is_orthonormal_and_centred(self):
        x = _rand((1, 1, 8, 8), True, 0)
        k = fft_centered(x, 2)
        assert_allclose(k.abs().norm(), x.abs().norm(), rtol=1e-12)
        ref = np.fft.fftshift(
            np.fft.fftn(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), axes=(-2, -1), norm="ortho"), axes=(-2, -1)
        )
        assert_allclose(k, ref, rtol=1e-10, atol=1e-12)
        for sp in ((8, 8), (7, 5), (4, 5, 3)):  # same convention as MONAI's trailing-2 helpers
            x = _rand((1, 1, *sp), True, 1)
            monai_k = torch.view_as_complex(fftn_centered_t(torch.view_as_real(x), len(sp)).contiguous())
            assert_allclose(fft_centered(x, len(sp)), monai_k, rtol=1e-10, atol=1e-12)
            monai_x = torch.view_as_complex(ifftn_centered_t(torch.view_as_real(x), len(sp)).contiguous())
            assert_allclose(ifft_centered(x, len(sp)), monai_x, rtol=1e-10, atol=1e-12)


class TestMRISingleCoilReal(OperatorContract, unittest.TestCase):
    dims = (2, 3)

    def make(self, spatial_dims):
        sp = (16, 15) if spatial_dims == 2 else (8, 7, 8)  # odd and even sizes for the Hermitian index map
        return MRIOperator(_line_mask(sp, seed=3), spatial_dims=spatial_dims, real_image=True), (2, 1, *sp), False

    def config(self, spatial_dims):
        sp = (16, 15) if spatial_dims == 2 else (8, 7, 8)
        return {
            "_target_": "monai_diffusion.operators.MRIOperator",
            "mask": _line_mask(sp, seed=3).tolist(),
            "spatial_dims": spatial_dims,
            "real_image": True,
        }

    def test_hermitian_flip_of_real_spectrum(self):
        for sp in ((8, 8), (7, 9), (6, 5, 4)):
            x = _rand((1, 1, *sp), False, 0).to(torch.complex128)
            k = fft_centered(x, len(sp))
            assert_allclose(hermitian_flip(k, len(sp)), torch.conj(k).resolve_conj(), rtol=1e-10, atol=1e-12)

    def test_pinv_recovers_hermitian_partner(self):
        # a single measured column k also determines column -k for a real image
        sp = (16, 16)
        mask = torch.zeros(sp)
        mask[:, 11] = 1
        op = MRIOperator(mask, real_image=True)
        x = _rand((1, 1, *sp), False, 0)
        rec = fft_centered(op.pinv(op.A(x)).to(torch.complex128), 2)
        k = fft_centered(x.to(torch.complex128), 2)
        assert_allclose(rec[..., 11], k[..., 11], atol=1e-10)
        assert_allclose(rec[..., 16 - 11], k[..., 16 - 11], atol=1e-10)


class TestMRIMultiCoil(OperatorContract, unittest.TestCase):
    dims = (2, 3)
    pinv_tol = 1e-2  # CG least squares on an ill-conditioned system, not a closed form

    def make(self, spatial_dims):
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        maps = synthetic_coil_maps(sp, 4).to(torch.complex128)
        return (
            MRIOperator(_line_mask(sp, keep=0.7), maps, spatial_dims=spatial_dims, cg_iters=40, cg_tol=1e-10),
            (2, 1, *sp),
            True,
        )

    def config(self, spatial_dims):
        # complex coil maps are not JSON: the config builds them with a nested ``_target_``
        sp = SPATIAL_2D if spatial_dims == 2 else SPATIAL_3D
        return {
            "_target_": "monai_diffusion.operators.MRIOperator",
            "mask": _line_mask(sp, keep=0.7).tolist(),
            "sensitivity_maps": {
                "_target_": "monai_diffusion.operators.synthetic_coil_maps",
                "spatial_shape": list(sp),
                "num_coils": 4,
            },
            "spatial_dims": spatial_dims,
        }

    def test_coil_count_mismatch(self):
        op, shape, _ = self.make(2)
        with self.assertRaises(ValueError):
            op.A_adjoint(torch.zeros(2, 3, *SPATIAL_2D, dtype=torch.complex128))
        with self.assertRaises(ValueError):
            op.A(torch.zeros(2, 2, *SPATIAL_2D, dtype=torch.complex128))

    def test_maps_normalised(self):
        maps = synthetic_coil_maps((12, 10), 6)
        assert_allclose((maps.abs() ** 2).sum(0), torch.ones(12, 10), rtol=1e-5)


class TestParallelBeamCT(OperatorContract, unittest.TestCase):
    dims = (2, 3)
    pinv_tol = 1e-2  # CG least squares on an ill-conditioned system, not a closed form

    def make(self, spatial_dims):
        n = 16 if spatial_dims == 2 else 8
        op = ParallelBeamCT(n, 12 if spatial_dims == 2 else 5, spatial_dims, angle_chunk=5, cg_iters=100, cg_tol=1e-12)
        shape = (2, 1, n, n) if spatial_dims == 2 else (1, 1, 3, n, n)
        return op, shape, False

    def config(self, spatial_dims):
        n = 16 if spatial_dims == 2 else 8
        return {
            "_target_": "monai_diffusion.operators.ParallelBeamCT",
            "image_size": n,
            "angles": 12 if spatial_dims == 2 else 5,
            "spatial_dims": spatial_dims,
        }

    @parameterized.expand([("even", 32, 10), ("odd", 31, 7)])
    def test_matches_skimage(self, _, n, n_angles):
        from skimage.data import shepp_logan_phantom
        from skimage.transform import iradon, radon, resize

        img = resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)
        c = np.arange(n) - n // 2
        img = img * ((c[:, None] ** 2 + c[None, :] ** 2) <= (n // 2 - 1) ** 2)  # zero outside the circle
        theta = np.linspace(0.0, 180.0, n_angles, endpoint=False)
        op = ParallelBeamCT(n, list(theta))
        sino = op.A(torch.tensor(img)[None, None])[0, 0].numpy().T
        ref = radon(img, theta=theta)
        # same geometry and bilinear sampling: agreement to rounding (stated tolerance 1e-9 relative)
        assert_relative_error(sino, ref, 1e-9)
        fbp = op.fbp(torch.tensor(ref.T)[None, None])[0, 0].numpy()
        assert_relative_error(fbp, iradon(ref, theta=theta), 1e-9)

    def test_differentiable(self):
        op = ParallelBeamCT(8, 4)
        x = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
        loss = op.A(x).pow(2).sum()
        (g,) = torch.autograd.grad(loss, x)
        assert_allclose(g, 2 * op.A_adjoint(op.A(x.detach())), rtol=1e-10)

    def test_bad_input(self):
        op = ParallelBeamCT(8, 4)
        with self.assertRaises(ValueError):
            op.A(torch.zeros(1, 1, 8, 6))
        with self.assertRaises(ValueError):
            op.A_adjoint(torch.zeros(1, 1, 5, 8))
        with self.assertRaises(TypeError):
            op.A(torch.zeros(1, 1, 8, 8, dtype=torch.complex64))


@skip_if_no_cuda
class TestOperatorsOnCuda(unittest.TestCase):
    """Buffers follow ``.to("cuda")`` and results match the CPU (not run on CPU-only machines)."""

    def test_cuda_matches_cpu(self):
        sp = (16, 16)
        ops = [
            MRIOperator(_line_mask(sp), synthetic_coil_maps(sp, 3).to(torch.complex128)),
            MRIOperator(_line_mask(sp), real_image=True),
            ParallelBeamCT(16, 6),
            SuperResolutionOperator(2),
        ]
        for op in ops:
            cplx = op.complex_domain is True
            x = _rand((2, 1, *sp), cplx, 0)
            ref = op.A(x)
            op_cuda = op.to("cuda")
            out = op_cuda.A(x.cuda())
            self.assertEqual(out.device.type, "cuda")
            assert_allclose(out, ref, rtol=1e-10, atol=1e-10)
            assert_allclose(op_cuda.A_adjoint(out), op.to("cpu").A_adjoint(ref), rtol=1e-10, atol=1e-10)


if __name__ == "__main__":
    unittest.main()


class TestBadInputMessages(unittest.TestCase):
    def test_all_zero_mask_and_acceleration(self):
        from monai_diffusion.operators import MRIOperator
        from monai_diffusion.transforms.kspace import acceleration_of

        with self.assertRaisesRegex(ValueError, "samples no k-space point"):
            MRIOperator(torch.zeros(8, 8), spatial_dims=2)
        with self.assertRaisesRegex(ValueError, "acceleration is undefined"):
            acceleration_of(torch.zeros(8, 8))
        self.assertEqual(acceleration_of(torch.tensor([[1.0, 0.0], [0.0, 0.0]])), 4.0)

    def test_fft_rank(self):
        from monai_diffusion.operators.mri import fft_centered, ifft_centered

        with self.assertRaisesRegex(ValueError, "fewer than spatial_dims=3"):
            fft_centered(torch.zeros(4, 4, dtype=torch.complex64), 3)
        with self.assertRaisesRegex(ValueError, "spatial_dims must be 1, 2 or 3"):
            ifft_centered(torch.zeros(4, 4, dtype=torch.complex64), 0)

    def test_data_consistency_transform_names_missing_keys(self):
        from monai_diffusion.transforms.kspace import KspaceDataConsistencyd

        dc = KspaceDataConsistencyd(keys="image", kspace_key="kspace", mask_key="mask")
        with self.assertRaisesRegex(KeyError, "needs the keys \\['mask'\\]"):
            dc({"image": torch.zeros(1, 4, 4), "kspace": torch.zeros(1, 4, 4, dtype=torch.complex64)})
