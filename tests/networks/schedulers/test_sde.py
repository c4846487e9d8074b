"""Score SDEs (VP, sub-VP, VE) and their samplers: maths, compatibility, exact-score accuracy and the contract."""

from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser
from monai.inferers import DiffusionInferer
from monai.networks.schedulers import DDPMScheduler as MonaiDDPMScheduler
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture, mixture_weight_error, wasserstein1
from monai_diffusion.networks.schedulers import (
    VESDE,
    VPSDE,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerMaruyamaScheduler,
    NCSNScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    SubVPSDE,
    check_forward_process,
)
from monai_diffusion.networks.schedulers.sde import (
    build_sde,
    langevin_corrector_step,
    reverse_diffusion_step,
    sde_from_training_scheduler,
)
from tests.networks.schedulers.contract import SchedulerContract, sample_loop
from tests.test_utils import assert_allclose, assert_close_scalar, make_input, skip_if_no_cuda

SDES = [("vp", VPSDE()), ("subvp", SubVPSDE()), ("ve", VESDE())]

#: the mixture every exact-score test must reproduce (1D, every element an i.i.d. draw)
MIXTURE = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([-0.8, 0.6]), torch.tensor([0.25, 0.35]))
#: 8192 i.i.d. draws per run: the W1 Monte-Carlo floor is about 0.01
SHAPE = (2, 1, 64, 64)


#: mean and standard deviation of :data:`MIXTURE`
MEAN = float((MIXTURE.weights * MIXTURE.means).sum())
STD = float(((MIXTURE.weights * (MIXTURE.stds**2 + MIXTURE.means**2)).sum() - MEAN**2).sqrt())


def exact_samples(scheduler, nfe: int, seed: int = 0) -> tuple[torch.Tensor, int]:
    """(samples, model calls) of ``scheduler`` driven by the exact epsilon of :data:`MIXTURE`."""
    scheduler.set_timesteps(nfe)
    model = ExactModel(MIXTURE, scheduler)
    noise = make_input(SHAPE, seed=seed)
    x, _ = sample_loop(scheduler, model, noise, torch.Generator().manual_seed(seed + 1))
    return x, model.calls


def exact_errors(scheduler, nfe: int, seed: int = 0) -> tuple[float, float, int]:
    """(W1, weight error, model calls) of ``scheduler`` driven by the exact epsilon of :data:`MIXTURE`."""
    x, calls = exact_samples(scheduler, nfe, seed)
    return wasserstein1(x, MIXTURE), mixture_weight_error(x, MIXTURE), calls


class TestSDEMaths(unittest.TestCase):
    @parameterized.expand(SDES)
    def test_marginal_solves_the_moment_equations(self, _, sde):
        # for dx = f(t) x dt + g(t) dw: d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2
        t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
        h = 1e-6
        a_p, s_p = sde.marginal(t + h)
        a_m, s_m = sde.marginal(t - h)
        a, s = sde.marginal(t)
        f = sde.drift_coef(t)
        assert_allclose((a_p - a_m) / (2 * h), f * a, rtol=1e-6, atol=1e-8)
        assert_allclose((s_p**2 - s_m**2) / (2 * h), 2 * f * s**2 + sde.diffusion(t) ** 2, rtol=1e-6, atol=1e-6)

    def test_closed_forms(self):
        t = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
        big_b = 0.1 * t + 0.5 * 19.9 * t**2
        a, s = VPSDE().marginal(t)
        assert_allclose(a, torch.exp(-0.5 * big_b), rtol=1e-12)
        assert_allclose(s**2 + a**2, torch.ones(3, dtype=torch.float64), rtol=1e-12)
        a, s = SubVPSDE().marginal(t)
        assert_allclose(s, 1 - torch.exp(-big_b), rtol=1e-12, atol=1e-15)
        a, s = VESDE(0.01, 50.0).marginal(t)
        assert_allclose(a, torch.ones(3, dtype=torch.float64))
        assert_allclose(s, 0.01 * 5000.0**t, rtol=1e-12)

    @parameterized.expand(SDES)
    def test_marginal_matches_simulated_forward_sde(self, _, sde):
        # Euler-Maruyama on the forward SDE from x0 = 1 with fine steps reproduces mean alpha and std sigma
        g = torch.Generator().manual_seed(0)
        n, steps = 20000, 400
        x = torch.ones(n, dtype=torch.float64)
        t0 = 0.2
        x = sde.marginal(t0)[0] * x + sde.marginal(t0)[1] * torch.randn(n, generator=g, dtype=torch.float64)
        dt = (0.7 - t0) / steps
        for i in range(steps):
            t = torch.tensor(t0 + i * dt, dtype=torch.float64)
            x = x + sde.drift_coef(t) * x * dt + sde.diffusion(t) * dt**0.5 * torch.randn(n, generator=g).double()
        a, s = sde.marginal(0.7)
        self.assertLess(abs(float(x.mean()) - float(a)), 4 * float(s) / n**0.5 + 2e-3 * float(a))
        self.assertLess(abs(float(x.std()) / float(s) - 1.0), 0.03)

    @parameterized.expand(SDES)
    def test_transition_composes(self, _, sde):
        a_ts, b_ts = sde.transition(0.8, 0.5)
        a_su, b_su = sde.transition(0.5, 0.2)
        a_tu, b_tu = sde.transition(0.8, 0.2)
        assert_allclose(a_ts * a_su, a_tu, rtol=1e-12)
        assert_allclose(a_ts**2 * b_su**2 + b_ts**2, b_tu**2, rtol=1e-9)

    def test_vp_sde_is_the_ddpm_linear_schedule(self):
        # the continuum limit, with network timestep = t (N - 1): every integer timestep agrees to stated bounds
        for ddpm in (DDPMScheduler(), MonaiDDPMScheduler(1000)):
            abar = torch.as_tensor(ddpm.alphas_cumprod, dtype=torch.float64)
            sampler = ProbabilityFlowScheduler(sde="vp")
            a, s = sampler.marginal_coefficients(torch.arange(1000))
            self.assertLess(float((a - abar.sqrt()).abs().max()), 0.0017)
            self.assertLess(float((s - (1 - abar).sqrt()).abs().max()), 0.0101)
            assert_allclose(sampler.alphas_cumprod, a**2, rtol=1e-6)
            self.assertEqual(sde_from_training_scheduler(ddpm), VPSDE(0.1, 20.0))

    @parameterized.expand(SDES)
    def test_reverse_diffusion_is_consistent(self, _, sde):
        # data N(0, 1): x_t ~ N(0, V_t), V_t = alpha^2 + sigma^2. One reverse-diffusion step with the exact score
        # maps N(0, V_t) to N(0, c^2 V_t + G^2) for its linear coefficient c; the local error against V_s must be
        # second order in the step (ratio ~4 when the step halves)
        x = torch.ones((), dtype=torch.float64)

        def variance_error(t: float, s: float) -> float:
            a_t, s_t = sde.marginal(t)
            a_s, s_s = sde.marginal(s)
            v_t, v_s = a_t**2 + s_t**2, a_s**2 + s_s**2
            c = reverse_diffusion_step(x, -x / v_t, sde, torch.tensor(t), torch.tensor(s), None)
            _, big_g = sde.transition(t, s)
            return abs(float(c**2 * v_t + big_g**2 - v_s)) / float(v_s)

        e1, e2 = variance_error(0.6, 0.58), variance_error(0.6, 0.59)
        self.assertLess(variance_error(0.6, 0.599), 1e-3)
        self.assertGreater(e1 / e2, 3.0)
        self.assertLess(e1 / e2, 5.0)

    def test_langevin_corrector_step_size_follows_snr(self):
        x = make_input((2, 1, 8, 8), seed=0, dtype=torch.float64)
        score = -x
        noise = make_input((2, 1, 8, 8), seed=1, dtype=torch.float64)
        out = langevin_corrector_step(x, score, noise, snr=0.1, alpha=1.0)
        ratio = (noise.flatten(1).norm(dim=1) / score.flatten(1).norm(dim=1)).reshape(-1, 1, 1, 1)
        step = 2 * (0.1 * ratio) ** 2
        assert_allclose(out, x + step * score + (2 * step).sqrt() * noise, rtol=1e-12)

    def test_build_sde(self):
        self.assertEqual(build_sde("ve", {"sigma_max": 20.0}), VESDE(0.01, 20.0))
        self.assertEqual(build_sde({"name": "subvp", "beta_max": 10.0}), SubVPSDE(0.1, 10.0))
        sde = VPSDE(0.2, 10.0)
        self.assertIs(build_sde(sde), sde)
        with self.assertRaisesRegex(ValueError, "unknown SDE"):
            build_sde("vpp")
        with self.assertRaisesRegex(ValueError, "sde_args"):
            build_sde(sde, {"beta_min": 0.1})
        with self.assertRaises(TypeError):
            build_sde(3)
        with self.assertRaisesRegex(ValueError, "sigma_min < sigma_max"):
            VESDE(1.0, 0.5)

    def test_prior(self):
        for _, sde in SDES:
            z = sde.prior_sample((4, 1, 32, 32), torch.Generator().manual_seed(0))
            self.assertAlmostEqual(float(z.std()) / sde.prior_std, 1.0, delta=0.05)
            # the marginal at t = 1 is (close to) the prior: sigma ~ prior_std, and for VP/sub-VP alpha ~ 0
            a, s = sde.marginal(1.0)
            self.assertAlmostEqual(float(s) / sde.prior_std, 1.0, delta=1e-3)
            if not isinstance(sde, VESDE):
                self.assertLess(float(a), 0.01)
        self.assertEqual(EulerMaruyamaScheduler(sde="ve").init_noise_sigma, 50.0)
        self.assertEqual(EulerMaruyamaScheduler(sde="subvp").init_noise_sigma, 1.0)

    def test_log_snr_inverse(self):
        for _, sde in SDES:
            t = torch.tensor([1e-3, 0.1, 0.5, 1.0], dtype=torch.float64)
            assert_allclose(sde.time_of_log_snr(sde.log_snr(t)), t, rtol=1e-9, atol=1e-12)


class TestCompatibility(unittest.TestCase):
    def test_matching_processes_pass(self):
        self.assertLess(check_forward_process(DDPMScheduler(), EulerMaruyamaScheduler(sde="vp")), 0.011)
        self.assertLess(check_forward_process(MonaiDDPMScheduler(1000), ProbabilityFlowScheduler()), 0.011)
        self.assertEqual(check_forward_process(NCSNScheduler(), PredictorCorrectorScheduler(sde="ve")), 0.0)

    @parameterized.expand(
        [
            ("ve_for_vp", lambda: DDPMScheduler(), lambda: PredictorCorrectorScheduler(sde="ve")),
            ("subvp_for_vp", lambda: DDPMScheduler(), lambda: ProbabilityFlowScheduler(sde="subvp")),
            ("vp_for_cosine", lambda: DDPMScheduler(schedule="cosine"), lambda: EulerMaruyamaScheduler()),
            ("ncsn_for_vp", lambda: DDIMScheduler(), lambda: NCSNScheduler()),
            ("vp_for_ve", lambda: NCSNScheduler(), lambda: ProbabilityFlowScheduler(sde="vp")),
            ("other_sigma_max", lambda: NCSNScheduler(sigma_max=20.0), lambda: EulerMaruyamaScheduler(sde="ve")),
        ]
    )
    def test_mismatched_processes_raise(self, _, trained, sampler):
        with self.assertRaisesRegex(ValueError, "cannot sample a model trained with"):
            check_forward_process(trained(), sampler())

    def test_from_training_scheduler(self):
        s = PredictorCorrectorScheduler.from_training_scheduler(DDPMScheduler(prediction_type="v_prediction"))
        self.assertEqual(s.sde, VPSDE(0.1, 20.0))
        self.assertEqual(s.prediction_type, "v_prediction")
        s = ProbabilityFlowScheduler.from_training_scheduler(NCSNScheduler(sigma_max=20.0))
        self.assertEqual(s.sde, VESDE(0.01, 20.0))
        self.assertIsInstance(NCSNScheduler.from_training_scheduler(EulerMaruyamaScheduler(sde="ve")), NCSNScheduler)
        with self.assertRaisesRegex(ValueError, "linear beta"):
            EulerMaruyamaScheduler.from_training_scheduler(DDPMScheduler(schedule="cosine"))
        with self.assertRaisesRegex(ValueError, "VE-trained"):
            NCSNScheduler.from_training_scheduler(DDPMScheduler())

    def test_trained_with_guard_in_a_bundle_config(self):
        base = "monai_diffusion.networks.schedulers"
        config = {
            "train": {"_target_": f"{base}.DDPMScheduler"},
            "good": {"_target_": f"{base}.ProbabilityFlowScheduler", "sde": "vp", "trained_with": "@train"},
            "bad": {"_target_": f"{base}.PredictorCorrectorScheduler", "sde": "ve", "trained_with": "@train"},
            "bad_ncsn": {"_target_": f"{base}.NCSNScheduler", "trained_with": "@train"},
            # the discrete samplers take the same guard
            "good_dpm": {"_target_": f"{base}.DPMSolverMultistepScheduler", "trained_with": "@train"},
            "bad_dpm": {
                "_target_": f"{base}.DPMSolverMultistepScheduler",
                "schedule": "cosine",
                "trained_with": "@train",
            },
            "bad_heun": {
                "_target_": f"{base}.HeunKarrasScheduler",
                "num_train_timesteps": 500,
                "trained_with": "@train",
            },
        }
        parser = ConfigParser(config)
        self.assertIsInstance(parser.get_parsed_content("good"), ProbabilityFlowScheduler)
        self.assertIsInstance(parser.get_parsed_content("good_dpm"), DPMSolverMultistepScheduler)
        for key in ("bad", "bad_ncsn", "bad_dpm", "bad_heun"):
            with self.assertRaises(RuntimeError) as ctx:  # MONAI wraps the constructor's error
                ConfigParser(config).get_parsed_content(key)
            self.assertIsInstance(ctx.exception.__cause__, ValueError)
            self.assertRegex(str(ctx.exception.__cause__), "cannot sample a model trained with|num_train_timesteps")

    def test_ddpm_trained_model_sampled_by_vp_sde(self):
        # the exact model of DDPM's own discrete process (as a DDPM-trained network would be) drives the VP ODE
        ddpm = DDPMScheduler()
        sampler = ProbabilityFlowScheduler.from_training_scheduler(ddpm)
        sampler.set_timesteps(39)
        model = ExactModel(MIXTURE, ddpm)
        x, _ = sample_loop(sampler, model, make_input(SHAPE, seed=0))
        self.assertLess(wasserstein1(x, MIXTURE), 0.03)
        self.assertLess(mixture_weight_error(x, MIXTURE), 0.02)


class TestSamplerBehaviour(unittest.TestCase):
    def test_nfe_for_a_budget(self):
        for n in (1, 2, 5, 10, 20, 50):
            em = EulerMaruyamaScheduler()
            em.set_timesteps(n)
            self.assertEqual(len(em.timesteps), n)
            pf = ProbabilityFlowScheduler()
            pf.set_timesteps(n)
            self.assertEqual(len(pf.timesteps), n if n % 2 else n - 1)
            pc = PredictorCorrectorScheduler(n_corrector=1)
            pc.set_timesteps(n)
            self.assertEqual(len(pc.timesteps), max(2, 2 * (n // 2)))
            self.assertLessEqual(len(pc.timesteps), max(n, 2))
            euler = ProbabilityFlowScheduler(solver="euler")
            euler.set_timesteps(n)
            self.assertEqual(len(euler.timesteps), n)
            pred_only = PredictorCorrectorScheduler(n_corrector=0)
            pred_only.set_timesteps(n)
            self.assertEqual(len(pred_only.timesteps), n)
            corr_only = PredictorCorrectorScheduler(predictor="none", n_corrector=2)
            corr_only.set_timesteps(n)
            self.assertEqual(len(corr_only.timesteps), 2 * max(1, (n - 1) // 2) + 1)

    @parameterized.expand([("linspace",), ("log_snr",), ("karras",)])
    def test_time_grids(self, spacing):
        for sde in ("vp", "subvp", "ve"):
            s = EulerMaruyamaScheduler(sde=sde, timestep_spacing=spacing)
            grid = s.time_grid(12)
            self.assertAlmostEqual(float(grid[0]), 1.0, places=12)
            self.assertAlmostEqual(float(grid[-1]), s.t_min, places=12)
            self.assertTrue(bool((grid[1:] < grid[:-1]).all()), f"{sde}/{spacing} grid not decreasing")
            lam = s.sde.log_snr(grid)
            steps = lam[1:] - lam[:-1]
            if spacing == "log_snr":
                assert_allclose(steps, steps.mean().expand_as(steps), rtol=1e-6)
            if spacing == "karras":  # sigma / alpha = exp(-lambda / 2) is linear in its 7th root (Karras Eq. 5)
                sig = torch.exp(-0.5 * lam)
                assert_allclose(
                    sig ** (1 / 7),
                    torch.linspace(float(sig[0] ** (1 / 7)), float(sig[-1] ** (1 / 7)), 12, dtype=torch.float64),
                    rtol=1e-6,
                )

    def test_time_spacing_is_the_deprecated_name_of_timestep_spacing(self):
        """One name for the spacing in every sampler: ``time_spacing`` and ``"uniform"`` still work, with a warning."""
        self.assertEqual(EulerMaruyamaScheduler().timestep_spacing, "linspace")
        with self.assertWarnsRegex(DeprecationWarning, "`time_spacing` is deprecated, use `timestep_spacing`"):
            s = ProbabilityFlowScheduler(time_spacing="log_snr")
        self.assertEqual(s.timestep_spacing, "log_snr")
        with self.assertWarnsRegex(DeprecationWarning, "'uniform' is deprecated, use 'linspace'"):
            s = EulerMaruyamaScheduler(time_spacing="uniform")
        self.assertEqual(s.timestep_spacing, "linspace")
        assert_allclose(s.time_grid(5), EulerMaruyamaScheduler().time_grid(5))
        with self.assertWarnsRegex(DeprecationWarning, "use timestep_spacing"):
            self.assertEqual(s.time_spacing, "linspace")
        with self.assertRaisesRegex(ValueError, "pass only `timestep_spacing`"):
            EulerMaruyamaScheduler(time_spacing="karras", timestep_spacing="log_snr")
        with self.assertRaisesRegex(ValueError, "timestep_spacing must be one of"):
            EulerMaruyamaScheduler(timestep_spacing="leading")

    def test_timesteps_layout(self):
        pc = PredictorCorrectorScheduler(n_corrector=2)
        pc.set_timesteps(9)
        t = pc.timesteps
        self.assertAlmostEqual(float(t[0]), 999.0, places=3)
        self.assertAlmostEqual(float(t[-1]), 1e-3 * 999, places=4)
        self.assertTrue(torch.equal(t[0:3], t[0].repeat(3)))  # two corrector evaluations and the predictor
        pf = ProbabilityFlowScheduler(sde="ve")
        pf.set_timesteps(5)
        self.assertEqual(len(pf.timesteps), 5)
        self.assertTrue(bool((pf.timesteps[1:] <= pf.timesteps[:-1]).all()))
        pf.set_timesteps(timesteps=[999.0, 500.0, 0.01])
        self.assertEqual(len(pf.timesteps), 5)

    def test_step_out_of_order_raises(self):
        s = EulerMaruyamaScheduler()
        s.set_timesteps(3)
        x = make_input((1, 1, 4, 4))
        with self.assertRaisesRegex(ValueError, "expected timestep"):
            s.step(x, s.timesteps[1], x)
        for t in s.timesteps:
            x, _ = s.step(torch.zeros_like(x), t, x)
        with self.assertRaisesRegex(ValueError, "call set_timesteps"):
            s.step(x, s.timesteps[-1], x)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "predictor"):
            PredictorCorrectorScheduler(predictor="ancestral")
        with self.assertRaisesRegex(ValueError, "n_corrector"):
            PredictorCorrectorScheduler(predictor="none", n_corrector=0)
        with self.assertRaisesRegex(ValueError, "solver"):
            ProbabilityFlowScheduler(solver="rk45")
        with self.assertRaisesRegex(ValueError, "t_min"):
            EulerMaruyamaScheduler(sde="vp", t_min=0.0)
        with self.assertRaisesRegex(ValueError, "strictly decreasing"):
            EulerMaruyamaScheduler().set_timesteps(timesteps=[10.0, 500.0])
        with self.assertRaisesRegex(ValueError, "exactly one"):
            EulerMaruyamaScheduler().set_timesteps()

    def test_bundle_with_named_and_nested_sde(self):
        base = "monai_diffusion.networks.schedulers"
        config = {
            "named": {"_target_": f"{base}.PredictorCorrectorScheduler", "sde": "ve", "sde_args": {"sigma_max": 20.0}},
            "nested": {
                "_target_": f"{base}.ProbabilityFlowScheduler",
                "sde": {"_target_": f"{base}.SubVPSDE", "beta_max": 15.0},
            },
        }
        parser = ConfigParser(config)
        self.assertEqual(parser.get_parsed_content("named").sde, VESDE(0.01, 20.0))
        self.assertEqual(parser.get_parsed_content("nested").sde, SubVPSDE(0.1, 15.0))

    @parameterized.expand([("pc_ve", PredictorCorrectorScheduler, "ve"), ("pf_vp", ProbabilityFlowScheduler, "vp")])
    def test_runs_in_monai_diffusion_inferer(self, _, cls, sde):
        # MONAI's own sampling loop (it passes timesteps as float tensors and expects noise already scaled)
        s = cls(sde=sde)
        s.set_timesteps(8)
        model = ExactModel(MIXTURE, s)
        noise = make_input((2, 1, 16, 16), seed=0)
        out = DiffusionInferer(s).sample(noise * s.init_noise_sigma, model, s)
        self.assertEqual(model.calls, len(s.timesteps))
        s.set_timesteps(8)
        if sde == "vp":  # deterministic: identical to the plain loop
            ref, _ = sample_loop(s, ExactModel(MIXTURE, s), noise)
            torch.testing.assert_close(out, ref)
        self.assertTrue(bool(torch.isfinite(out).all()))

    @skip_if_no_cuda
    def test_cuda_with_cuda_generator(self):
        for cls in (PredictorCorrectorScheduler, ProbabilityFlowScheduler, NCSNScheduler):
            s = cls().to("cuda")
            s.set_timesteps(6, device="cuda")
            model = ExactModel(MIXTURE, s)
            x, x0 = sample_loop(s, model, make_input((2, 1, 8, 8, 8)).cuda(), torch.Generator("cuda").manual_seed(0))
            self.assertEqual(x.device.type, "cuda")
            self.assertTrue(bool(torch.isfinite(x).all()))

    @parameterized.expand([("vp_full", "vp", None), ("ve_partial", "ve", 600.0)])
    def test_probability_flow_encode_decode_round_trip(self, _, sde, end_timestep):
        # the ODE is invertible: encoding data (to the prior, or partially to t*) and decoding on the same grid
        # recovers the data up to the solver error
        s = ProbabilityFlowScheduler(sde=sde, denoise=False, timestep_spacing="log_snr")
        model = ExactModel(MIXTURE, s)
        x0 = MIXTURE.sample((1, 1, 16, 16), torch.Generator().manual_seed(0)).float()
        start = s.t_min * 999
        z = s.encode(model, x0, 120, start_timestep=start, end_timestep=end_timestep)
        self.assertEqual(model.calls, 120)
        self.assertGreater(float((z - x0).abs().mean()), 0.3)  # it did move away from the data
        stop = 1.0 if end_timestep is None else end_timestep / 999
        grid = s.time_grid(61, t_start=stop).tolist()
        s.set_timesteps(timesteps=[t * 999 for t in grid])
        back, _ = sample_loop(s, model, z / s.init_noise_sigma)
        # measured: largest error 7.5e-4 (VP, to the prior) and 2.2e-4 (VE, to t* = 600)
        self.assertLess(float((back - x0).abs().max()), 0.005)
        with self.assertRaisesRegex(ValueError, "start_timestep < end_timestep"):
            s.encode(model, x0, 10, start_timestep=500.0, end_timestep=400.0)


# ------------------------------------------------------------------------------------------------ exact score
#: (name, factory, NFE, W1 bound, weight-error bound): the figures docs/samplers.md states
EXACT_CASES = [
    ("em_vp", lambda: EulerMaruyamaScheduler(sde="vp"), 50, 0.03, 0.015),
    ("em_subvp", lambda: EulerMaruyamaScheduler(sde="subvp"), 50, 0.03, 0.015),
    ("em_ve", lambda: EulerMaruyamaScheduler(sde="ve"), 100, 0.03, 0.015),
    ("pc_vp", lambda: PredictorCorrectorScheduler(sde="vp"), 100, 0.04, 0.02),
    ("pc_ve", lambda: PredictorCorrectorScheduler(sde="ve"), 100, 0.05, 0.03),
    ("pc_em_subvp", lambda: PredictorCorrectorScheduler(sde="subvp", predictor="euler_maruyama"), 100, 0.03, 0.02),
    ("pf_vp", lambda: ProbabilityFlowScheduler(sde="vp"), 19, 0.04, 0.015),
    ("pf_vp_logsnr", lambda: ProbabilityFlowScheduler(sde="vp", timestep_spacing="log_snr"), 19, 0.025, 0.015),
    ("pf_subvp_x0", lambda: ProbabilityFlowScheduler(sde="subvp", prediction_type="sample"), 19, 0.03, 0.015),
    ("pf_ve_v", lambda: ProbabilityFlowScheduler(sde="ve", prediction_type="v_prediction"), 99, 0.03, 0.015),
    ("pf_ve_karras", lambda: ProbabilityFlowScheduler(sde="ve", timestep_spacing="karras"), 49, 0.05, 0.025),
]


class TestExactScore(unittest.TestCase):
    @parameterized.expand(EXACT_CASES)
    def test_reproduces_mixture(self, name, factory, nfe, w1_tol, weight_tol):
        x, calls = exact_samples(factory(), nfe)
        self.assertEqual(calls, nfe)
        w1, werr = wasserstein1(x, MIXTURE), mixture_weight_error(x, MIXTURE)
        self.assertLess(w1, w1_tol, f"{name}: W1 {w1:.4f} at NFE {calls}")
        self.assertLess(werr, weight_tol, f"{name}: weight error {werr:.4f} at NFE {calls}")
        # the first two moments too, as in test_exact_sampling.py (measured: mean within 0.028, std within 0.027)
        assert_close_scalar(x.mean(), MEAN, atol=max(0.03, w1_tol), name=f"{name}: mean")
        assert_close_scalar(x.std(), STD, atol=max(0.03, w1_tol), name=f"{name}: std")


# ------------------------------------------------------------------------------------------------ contract
class TestEulerMaruyamaContract(SchedulerContract, unittest.TestCase):
    scheduler_class = EulerMaruyamaScheduler
    bundle_args = {"sde": "subvp", "sde_args": {"beta_max": 15.0}, "prediction_type": "v_prediction"}
    stochastic = True

    def make_scheduler(self, **kw):
        return EulerMaruyamaScheduler(**kw)


class TestPredictorCorrectorContract(SchedulerContract, unittest.TestCase):
    scheduler_class = PredictorCorrectorScheduler
    bundle_args = {"sde": "ve", "predictor": "euler_maruyama", "n_corrector": 2, "snr": 0.1}
    stochastic = True

    def make_scheduler(self, **kw):
        return PredictorCorrectorScheduler(**{"sde": "ve", **kw})


class TestProbabilityFlowContract(SchedulerContract, unittest.TestCase):
    scheduler_class = ProbabilityFlowScheduler
    bundle_args = {"sde": "vp", "timestep_spacing": "log_snr", "prediction_type": "sample"}

    def make_scheduler(self, **kw):
        return ProbabilityFlowScheduler(**kw)


if __name__ == "__main__":
    unittest.main()


class TestZeroScore(unittest.TestCase):
    def test_predictor_corrector_with_a_fresh_unet_stays_finite(self):
        """A freshly built MONAI UNet outputs exactly zero (zero-initialised output layer); the Langevin step size
        ``(snr ||z|| / ||score||)^2`` used to overflow and turn every sample into NaN."""
        from monai_diffusion.inferers import DiffusionInferer as OurInferer
        from monai_diffusion.networks.schedulers.sde import langevin_corrector_step
        from tests.test_utils import tiny_unet

        unet = tiny_unet(2)
        scheduler = PredictorCorrectorScheduler(1000)
        scheduler.set_timesteps(4)
        noise = torch.randn(2, 1, 16, 16)
        out = OurInferer(scheduler).sample(noise, unet, scheduler, generator=torch.Generator().manual_seed(0))
        self.assertTrue(bool(torch.isfinite(out).all()))
        x = torch.randn(2, 1, 4, 4)
        z = torch.randn(2, 1, 4, 4)
        unchanged = langevin_corrector_step(x, torch.zeros_like(x), z, snr=0.16)
        torch.testing.assert_close(unchanged, x, rtol=0, atol=0)
