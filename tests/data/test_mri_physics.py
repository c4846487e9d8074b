from __future__ import annotations

import unittest

import numpy as np
from parameterized import parameterized

from monai_diffusion.data.mri_physics import (
    CONTRASTS,
    LESION_PARAMETER_RANGES,
    SEQUENCE_RANGES,
    TISSUE_PARAMETERS,
    contrast_signal,
    csf_null_inversion_time,
    inversion_recovery,
    spin_echo,
)


def _mid_sequence(contrast: str) -> dict[str, float]:
    seq = {k: float(np.mean(v)) for k, v in SEQUENCE_RANGES[contrast].items()}
    if contrast == "flair":
        seq["ti"] = csf_null_inversion_time(TISSUE_PARAMETERS["csf"]["t1"], seq["tr"])
    return seq


def _signal(contrast: str, tissue: str) -> float:
    return float(contrast_signal(contrast, TISSUE_PARAMETERS[tissue], _mid_sequence(contrast)))


def _lesion(factor: float = 0.5) -> dict[str, float]:
    wm = TISSUE_PARAMETERS["wm"]
    lo_hi = LESION_PARAMETER_RANGES
    return {
        "t1": wm["t1"] * np.interp(factor, [0, 1], lo_hi["t1_factor"]),
        "t2": wm["t2"] * np.interp(factor, [0, 1], lo_hi["t2_factor"]),
        "pd": np.interp(factor, [0, 1], lo_hi["pd"]),
    }


class TestSignalEquations(unittest.TestCase):
    def test_spin_echo_limits(self):
        # fully relaxed, no T2 decay: the signal is the proton density
        self.assertAlmostEqual(float(spin_echo(0.7, 800.0, 80.0, tr=1e7, te=1e-6)), 0.7, places=6)
        # one T1 of recovery and one T2 of decay
        self.assertAlmostEqual(float(spin_echo(1.0, 800.0, 80.0, tr=800.0, te=80.0)), (1 - np.e**-1) * np.e**-1)

    def test_inversion_recovery_nulls_at_null_time(self):
        t1, tr = 4300.0, 9000.0
        ti = csf_null_inversion_time(t1, tr)
        self.assertLess(float(inversion_recovery(1.0, t1, 2000.0, tr, 100.0, ti)), 1e-12)
        self.assertGreater(float(inversion_recovery(1.0, t1, 2000.0, tr, 100.0, ti / 2)), 0.1)

    def test_broadcasts_arrays(self):
        out = spin_echo(np.ones((2, 3)), np.full((2, 3), 900.0), 80.0, tr=500.0, te=10.0)
        self.assertEqual(out.shape, (2, 3))

    @parameterized.expand([("t1", -1.0), ("tr", 0.0)])
    def test_rejects_non_positive_times(self, name, value):
        kwargs = {"t1": 800.0, "t2": 80.0, "tr": 500.0, "te": 10.0}
        kwargs[name] = value
        with self.assertRaisesRegex(ValueError, name):
            spin_echo(1.0, **kwargs)

    def test_unknown_contrast(self):
        with self.assertRaisesRegex(ValueError, "unknown contrast"):
            contrast_signal("dwi", TISSUE_PARAMETERS["wm"], {"tr": 1.0, "te": 1.0})

    def test_missing_parameter(self):
        with self.assertRaisesRegex(ValueError, "ti"):
            contrast_signal("flair", TISSUE_PARAMETERS["wm"], {"tr": 9000.0, "te": 100.0})


class TestTissueContrast(unittest.TestCase):
    """Pure-tissue signals at mid-range scanner parameters follow the textbook ordering."""

    def test_t1w(self):
        self.assertGreater(_signal("t1w", "wm"), 1.3 * _signal("t1w", "gm"))
        self.assertGreater(_signal("t1w", "gm"), 2.0 * _signal("t1w", "csf"))

    def test_t2w(self):
        self.assertGreater(_signal("t2w", "csf"), 1.5 * _signal("t2w", "gm"))
        self.assertGreater(_signal("t2w", "gm"), _signal("t2w", "wm"))

    def test_pd_and_flair(self):
        self.assertGreater(_signal("pd", "gm"), _signal("pd", "wm"))
        self.assertLess(_signal("flair", "csf"), 0.01 * _signal("flair", "wm"))
        self.assertGreater(_signal("flair", "gm"), _signal("flair", "wm"))

    @parameterized.expand([(0.0,), (0.5,), (1.0,)])
    def test_lesions_t1_dark_t2_flair_bright(self, factor):
        lesion = _lesion(factor)
        seq = {c: _mid_sequence(c) for c in CONTRASTS}
        wm = {c: _signal(c, "wm") for c in CONTRASTS}
        gm = {c: _signal(c, "gm") for c in CONTRASTS}
        les = {c: float(contrast_signal(c, lesion, seq[c])) for c in CONTRASTS}
        self.assertLess(les["t1w"], 0.85 * wm["t1w"])
        self.assertGreater(les["t2w"], 1.15 * gm["t2w"])
        self.assertGreater(les["flair"], 1.2 * gm["flair"])


if __name__ == "__main__":
    unittest.main()
