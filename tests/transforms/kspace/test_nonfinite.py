"""NaN/inf images are refused by ``SimulateKspace`` and ``SimulateKspaced`` with a message naming the argument or
key (issue 12), in 2D and 3D, for tensors and NumPy arrays."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.transforms import SimulateKspace, SimulateKspaced
from tests.test_utils import SPATIAL_2D, SPATIAL_3D

CASES = [
    (f"{dims}d_{name}_{coils}coil", dims, value, coils)
    for dims in (2, 3)
    for name, value in (("nan", float("nan")), ("inf", float("inf")), ("neginf", float("-inf")))
    for coils in (1, 4)
]


def _image(dims: int, value: float | None = None) -> torch.Tensor:
    img = torch.rand(1, *(SPATIAL_2D if dims == 2 else SPATIAL_3D), generator=torch.Generator().manual_seed(0))
    if value is not None:
        img.view(-1)[3] = value
    return img


class TestSimulateKspaceNonFinite(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_array_names_the_argument(self, _, dims, value, coils):
        sim = SimulateKspace(num_coils=coils, spatial_dims=dims)
        with self.assertRaisesRegex(ValueError, r"^SimulateKspace: img holds 1 NaN or infinite value"):
            sim(_image(dims, value))
        with self.assertRaisesRegex(ValueError, "img holds 1 NaN or infinite value"):
            sim(_image(dims, value).numpy())
        # the clean image of the same shape still goes through, to finite k-space
        self.assertTrue(bool(torch.isfinite(sim(_image(dims))).all()))

    @parameterized.expand(CASES)
    def test_dictionary_names_the_key(self, _, dims, value, coils):
        sim = SimulateKspaced("t1", num_coils=coils, spatial_dims=dims)
        with self.assertRaisesRegex(ValueError, r"^SimulateKspaced key 't1': SimulateKspace: img holds 1 NaN"):
            sim({"t1": _image(dims, value)})
        out = sim({"t1": _image(dims)})
        self.assertTrue(bool(torch.isfinite(out["kspace"]).all()))

    def test_dictionary_keeps_the_error_type(self):
        """Other refusals of the array transform also name the key, with their own exception type."""
        sim = SimulateKspaced("t1")
        with self.assertRaisesRegex(TypeError, r"^SimulateKspaced key 't1': SimulateKspace expects a real"):
            sim({"t1": torch.ones(1, *SPATIAL_2D, dtype=torch.complex64)})
        with self.assertRaisesRegex(ValueError, r"^SimulateKspaced key 't1': SimulateKspace expects a one-channel"):
            sim({"t1": torch.ones(2, *SPATIAL_2D)})


if __name__ == "__main__":
    unittest.main()
