"""Shared helpers for the test suite: tolerance asserts, 2D/3D case builders, device skips."""

from __future__ import annotations

import unittest
from collections.abc import Sequence

import numpy as np
import torch

#: spatial shapes used by "every component works in 2D and 3D" tests: small enough for 2 CPU cores
SPATIAL_2D: tuple[int, ...] = (16, 16)
SPATIAL_3D: tuple[int, ...] = (8, 8, 8)

HAS_CUDA = torch.cuda.is_available()
skip_if_no_cuda = unittest.skipUnless(HAS_CUDA, "needs CUDA")


def spatial_cases(channels: int = 1, batch: int = 2) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, shape)]`` for a 2D and a 3D batch-first, channel-first input; use with ``parameterized``."""
    return [("2d", (batch, channels, *SPATIAL_2D)), ("3d", (batch, channels, *SPATIAL_3D))]


def dims_cases() -> list[tuple[str, int]]:
    """``[("2d", 2), ("3d", 3)]`` for tests parameterised by the number of spatial dimensions."""
    return [("2d", 2), ("3d", 3)]


def make_input(shape: Sequence[int], seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded standard-normal tensor of ``shape``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tuple(shape), generator=g, dtype=dtype)


def _np(x: torch.Tensor | np.ndarray | float) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assert_allclose(actual, desired, rtol: float = 1e-5, atol: float = 1e-8, msg: str = "") -> None:
    """``numpy.testing.assert_allclose`` that accepts tensors on any device."""
    np.testing.assert_allclose(_np(actual), _np(desired), rtol=rtol, atol=atol, err_msg=msg)


def assert_relative_error(actual, desired, tol: float, msg: str = "") -> float:
    """Assert ``||actual - desired|| / ||desired|| <= tol`` and return the relative error."""
    a, d = _np(actual).astype(np.complex128), _np(desired).astype(np.complex128)
    err = float(np.linalg.norm((a - d).ravel()) / max(np.linalg.norm(d.ravel()), 1e-300))
    if not err <= tol:
        raise AssertionError(f"relative error {err:.3e} > {tol:.1e} {msg}")
    return err


def assert_close_scalar(actual: float, desired: float, atol: float, name: str = "value") -> None:
    """Assert a scalar statistic is within ``atol`` of its exact value, with a readable message."""
    if not abs(float(actual) - float(desired)) <= atol:
        raise AssertionError(f"{name}: got {float(actual):.5g}, expected {float(desired):.5g} +- {atol:.2g}")


class TestSharedTestHelpers(unittest.TestCase):
    """The helpers themselves: each assert passes on agreeing inputs and raises on disagreeing ones."""

    def test_assert_allclose(self):
        assert_allclose(torch.ones(3), np.ones(3))
        with self.assertRaises(AssertionError):
            assert_allclose(torch.ones(3), np.full(3, 1.001), rtol=1e-5)

    def test_assert_relative_error(self):
        x = torch.tensor([3.0, 4.0])
        err = assert_relative_error(x * 1.01, x, tol=0.02)
        self.assertAlmostEqual(err, 0.01, places=6)
        with self.assertRaisesRegex(AssertionError, "relative error"):
            assert_relative_error(x * 1.1, x, tol=0.05)
        assert_relative_error(torch.complex(x, x), torch.complex(x, x), tol=0.0)

    def test_assert_close_scalar(self):
        assert_close_scalar(1.04, 1.0, atol=0.05)
        with self.assertRaisesRegex(AssertionError, "mean: got 1.1"):
            assert_close_scalar(1.1, 1.0, atol=0.05, name="mean")

    def test_case_builders(self):
        cases = dict(spatial_cases(channels=3, batch=4))
        self.assertEqual(cases["2d"], (4, 3, *SPATIAL_2D))
        self.assertEqual(cases["3d"], (4, 3, *SPATIAL_3D))
        self.assertEqual((len(SPATIAL_2D), len(SPATIAL_3D)), (2, 3))
        self.assertEqual(dims_cases(), [("2d", 2), ("3d", 3)])
        a, b = make_input((2, 3), seed=1), make_input((2, 3), seed=1)
        self.assertTrue(torch.equal(a, b))
        self.assertFalse(torch.equal(a, make_input((2, 3), seed=2)))
        self.assertEqual(make_input((2,), dtype=torch.float64).dtype, torch.float64)

    def test_skip_if_no_cuda(self):
        @skip_if_no_cuda
        class Probe(unittest.TestCase):
            def test(self):
                pass

        result = unittest.TestResult()
        Probe("test").run(result)
        self.assertEqual(len(result.skipped), 0 if HAS_CUDA else 1)


def tiny_unet(
    dims: int, in_channels: int = 1, conditioning: bool = False, classes: int | None = None, out_channels: int = 1
):
    """A small MONAI ``DiffusionModelUNet`` (2 levels of 8 channels) for fast tests; seeded."""
    from monai.networks.nets import DiffusionModelUNet

    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(8, 8),
        attention_levels=(False, conditioning),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        with_conditioning=conditioning,
        cross_attention_dim=4 if conditioning else None,
        num_class_embeds=classes,
    )


def tiny_autoencoder(dims: int, latent_channels: int = 2):
    """A small MONAI ``AutoencoderKL`` (2 levels of 8 channels, halves every side) for fast tests; seeded."""
    from monai.networks.nets import AutoencoderKL

    torch.manual_seed(0)
    return AutoencoderKL(
        spatial_dims=dims,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=latent_channels,
        num_res_blocks=1,
        norm_num_groups=8,
        attention_levels=(False, False),
    )


def randomise_zeros(*nets: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> None:
    """Give every all-zero parameter random values: MONAI zero-initialises output convolutions (UNet, ControlNet), so
    a fresh network ignores its time step, labels and control, and a test that compares conditions could not fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for net in nets:
            for p in net.parameters():
                if not p.any():
                    p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
