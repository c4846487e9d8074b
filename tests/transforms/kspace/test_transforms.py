"""Contract test every k-space transform pair inherits (array == dictionary, 2D and 3D, composes with MONAI, clear
errors), plus the physics each one must get right."""

from __future__ import annotations

import unittest

import torch
from monai.transforms import Compose, Randomizable

from monai_diffusion.operators.mri import fft_centered, ifft_centered, root_sum_of_squares, synthetic_coil_maps
from monai_diffusion.transforms import (
    CoilCombine,
    CoilCombined,
    KspaceDataConsistency,
    KspaceDataConsistencyd,
    SimulateKspace,
    SimulateKspaced,
    UndersampleKspace,
    UndersampleKspaced,
    ZeroFilled,
    ZeroFilledd,
)
from tests.test_utils import SPATIAL_2D, SPATIAL_3D, assert_allclose


def _sp(dims):
    return SPATIAL_2D if dims == 2 else SPATIAL_3D


def _cimg(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


class TransformPairContract:
    """Mixin: ``make(dims)`` returns ``(array_fn, dict_transform, data_dict, out_key)`` where ``array_fn(data)``
    applies the array transform to the same inputs; ``bad_inputs(dims)`` yields (callable, exception)."""

    def make(self, dims):
        raise NotImplementedError

    def bad_inputs(self, dims):
        return []

    def test_array_equals_dictionary(self):
        for dims in (2, 3):
            array_fn, dict_t, data, out_key = self.make(dims)
            out_a = array_fn(data)
            pipeline = Compose([dict_t])  # composes with MONAI (Compose reseeds its members: seed afterwards)
            if isinstance(dict_t, Randomizable):
                dict_t.set_random_state(seed=5)
            out_d = pipeline(dict(data))[out_key]
            assert_allclose(out_a, out_d, rtol=1e-6, atol=1e-6)
            self.assertEqual(out_a.ndim, dims + 1, "channel-first, no batch axis")

    def test_bad_input(self):
        for dims in (2, 3):
            for fn, exc in self.bad_inputs(dims):
                with self.assertRaises(exc):
                    fn()


class TestSpatialDims(unittest.TestCase):
    def test_only_2d_and_3d(self):
        for make in (
            lambda d: SimulateKspace(1, d),
            lambda d: UndersampleKspace(spatial_dims=d),
            lambda d: ZeroFilled(d),
            lambda d: CoilCombine("rss", d),
            lambda d: KspaceDataConsistency(spatial_dims=d),
            lambda d: SimulateKspaced("image", spatial_dims=d),
        ):
            for dims in (0, 1, 4):
                with self.assertRaises(ValueError):
                    make(dims)


class TestTransformsFromBundleConfig(unittest.TestCase):
    def test_pipeline_from_config(self):
        from monai.bundle import ConfigParser

        cfg = {
            "pipeline": {
                "_target_": "monai.transforms.Compose",
                "transforms": [
                    {"_target_": "monai_diffusion.transforms.SimulateKspaced", "keys": "image", "num_coils": 3},
                    {
                        "_target_": "monai_diffusion.transforms.UndersampleKspaced",
                        "keys": "kspace",
                        "mask_type": "equispaced",
                        "acceleration": 4,
                        "center_fraction": 0.125,
                    },
                    {"_target_": "monai_diffusion.transforms.ZeroFilledd", "keys": "kspace", "output_key": "zf"},
                ],
            }
        }
        pipeline = ConfigParser(cfg).get_parsed_content("pipeline")
        img = torch.rand(1, 16, 16)
        out = pipeline({"image": img})
        self.assertEqual(tuple(out["kspace"].shape), (3, 16, 16))
        self.assertEqual(tuple(out["zf"].shape), (1, 16, 16))
        mask = out["mask"].reshape(1, 16, 16)
        # the undersampled k-space is zero off the mask and the zero-filled image is its RSS
        self.assertTrue(bool((out["kspace"][:, mask[0] == 0] == 0).all()))
        assert_allclose(out["zf"], root_sum_of_squares(ifft_centered(out["kspace"], 2), dim=0), atol=1e-6)


class TestSimulateKspace(TransformPairContract, unittest.TestCase):
    def make(self, dims):
        img = torch.rand(1, *_sp(dims))
        arr = SimulateKspace(num_coils=3, spatial_dims=dims)
        arr.set_random_state(seed=5)
        dct = SimulateKspaced("image", num_coils=3, spatial_dims=dims)
        return (lambda d: arr(d["image"])), dct, {"image": img}, "kspace"

    def bad_inputs(self, dims):
        t = SimulateKspace(2, dims)
        return [
            (lambda: t(torch.zeros(1, *_sp(dims), dtype=torch.complex64)), TypeError),
            (lambda: t(torch.zeros(2, *_sp(dims))), ValueError),
            (lambda: t(torch.zeros(*_sp(dims))), ValueError),
        ]

    def test_physics(self):
        img = torch.rand(1, 16, 16)
        t = SimulateKspace(num_coils=4, spatial_dims=2)
        t.set_random_state(seed=0)
        k = t(img)
        self.assertEqual(k.dtype, torch.complex64)
        self.assertEqual(tuple(k.shape), (4, 16, 16))
        # RSS of the coil images returns the magnitude image (maps normalised, phase has unit modulus)
        assert_allclose(root_sum_of_squares(ifft_centered(k, 2), dim=0), img, atol=1e-5)
        # the phase is not trivial, and is reproducible by seed
        single = SimulateKspace(1, 2)
        single.set_random_state(seed=0)
        x = ifft_centered(single(img), 2)
        self.assertGreater(float(x.angle().abs().max()), 0.3)
        single.set_random_state(seed=0)
        assert_allclose(ifft_centered(single(img), 2), x)


class TestUndersample(TransformPairContract, unittest.TestCase):
    def make(self, dims):
        k = _cimg((2, *_sp(dims)))
        arr = UndersampleKspace("gaussian", 4, 0.125, dims)
        arr.set_random_state(seed=5)
        dct = UndersampleKspaced(
            "kspace", mask_type="gaussian", acceleration=4, center_fraction=0.125, spatial_dims=dims
        )
        return (lambda d: arr(d["kspace"])[0]), dct, {"kspace": k}, "kspace"

    def bad_inputs(self, dims):
        return [
            (lambda: UndersampleKspace("random", 4, 0.08, dims)(torch.zeros(1, *_sp(dims))), TypeError),
            (lambda: UndersampleKspace("random", 0.5), ValueError),
            (
                lambda: UndersampleKspace(spatial_dims=dims, mask=torch.ones(5, 5))(_cimg((1, *_sp(dims)))),
                ValueError,
            ),
            (lambda: UndersampleKspace("random", 4, 0.08, dims)(_cimg(_sp(dims))), ValueError),
        ]

    def test_mask_returned_and_applied(self):
        k = _cimg((3, 16, 16))
        masked, mask = UndersampleKspace("equispaced", 4, 0.125)(k)
        self.assertEqual(tuple(mask.shape), (1, 16, 16))
        assert_allclose(masked, k * mask)
        self.assertTrue(bool((masked[:, mask[0] == 0] == 0).all()))


class TestZeroFilled(TransformPairContract, unittest.TestCase):
    def make(self, dims):
        k = _cimg((3, *_sp(dims)))
        maps = synthetic_coil_maps(_sp(dims), 3)
        arr = ZeroFilled(dims, "sensitivity")
        dct = ZeroFilledd("kspace", dims, "sensitivity", output_key="zf")
        return (lambda d: arr(d["kspace"], d["sensitivity_maps"])), dct, {"kspace": k, "sensitivity_maps": maps}, "zf"

    def bad_inputs(self, dims):
        return [
            (lambda: ZeroFilled(dims)(torch.zeros(1, *_sp(dims))), TypeError),
            (lambda: ZeroFilled(dims, "sensitivity")(_cimg((3, *_sp(dims)))), ValueError),
            (
                lambda: ZeroFilled(dims, "sensitivity")(_cimg((3, *_sp(dims))), synthetic_coil_maps(_sp(dims), 2)),
                ValueError,
            ),
            (lambda: ZeroFilled(dims, "max"), ValueError),
        ]

    def test_fully_sampled_is_exact(self):
        img = torch.rand(1, 16, 16)
        t = SimulateKspace(num_coils=4, max_phase=0.0)
        k = t(img)
        assert_allclose(ZeroFilled(2, "rss")(k), img, atol=1e-5)
        assert_allclose(ZeroFilled(2, "sensitivity")(k, t.sensitivity_maps((16, 16))).real, img, atol=1e-5)


class TestCoilCombine(TransformPairContract, unittest.TestCase):
    def make(self, dims):
        x = _cimg((4, *_sp(dims)))
        arr = CoilCombine("rss", dims)
        dct = CoilCombined("coils", "rss", dims)
        return (lambda d: arr(d["coils"])), dct, {"coils": x}, "coils"

    def bad_inputs(self, dims):
        return [
            (lambda: CoilCombine("rss", dims)(torch.zeros(2, *_sp(dims))), TypeError),
            (lambda: CoilCombine("sensitivity", dims)(_cimg((2, *_sp(dims)))), ValueError),
            (lambda: CoilCombine("mean", dims), ValueError),
        ]

    def test_rss_value(self):
        x = _cimg((3, 8, 8))
        assert_allclose(CoilCombine("rss")(x), (x.abs() ** 2).sum(0, keepdim=True).sqrt(), rtol=1e-6)


class TestDataConsistency(TransformPairContract, unittest.TestCase):
    def make(self, dims):
        sp = _sp(dims)
        truth = _cimg((1, *sp), 1)
        mask = torch.zeros(sp)
        mask[..., ::3] = 1
        k = fft_centered(truth, dims) * mask
        x = _cimg((1, *sp), 2)
        arr = KspaceDataConsistency("soft", 2.0, dims)
        dct = KspaceDataConsistencyd("image", mode="soft", weight=2.0, spatial_dims=dims)
        return (
            (lambda d: arr(d["image"], d["kspace"], d["mask"])),
            dct,
            {"image": x, "kspace": k, "mask": mask},
            "image",
        )

    def bad_inputs(self, dims):
        sp = _sp(dims)
        t = KspaceDataConsistency("hard", spatial_dims=dims)
        return [
            (lambda: t(torch.zeros(1, *sp), _cimg((1, *sp)), torch.ones(sp)), TypeError),
            (lambda: t(_cimg((1, *sp)), torch.zeros(1, *sp), torch.ones(sp)), TypeError),
            (lambda: t(_cimg((1, *sp)), _cimg((1, *sp)), torch.ones(3, 3)), ValueError),
            (lambda: t(_cimg((1, *sp)), _cimg((2, *sp)), torch.ones(sp)), ValueError),
            (lambda: t(_cimg((1, *sp)), _cimg((3, *sp)), torch.ones(sp), synthetic_coil_maps(sp, 2)), ValueError),
            (lambda: KspaceDataConsistency("hard", weight=-1.0), ValueError),
        ]

    def test_hard_is_idempotent_and_exact_on_measured(self):
        for dims in (2, 3):
            sp = _sp(dims)
            truth = _cimg((1, *sp), 1)
            mask = torch.zeros(sp)
            mask[..., ::3] = 1
            k = fft_centered(truth, dims) * mask
            t = KspaceDataConsistency("hard", spatial_dims=dims)
            out = t(_cimg((1, *sp), 2), k, mask)
            ko = fft_centered(out, dims)
            self.assertTrue(
                torch.equal(ko[:, mask == 1], k[:, mask == 1])
                or bool(torch.allclose(ko[:, mask == 1], k[:, mask == 1], atol=1e-6))
            )
            assert_allclose(t(out, k, mask), out, atol=1e-6)

    def test_multicoil_hard(self):
        sp = (12, 12)
        maps = synthetic_coil_maps(sp, 4)
        truth = _cimg((1, *sp), 1)
        mask = torch.zeros(sp)
        mask[:, ::2] = 1
        mask[:, 5:7] = 1
        k = fft_centered(truth * maps, 2) * mask
        out = KspaceDataConsistency("hard", cg_iters=60)(_cimg((1, *sp), 2), k, mask, maps)
        rel = float((fft_centered(out * maps, 2) * mask - k).abs().norm() / k.abs().norm())
        self.assertLess(rel, 1e-3)


if __name__ == "__main__":
    unittest.main()
