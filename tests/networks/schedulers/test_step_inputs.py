"""Entry checks every scheduler's ``step`` must make (issue 12), and the Langevin step size with a zero score.

Every concrete scheduler exported by :mod:`monai_diffusion.networks.schedulers` is found by introspection, so a new
one is covered without editing this file. ``step`` must reject, naming the argument:

* integer ``model_output`` / ``sample`` (``TypeError``: they would be silently truncated);
* NaN or inf in ``model_output`` / ``sample`` (``ValueError``), at the first entry and in the middle of a run
  (second-order corrections and multistep updates take other code paths);

and a rejected call must not advance the scheduler. The SDE/Langevin samplers must give a finite sample for a freshly
built MONAI ``DiffusionModelUNet``, whose zero-initialised output layer makes the score exactly zero.
"""

from __future__ import annotations

import inspect
import unittest

import torch
from parameterized import parameterized

import monai_diffusion.networks.schedulers as schedulers
from monai_diffusion.inferers import DiffusionInferer
from monai_diffusion.networks.schedulers import (
    BaseScheduler,
    EulerMaruyamaScheduler,
    NCSNScheduler,
    PredictorCorrectorScheduler,
)
from monai_diffusion.networks.schedulers.continuous import ContinuousTimeScheduler
from monai_diffusion.networks.schedulers.sde_steps import langevin_corrector_step
from tests.test_utils import SPATIAL_2D, SPATIAL_3D, tiny_unet

#: bases that are not samplers themselves
_ABSTRACT = {"BaseScheduler", "DiscreteTimeScheduler", "ContinuousTimeScheduler"}


def scheduler_classes() -> list[type]:
    """Every concrete scheduler class the package exports."""
    found = [
        obj
        for name, obj in vars(schedulers).items()
        if inspect.isclass(obj) and issubclass(obj, BaseScheduler) and name not in _ABSTRACT
    ]
    return sorted(found, key=lambda c: c.__name__)


CLASSES = [(c.__name__, c) for c in scheduler_classes()]
SHAPES = [("2d", (2, 1, *SPATIAL_2D)), ("3d", (1, 1, *SPATIAL_3D))]


def _ready(cls: type) -> BaseScheduler:
    s = cls()
    s.set_timesteps(6)
    return s


def _corrupt(x: torch.Tensor, value: float) -> torch.Tensor:
    out = x.clone()
    out.view(-1)[out.numel() // 2] = value
    return out


class TestDiscovery(unittest.TestCase):
    def test_every_family_is_covered(self):
        names = {name for name, _ in CLASSES}
        expected = {
            "DDPMScheduler",
            "DDIMScheduler",
            "DPMSolverMultistepScheduler",
            "EulerKarrasScheduler",
            "HeunKarrasScheduler",
            "UniPCMultistepScheduler",
            "NCSNScheduler",
            "EulerMaruyamaScheduler",
            "PredictorCorrectorScheduler",
            "ProbabilityFlowScheduler",
        }
        self.assertTrue(expected <= names, f"missing from the contract: {sorted(expected - names)}")


class TestStepInputs(unittest.TestCase):
    @parameterized.expand(CLASSES)
    def test_integer_inputs_rejected(self, _, cls):
        s = _ready(cls)
        t = s.timesteps[0]
        x = torch.ones(2, 1, *SPATIAL_2D)
        with self.assertRaisesRegex(TypeError, r"^sample must be a floating-point tensor, got torch\.int64"):
            s.step(x, t, x.long())
        with self.assertRaisesRegex(TypeError, r"^model_output must be a floating-point tensor, got torch\.int32"):
            s.step(x.int(), t, x)

    @parameterized.expand(CLASSES)
    def test_non_finite_inputs_rejected_and_name_the_argument(self, _, cls):
        for shape_name, shape in SHAPES:
            x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
            for arg, value in (
                ("model_output", float("nan")),
                ("model_output", float("-inf")),
                ("sample", float("inf")),
                ("sample", float("nan")),
            ):
                with self.subTest(shape=shape_name, arg=arg, value=value):
                    s = _ready(cls)
                    t = s.timesteps[0]
                    model_output = _corrupt(x, value) if arg == "model_output" else x
                    sample = _corrupt(x, value) if arg == "sample" else x
                    with self.assertRaisesRegex(ValueError, rf"^{arg} holds 1 NaN or infinite value"):
                        s.step(model_output, t, sample)

    @parameterized.expand(CLASSES)
    def test_non_finite_rejected_mid_run_without_advancing(self, _, cls):
        s = _ready(cls)
        x = torch.randn(2, 1, *SPATIAL_2D, generator=torch.Generator().manual_seed(1)) * float(s.init_noise_sigma)
        gen = torch.Generator().manual_seed(0)
        x, _ = s.step(0.1 * x, s.timesteps[0], x, generator=gen)
        t = s.timesteps[1]
        with self.assertRaisesRegex(ValueError, r"^model_output holds"):
            s.step(_corrupt(x, float("nan")), t, x, generator=gen)
        with self.assertRaisesRegex(ValueError, r"^sample holds"):
            s.step(0.1 * x, t, _corrupt(x, float("inf")), generator=gen)
        # the rejected calls left the position alone: the same entry still steps, to a finite result
        out, x0 = s.step(0.1 * x, t, x, generator=gen)
        self.assertTrue(bool(torch.isfinite(out).all() & torch.isfinite(x0).all()))


#: the SDE and Langevin samplers (every one whose step size or update divides by the score's norm or scale)
LANGEVIN_CASES = [
    ("pc_vp", PredictorCorrectorScheduler, {}),
    ("pc_ve", PredictorCorrectorScheduler, {"sde": "ve"}),
    ("pc_subvp_corrector_only", PredictorCorrectorScheduler, {"sde": "subvp", "predictor": "none", "n_corrector": 2}),
    ("pc_no_denoise", PredictorCorrectorScheduler, {"denoise": False, "predictor": "euler_maruyama"}),
    ("euler_maruyama", EulerMaruyamaScheduler, {}),
    ("ncsn", NCSNScheduler, {}),
]


class TestZeroModelOutput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.unet = tiny_unet(2).eval()

    def test_fresh_unet_outputs_zero(self):
        """The premise of the next test: MONAI zero-initialises the UNet's output layer."""
        with torch.no_grad():
            out = self.unet(torch.randn(2, 1, *SPATIAL_2D), torch.tensor([10, 500]))
        self.assertEqual(float(out.abs().max()), 0.0)

    @parameterized.expand(LANGEVIN_CASES)
    def test_fresh_unet_sample_is_finite(self, _, cls, kwargs):
        scheduler = cls(**kwargs)
        self.assertIsInstance(scheduler, ContinuousTimeScheduler)
        scheduler.set_timesteps(6)
        noise = torch.randn(2, 1, *SPATIAL_2D, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            out = DiffusionInferer(scheduler).sample(
                noise, self.unet, scheduler, generator=torch.Generator().manual_seed(0)
            )
        self.assertEqual(tuple(out.shape), tuple(noise.shape))
        self.assertTrue(bool(torch.isfinite(out).all()), f"{cls.__name__}({kwargs}) gave NaN/inf")

    def test_langevin_corrector_with_zero_or_underflowing_score(self):
        """A zero score leaves the sample unchanged; a score so small that the step size overflows does too."""
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
        z = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
        for dtype in (torch.float16, torch.float32, torch.float64):
            for magnitude in (0.0, 1e-30):
                score = torch.full_like(x, magnitude, dtype=dtype)
                out = langevin_corrector_step(x.to(dtype), score, z.to(dtype), snr=0.16, alpha=1.0)
                self.assertTrue(bool(torch.isfinite(out).all()), f"{dtype}, |score| = {magnitude}")
                if magnitude == 0.0:
                    torch.testing.assert_close(out, x.to(dtype), rtol=0, atol=0)


if __name__ == "__main__":
    unittest.main()
