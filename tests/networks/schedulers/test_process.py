"""The forward-process layer: prediction types, the one definition of fractional timesteps, the adapter for any
scheduler (ours, MONAI's, diffusers-like) and ``check_forward_process``."""

from __future__ import annotations

import importlib.util
import math
import unittest
from types import SimpleNamespace

import torch
from monai.networks.schedulers import DDIMScheduler as MonaiDDIMScheduler
from monai.networks.schedulers import DDPMScheduler as MonaiDDPMScheduler
from monai.networks.schedulers.ddpm import DDPMPredictionType
from parameterized import parameterized

from monai_diffusion.apps.reconstruction import scheduler_coefficients
from monai_diffusion.exact import ExactModel, GaussianMixture, GaussianPriorDenoiser, StationaryGaussianPrior
from monai_diffusion.inferers import utils as inferer_utils
from monai_diffusion.inferers.posterior import noise_level
from monai_diffusion.networks.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerKarrasScheduler,
    EulerMaruyamaScheduler,
    HeunKarrasScheduler,
    NCSNScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    UniPCMultistepScheduler,
)
from monai_diffusion.networks.schedulers.process import (
    PREDICTION_TYPES,
    PredictionType,
    check_forward_process,
    log_sigma_table,
    log_sigma_to_timestep,
    marginal_coefficients,
    prediction_type_of,
    table_coefficients,
)
from tests.test_utils import assert_allclose, make_input

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None  # a benchmark-only dependency (`bench` extra)
INTEGER_TIMES = torch.tensor([0, 1, 10, 500, 998, 999])
FRACTIONAL_TIMES = torch.tensor([0.5, 10.25, 500.5, 998.75], dtype=torch.float64)
MIXTURE = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-0.8, 0.6]), torch.tensor([0.2, 0.3]))


def linear_table(n: int = 1000) -> torch.Tensor:
    """DDPM's linear-beta ``alphas_cumprod`` (1e-4 .. 0.02), float32 as MONAI and diffusers keep it."""
    return torch.cumprod(1.0 - torch.linspace(1e-4, 0.02, n, dtype=torch.float64), 0).float()


class DiffusersLike:
    """A duck-typed diffusers-style scheduler: an ``alphas_cumprod`` table and its settings in ``config``."""

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon") -> None:
        self.alphas_cumprod = alphas_cumprod
        self.config = SimpleNamespace(num_train_timesteps=int(alphas_cumprod.numel()), prediction_type=prediction_type)

    def add_noise(self, original_samples, noise, timesteps):
        abar = self.alphas_cumprod.to(original_samples.dtype)[timesteps.long()].reshape(-1, 1, 1)
        return abar.sqrt() * original_samples + (1 - abar).sqrt() * noise


class ForgetsTheSquareRoot(DiffusersLike):
    """Broken: its training forward process uses ``abar`` where ``sqrt(abar)`` belongs."""

    def add_noise(self, original_samples, noise, timesteps):
        abar = self.alphas_cumprod.to(original_samples.dtype)[timesteps.long()].reshape(-1, 1, 1)
        return abar * original_samples + (1 - abar).sqrt() * noise


class ReversedSchedule:
    """Broken: coefficients whose signal-to-noise ratio grows with the timestep."""

    num_train_timesteps = 1000

    def marginal_coefficients(self, timesteps):
        return table_coefficients(linear_table().flip(0), timesteps)


class NotANumber:
    num_train_timesteps = 1000

    def marginal_coefficients(self, timesteps):
        t = torch.as_tensor(timesteps, dtype=torch.float64)
        return torch.full_like(t, float("nan")), torch.ones_like(t)


#: (name, factory, kind): "table" = our discrete VP samplers, "monai"/"duck" = a bare alphas_cumprod table,
#: "vp"/"subvp"/"ve" = an SDE sampler of that process
FAMILIES = [
    ("ours_ddpm", lambda: DDPMScheduler(), "table"),
    ("ours_ddim", lambda: DDIMScheduler(), "table"),
    ("ours_dpm_solver", lambda: DPMSolverMultistepScheduler(), "table"),
    ("ours_unipc", lambda: UniPCMultistepScheduler(), "table"),
    ("ours_euler_karras", lambda: EulerKarrasScheduler(), "table"),
    ("ours_heun_karras", lambda: HeunKarrasScheduler(), "table"),
    ("ours_ncsn", lambda: NCSNScheduler(), "ve"),
    ("ours_euler_maruyama_vp", lambda: EulerMaruyamaScheduler(sde="vp"), "vp"),
    ("ours_predictor_corrector_subvp", lambda: PredictorCorrectorScheduler(sde="subvp"), "subvp"),
    ("ours_probability_flow_ve", lambda: ProbabilityFlowScheduler(sde="ve"), "ve"),
    ("monai_ddpm", lambda: MonaiDDPMScheduler(1000), "monai"),
    ("monai_ddim", lambda: MonaiDDIMScheduler(1000), "monai"),
    ("diffusers_like", lambda: DiffusersLike(linear_table()), "duck"),
]


class TestPredictionType(unittest.TestCase):
    def test_members_are_the_strings(self):
        self.assertEqual(PREDICTION_TYPES, ("epsilon", "sample", "v_prediction"))
        self.assertEqual(PredictionType.V_PREDICTION, "v_prediction")
        self.assertIs(PredictionType.of("sample"), PredictionType.SAMPLE)
        self.assertIs(PredictionType.of(DDPMPredictionType.V_PREDICTION), PredictionType.V_PREDICTION)
        with self.assertRaisesRegex(ValueError, r"prediction_type must be one of .*got 'score'"):
            PredictionType.of("score")
        with self.assertRaisesRegex(ValueError, "my_argument must be one of"):
            PredictionType.of("x0", "my_argument")

    @parameterized.expand([(p,) for p in PREDICTION_TYPES])
    def test_conversions_invert_each_other(self, prediction_type):
        ptype = PredictionType.of(prediction_type)
        x0, eps = make_input((3, 1, 4, 4), dtype=torch.float64), make_input((3, 1, 4, 4), 1, torch.float64)
        for alpha, sigma in ((torch.tensor([0.9, 0.5, 0.1]), None), (torch.ones(3), torch.tensor([0.1, 2.0, 30.0]))):
            a = alpha.double()
            s = (1 - a**2).sqrt() if sigma is None else sigma.double()
            x = a.reshape(-1, 1, 1, 1) * x0 + s.reshape(-1, 1, 1, 1) * eps
            out = ptype.from_x0_eps(x0, eps, a, s)  # the training target
            x0_hat, eps_hat = ptype.to_x0_eps(out, x, a, s)
            assert_allclose(x0_hat, x0, atol=1e-9)
            assert_allclose(eps_hat, eps, atol=1e-9)
            assert_allclose(ptype.from_eps(eps, x, a, s), out, atol=1e-9)
            assert_allclose(ptype.from_x0(x0, x, a, s), out, atol=1e-9)
        with self.assertRaisesRegex(ValueError, "must match"):
            ptype.to_x0_eps(x0[:1], x0, 1.0, 1.0)

    def test_prediction_type_of_any_scheduler(self):
        self.assertIs(prediction_type_of(DDIMScheduler(prediction_type="sample")), PredictionType.SAMPLE)
        monai = MonaiDDPMScheduler(10, prediction_type=DDPMPredictionType.V_PREDICTION)
        self.assertIs(prediction_type_of(monai), PredictionType.V_PREDICTION)
        self.assertIs(prediction_type_of(DiffusersLike(linear_table(), "v_prediction")), PredictionType.V_PREDICTION)
        self.assertIs(prediction_type_of(object()), PredictionType.EPSILON)
        with self.assertRaisesRegex(ValueError, "DiffusersLike.prediction_type must be one of"):
            prediction_type_of(DiffusersLike(linear_table(), "flow"))


class TestFractionalTimesteps(unittest.TestCase):
    def test_integer_times_give_the_table_exactly(self):
        table = linear_table()
        alpha, sigma = table_coefficients(table, INTEGER_TIMES)
        abar = table.double()[INTEGER_TIMES]
        self.assertTrue(torch.equal(alpha, abar.sqrt()))
        self.assertTrue(torch.equal(sigma, (1 - abar).sqrt()))
        self.assertEqual(alpha.dtype, torch.float64)

    def test_fractional_times_interpolate_log_sigma(self):
        """The one definition: ``log sigma`` (minus half the log-SNR) is linear between integer times."""
        table = linear_table()
        ls = log_sigma_table(table)
        alpha, sigma = table_coefficients(table, FRACTIONAL_TIMES)
        lo, w = FRACTIONAL_TIMES.floor().long(), FRACTIONAL_TIMES - FRACTIONAL_TIMES.floor()
        expected = (1 - w) * ls[lo] + w * ls[lo + 1]
        assert_allclose(torch.log(sigma / alpha), expected, rtol=0, atol=1e-12)
        assert_allclose(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-14)
        # and its inverse maps the noise levels back to the same times
        assert_allclose(log_sigma_to_timestep(table, expected), FRACTIONAL_TIMES, rtol=0, atol=1e-9)

    def test_range_and_table_are_checked(self):
        with self.assertRaisesRegex(ValueError, r"timesteps must lie in \[0, 999\]"):
            table_coefficients(linear_table(), torch.tensor([999.5]))
        with self.assertRaisesRegex(ValueError, "alphas_cumprod must hold"):
            table_coefficients(torch.tensor([0.5, 1.5]), 0)
        with self.assertRaisesRegex(TypeError, "marginal_coefficients"):
            marginal_coefficients(object(), 0)

    @parameterized.expand(FAMILIES)
    def test_every_family_gives_consistent_coefficients(self, _name, factory, kind):
        scheduler = factory()
        n = 1000
        for t in (INTEGER_TIMES, FRACTIONAL_TIMES):
            alpha, sigma = marginal_coefficients(scheduler, t)
            self.assertEqual((alpha.dtype, alpha.shape), (torch.float64, t.shape))
            # every entry point of the package reads the same coefficients
            for other in (
                inferer_utils.marginal_coefficients(scheduler, t),
                scheduler_coefficients(scheduler, t),
                ExactModel(MIXTURE, scheduler).coefficients(t),
                torch.tensor([noise_level(scheduler, ti) for ti in t], dtype=torch.float64).T,
            ):
                assert_allclose(torch.stack(list(other)), torch.stack([alpha, sigma]), rtol=0, atol=1e-15)
            # ... and against the reference of its kind
            if kind in ("table", "monai", "duck"):
                ref = table_coefficients(scheduler.alphas_cumprod, t)
                assert_allclose(torch.stack([alpha, sigma]), torch.stack(ref), rtol=0, atol=1e-15)
                # every VP table of the linear schedule is the same forward process, fractional times included (to
                # the rounding of float32 tables: MONAI multiplies them up in float32)
                assert_allclose(torch.stack(ref), torch.stack(table_coefficients(linear_table(), t)), atol=1e-5)
            else:
                ref = scheduler.sde.marginal(t.double() / (n - 1))
                assert_allclose(torch.stack([alpha, sigma]), torch.stack(ref), rtol=0, atol=1e-15)
            if kind in ("table", "monai", "duck", "vp"):
                assert_allclose(alpha**2 + sigma**2, torch.ones_like(alpha), rtol=0, atol=1e-6)
        # a fractional time lies between its integer neighbours
        a_frac, s_frac = marginal_coefficients(scheduler, FRACTIONAL_TIMES)
        a_lo, s_lo = marginal_coefficients(scheduler, FRACTIONAL_TIMES.floor())
        a_hi, s_hi = marginal_coefficients(scheduler, FRACTIONAL_TIMES.ceil())
        self.assertTrue(bool(((a_hi <= a_frac) & (a_frac <= a_lo)).all()))
        self.assertTrue(bool(((s_lo <= s_frac) & (s_frac <= s_hi)).all()))
        # the training forward process follows the same coefficients (integer times for MONAI's add_noise)
        x0, eps = torch.ones(len(INTEGER_TIMES), 1, 1), torch.zeros(len(INTEGER_TIMES), 1, 1)
        a_int, s_int = marginal_coefficients(scheduler, INTEGER_TIMES)
        assert_allclose(scheduler.add_noise(x0, eps, INTEGER_TIMES).double().reshape(-1), a_int, atol=1e-6)
        assert_allclose(scheduler.add_noise(eps, x0, INTEGER_TIMES).double().reshape(-1), s_int, rtol=1e-6)
        if kind not in ("monai", "duck"):
            x0, eps = torch.ones(len(FRACTIONAL_TIMES), 1, 1), torch.zeros(len(FRACTIONAL_TIMES), 1, 1)
            assert_allclose(scheduler.add_noise(x0, eps, FRACTIONAL_TIMES).double().reshape(-1), a_frac, atol=1e-6)

    def test_vp_sde_matches_the_table_of_its_own_integer_times(self):
        """The VP SDE sampler's closed form and the interpolation of its own ``alphas_cumprod`` agree between
        integer times to the interpolation error, and the DDPM table to the continuum-limit error."""
        s = EulerMaruyamaScheduler(sde="vp")
        t = FRACTIONAL_TIMES[1:]  # its table starts noise-free (abar_0 = 1): no log-SNR interpolation next to it
        with self.assertRaisesRegex(ValueError, "noise-free entry"):
            table_coefficients(s.alphas_cumprod, FRACTIONAL_TIMES)
        a_sde, s_sde = marginal_coefficients(s, t)
        a_tab, s_tab = table_coefficients(s.alphas_cumprod, t)
        assert_allclose(a_sde, a_tab, rtol=1e-3, atol=1e-6)  # log sigma is not linear in t: 6e-4 relative at t = 10
        assert_allclose(s_sde, s_tab, rtol=1e-3, atol=1e-6)
        a_ddpm, s_ddpm = marginal_coefficients(DDPMScheduler(), t)
        self.assertLess(float((s_sde - s_ddpm).abs().max()), 0.0101)
        self.assertLess(float((a_sde - a_ddpm).abs().max()), 0.0017)

    def test_gaussian_prior_oracle_reads_the_same_coefficients(self):
        prior = StationaryGaussianPrior(torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
        for scheduler in (MonaiDDIMScheduler(1000), DDIMScheduler()):
            got = GaussianPriorDenoiser(prior, scheduler).coefficients(FRACTIONAL_TIMES)
            assert_allclose(torch.stack(got), torch.stack(marginal_coefficients(scheduler, FRACTIONAL_TIMES)))


class TestCheckForwardProcess(unittest.TestCase):
    @parameterized.expand(
        [
            ("ours_vs_diffusers_like", lambda: DDPMScheduler(), lambda: DiffusersLike(linear_table()), 1e-6),
            ("monai_vs_ours", lambda: MonaiDDPMScheduler(1000), lambda: DDIMScheduler(), 1e-5),
            (
                "diffusers_like_vs_vp_sde",
                lambda: DiffusersLike(linear_table()),
                lambda: EulerMaruyamaScheduler(),
                0.011,
            ),
            ("ncsn_vs_ve_sde", lambda: NCSNScheduler(), lambda: ProbabilityFlowScheduler(sde="ve"), 1e-12),
        ]
    )
    def test_shared_processes_pass(self, _name, trained, sampler, bound):
        self.assertLessEqual(check_forward_process(trained(), sampler()), bound)

    def test_one_scheduler_alone(self):
        for _, factory, _ in FAMILIES:
            self.assertEqual(check_forward_process(factory()), 0.0)

    @parameterized.expand(
        [
            ("add_noise_without_sqrt", lambda: ForgetsTheSquareRoot(linear_table()), "add_noise disagrees"),
            ("snr_rising", ReversedSchedule, "signal-to-noise ratio must not increase"),
            ("nan", NotANumber, "must be finite"),
        ]
    )
    def test_catches_a_broken_scheduler(self, _name, broken, message):
        with self.assertRaisesRegex(ValueError, message):
            check_forward_process(broken())
        with self.assertRaisesRegex(ValueError, message):  # as a sampler too
            check_forward_process(DDPMScheduler(), broken())
        with self.assertRaisesRegex(ValueError, message):  # and as the trained_with guard of a sampler
            DDIMScheduler(trained_with=broken())

    def test_catches_a_different_process(self):
        with self.assertRaisesRegex(ValueError, "cannot sample a model trained with"):
            check_forward_process(DiffusersLike(linear_table()), NCSNScheduler())
        cosine = DDPMScheduler(schedule="cosine").alphas_cumprod
        with self.assertRaisesRegex(ValueError, r"at timestep [0-9.]+ the training process"):
            check_forward_process(DiffusersLike(cosine), DPMSolverMultistepScheduler())
        with self.assertRaisesRegex(ValueError, "num_train_timesteps=500"):
            check_forward_process(DiffusersLike(linear_table(500)), DDIMScheduler())
        self.assertTrue(math.isfinite(check_forward_process(DiffusersLike(cosine), DDIMScheduler(schedule="cosine"))))


@unittest.skipUnless(HAS_DIFFUSERS, "diffusers is not installed")
class TestDiffusers(unittest.TestCase):
    def test_real_diffusers_schedulers(self):
        """diffusers' DDPM and its Euler scheduler (which adds noise in the VE form) share our forward process."""
        import warnings

        from diffusers import DDPMScheduler as DiffusersDDPM
        from diffusers import EulerDiscreteScheduler

        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # read settings from `config`, not deprecated attributes
            for s in (
                DiffusersDDPM(beta_start=1e-4, beta_end=0.02),
                EulerDiscreteScheduler(beta_start=1e-4, beta_end=0.02),
            ):
                for t in (INTEGER_TIMES, FRACTIONAL_TIMES):
                    got = marginal_coefficients(s, t)
                    assert_allclose(torch.stack(got), torch.stack(table_coefficients(linear_table(), t)), atol=1e-5)
                self.assertLess(check_forward_process(s, DDIMScheduler()), 1e-5)
                self.assertLess(check_forward_process(s, EulerMaruyamaScheduler()), 0.011)
            v = EulerDiscreteScheduler(prediction_type="v_prediction")
            self.assertEqual(ExactModel(MIXTURE, v).prediction_type, "v_prediction")


if __name__ == "__main__":
    unittest.main()
