from __future__ import annotations

import unittest

import torch
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture, wasserstein1
from monai_diffusion.inferers import DiffusionInferer, NullCondition, marginal_coefficients, start_index
from monai_diffusion.networks.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerKarrasScheduler,
    EulerMaruyamaScheduler,
    HeunKarrasScheduler,
    PredictorCorrectorScheduler,
    ProbabilityFlowScheduler,
    UniPCMultistepScheduler,
)
from tests.test_utils import assert_allclose, dims_cases, make_input, tiny_unet

MIX = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-1.0, 1.0]), torch.tensor([0.3, 0.4]))


def shape_for(dims: int) -> tuple[int, ...]:
    return (2, 1, *([8] * dims))


class TestTrainingForward(unittest.TestCase):
    @parameterized.expand(
        [
            (f"{name}_{mode}", dims, mode)
            for name, dims in dims_cases()
            for mode in ("concat", "crossattn", "class_label", "concat_crossattn")
        ]
    )
    def test_modes(self, _, dims, mode):
        shape = shape_for(dims)
        x = make_input(shape)
        concat = make_input(shape, seed=1)
        context = make_input((shape[0], 2, 4), seed=2)
        labels = torch.tensor([0, 2])
        cond = {"concat": concat, "crossattn": context, "class_label": labels, "concat_crossattn": (concat, context)}[
            mode
        ]
        net = tiny_unet(
            dims,
            in_channels=2 if "concat" in mode else 1,
            conditioning="crossattn" in mode,
            classes=3 if mode == "class_label" else None,
        )
        inferer = DiffusionInferer(DDPMScheduler(100), condition_mode=mode)
        t = torch.tensor([3, 70])
        pred = inferer(x, net, torch.randn_like(x), t, condition=cond)
        self.assertEqual(pred.shape, x.shape)
        with self.assertRaisesRegex(ValueError, "noise must have the shape"):
            inferer(x, net, torch.randn(1, 1), t, condition=cond)

    @parameterized.expand(
        [
            ("ddpm", lambda: DDPMScheduler(100)),
            ("vp_sde", lambda: EulerMaruyamaScheduler(100, sde="vp")),
            ("subvp_sde", lambda: EulerMaruyamaScheduler(100, sde="subvp")),
            ("ve_sde", lambda: EulerMaruyamaScheduler(100, sde="ve")),
            ("monai_ddpm", lambda: MonaiDDPM(100)),
        ]
    )
    def test_every_forward_process(self, _, make):
        """The network sees x_t = alpha x0 + sigma eps of the scheduler's own forward process."""
        sched = make()
        seen = {}

        def net(x, timesteps):
            seen["x"], seen["t"] = x, timesteps
            return torch.zeros_like(x)

        x0, noise = make_input((3, 1, 4, 4, 4)), make_input((3, 1, 4, 4, 4), seed=1)
        t = torch.tensor([0, 40, 99])
        DiffusionInferer(sched)(x0, net, noise, t)
        a, s = (v.float().reshape(-1, 1, 1, 1, 1) for v in marginal_coefficients(sched, t))
        assert_allclose(seen["x"], a * x0 + s * noise, rtol=1e-5, atol=1e-5)
        self.assertEqual(seen["t"].tolist(), t.tolist())

    def test_unknown_mode(self):
        with self.assertRaisesRegex(ValueError, "unknown condition_mode"):
            DiffusionInferer(DDPMScheduler(10), condition_mode="film")
        with self.assertRaisesRegex(ValueError, "needs a null_condition"):
            DiffusionInferer(DDPMScheduler(10), condition_dropout=0.1)

    @parameterized.expand([("epsilon",), ("sample",), ("v_prediction",)])
    def test_training_target(self, prediction_type):
        sched = DDPMScheduler(100, prediction_type=prediction_type)
        x0, noise, t = make_input((3, 1, 4, 4)), make_input((3, 1, 4, 4), seed=1), torch.tensor([1, 50, 99])
        target = DiffusionInferer(sched).training_target(x0, noise, t)
        a, s = (v.float().reshape(-1, 1, 1, 1) for v in marginal_coefficients(sched, t))
        expected = {"epsilon": noise, "sample": x0, "v_prediction": a * noise - s * x0}[prediction_type]
        assert_allclose(target, expected, rtol=1e-5, atol=1e-6)

    def test_condition_dropout_reaches_network(self):
        seen = []

        def net(x, timesteps, class_labels=None):
            seen.append(class_labels.clone())
            return torch.zeros_like(x)

        inferer = DiffusionInferer(
            DDPMScheduler(10),
            condition_mode="class_label",
            null_condition=NullCondition(class_label=9),
            condition_dropout=1.0,
        )
        x = make_input((4, 1, 4, 4))
        inferer(x, net, torch.randn_like(x), torch.tensor([1, 2, 3, 4]), condition=torch.tensor([0, 1, 2, 0]))
        self.assertEqual(seen[0].tolist(), [9, 9, 9, 9])


class TestSampling(unittest.TestCase):
    def test_monai_and_ours_agree(self):
        """The same inferer runs MONAI's DDIM and ours; on the full 1000-step grid both are the same method."""
        noise = make_input((2, 1, 16, 16), dtype=torch.float64)
        outs = []
        for sched in (MonaiDDIM(1000, clip_sample=False), DDIMScheduler(1000)):
            sched.set_timesteps(1000)
            outs.append(DiffusionInferer(sched).sample(noise, ExactModel(MIX, sched)))
        assert_allclose(outs[0], outs[1], atol=2e-3)
        self.assertLess(wasserstein1(outs[1], MIX), 0.05)

    @parameterized.expand([("monai", MonaiDDPM(1000, clip_sample=False), 1000), ("ours", DDPMScheduler(1000), 50)])
    def test_ddpm_exact(self, _, sched, steps):
        model = ExactModel(MIX, sched)
        g = torch.Generator().manual_seed(0)
        x = DiffusionInferer(sched).sample(make_input((4, 1, 32, 32)), model, num_inference_steps=steps, generator=g)
        self.assertEqual(model.calls, steps)
        self.assertLess(wasserstein1(x, MIX), 0.04)

    def test_generator_intermediates_callback(self):
        sched = DDPMScheduler(100)
        model = ExactModel(MIX, sched)
        noise = make_input((2, 1, 8, 8))
        inferer = DiffusionInferer(sched)
        calls = []
        a, inter = inferer.sample(
            noise,
            model,
            num_inference_steps=10,
            generator=torch.Generator().manual_seed(3),
            save_intermediates=True,
            intermediate_steps=4,
            callback=lambda i, t, x, x0: calls.append((i, int(t))),
        )
        b = inferer.sample(noise, model, num_inference_steps=10, generator=torch.Generator().manual_seed(3))
        c = inferer.sample(noise, model, num_inference_steps=10, generator=torch.Generator().manual_seed(4))
        assert_allclose(a, b)
        self.assertGreater((a - c).abs().max().item(), 1e-3)
        self.assertEqual([i for i, _ in calls], list(range(10)))
        # MONAI's rule: the steps whose timestep is a multiple of intermediate_steps (grid 99, 88, ..., 0)
        self.assertEqual([int(t) for _, t in calls], list(range(99, -1, -11)))
        self.assertEqual(len(inter), 3)  # t = 88, 44, 0
        assert_allclose(inter[-1], a)
        _, fives = inferer.sample(noise, model, num_inference_steps=10, save_intermediates=True, intermediate_steps=22)
        self.assertEqual(len(fives), 5)  # t = 88, 66, 44, 22, 0
        _, chosen = inferer.sample(
            noise, model, num_inference_steps=10, save_intermediates=True, intermediate_steps=[2]
        )
        self.assertEqual(len(chosen), 1)
        with self.assertRaisesRegex(ValueError, "outside"):
            inferer.sample(noise, model, num_inference_steps=10, save_intermediates=True, intermediate_steps=[10])

    @parameterized.expand(
        [
            (f"{name}_{mode}", dims, mode)
            for name, dims in dims_cases()
            for mode in ("concat", "crossattn", "class_label", "concat_crossattn")
        ]
    )
    def test_sample_every_condition_mode(self, _, dims, mode):
        """``sample`` passes every conditioning mode to a MONAI UNet in 2D and 3D, and the condition matters."""
        shape = shape_for(dims)
        torch.manual_seed(0)
        net = tiny_unet(
            dims,
            in_channels=2 if "concat" in mode else 1,
            conditioning="crossattn" in mode,
            classes=3 if mode == "class_label" else None,
        )
        with torch.no_grad():  # MONAI zero-initialises output and residual convolutions: give them weights
            for param in net.parameters():
                if not param.any():
                    param.normal_(0.0, 0.1)

        def cond(seed):
            concat, context = make_input(shape, seed=seed), make_input((shape[0], 2, 4), seed=seed + 1)
            labels = torch.tensor([seed % 3, (seed + 1) % 3])
            return {
                "concat": concat,
                "crossattn": context,
                "class_label": labels,
                "concat_crossattn": (concat, context),
            }[mode]

        inferer = DiffusionInferer(DDIMScheduler(100), condition_mode=mode)
        noise = make_input(shape, seed=7)
        with torch.no_grad():
            a = inferer.sample(noise, net, conditioning=cond(1), num_inference_steps=1)
            b = inferer.sample(noise, net, conditioning=cond(2), num_inference_steps=1)
        self.assertEqual(a.shape, shape)
        self.assertGreater((a - b).abs().max().item(), 1e-6)
        small = make_input((2, 1, *([4] * dims)))  # wrong spatial size for concatenation
        bad, message = {
            "concat": (small, "'concat' conditioning must have shape"),
            "crossattn": (make_input((2, 4)), r"context must have shape \(B, L, D\)"),
            "class_label": (torch.tensor([0.5, 1.0]), "integer class ids"),
            "concat_crossattn": ((small, make_input((2, 2, 4))), "'concat' conditioning must have shape"),
        }[mode]
        with self.assertRaisesRegex((ValueError, TypeError), message):
            inferer.sample(noise, net, conditioning=bad, num_inference_steps=1)

    def test_progress_bar(self):
        """``progress=True`` shows a tqdm bar (on stderr) and leaves the results unchanged."""
        import contextlib
        import io

        sched = DDIMScheduler(100)
        sched.set_timesteps(5)
        model = ExactModel(MIX, sched)
        inferer = DiffusionInferer(sched)
        noise = make_input((2, 1, 4, 4))
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            a = inferer.sample(noise, model, progress=True)
            enc = inferer.ddim_invert(noise, model, progress=True)
        self.assertIn("sampling", stderr.getvalue())
        self.assertIn("DDIM inversion", stderr.getvalue())
        assert_allclose(a, inferer.sample(noise, model))
        assert_allclose(enc, inferer.ddim_invert(noise, model))

    def test_verbose_is_the_deprecated_name_of_progress(self):
        """The old keyword still shows the bar, with a DeprecationWarning; giving both names is an error."""
        import contextlib
        import io

        sched = DDIMScheduler(100)
        sched.set_timesteps(3)
        model = ExactModel(MIX, sched)
        inferer = DiffusionInferer(sched)
        noise = make_input((1, 1, 4, 4))
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            with self.assertWarnsRegex(DeprecationWarning, "`verbose` is deprecated, use `progress`"):
                a = inferer.sample(noise, model, verbose=True)
            with self.assertWarnsRegex(DeprecationWarning, "`verbose` is deprecated, use `progress`"):
                inferer.ddim_invert(noise, model, verbose=True)
        self.assertIn("sampling", stderr.getvalue())
        self.assertIn("DDIM inversion", stderr.getvalue())
        assert_allclose(a, inferer.sample(noise, model))
        with self.assertRaisesRegex(ValueError, "pass only `progress`"):
            inferer.sample(noise, model, verbose=True, progress=True)

    def test_sample_grad_off_by_default(self):
        net = tiny_unet(2)
        sched = DDIMScheduler(100)
        out = DiffusionInferer(sched).sample(make_input((1, 1, 8, 8)), net, num_inference_steps=2)
        self.assertFalse(out.requires_grad)
        out = DiffusionInferer(sched).sample(make_input((1, 1, 8, 8)), net, num_inference_steps=2, enable_grad=True)
        self.assertTrue(out.requires_grad)


class TestPartialNoising(unittest.TestCase):
    def test_start_index(self):
        grid = torch.tensor([90, 70, 50, 30, 10])
        self.assertEqual(start_index(grid), 0)
        self.assertEqual(start_index(grid, strength=0.4), 3)
        self.assertEqual(start_index(grid, strength=1.0), 0)
        self.assertEqual(start_index(grid, start_timestep=60), 2)
        with self.assertRaisesRegex(ValueError, "either"):
            start_index(grid, 10, 0.5)
        with self.assertRaisesRegex(ValueError, r"\(0, 1\]"):
            start_index(grid, strength=0.0)
        with self.assertRaisesRegex(ValueError, "below every"):
            start_index(grid, start_timestep=5)

    @parameterized.expand([("monai", MonaiDDIM(1000, clip_sample=False)), ("ours", DDIMScheduler(1000))])
    def test_sdedit(self, _, sched):
        """Starting from data noised to level t and denoising with the exact model returns data-distributed samples."""
        sched.set_timesteps(50)
        model = ExactModel(MIX, sched)
        g = torch.Generator().manual_seed(0)
        image = MIX.sample((4, 1, 32, 32), generator=g).float()
        out = DiffusionInferer(sched).sample(make_input(image.shape, seed=5), model, start_image=image, strength=0.3)
        self.assertEqual(model.calls, 15)
        self.assertLess(wasserstein1(out, MIX), 0.05)
        # low strength keeps the image close to the input
        close = DiffusionInferer(sched).sample(make_input(image.shape, seed=5), model, start_image=image, strength=0.05)
        self.assertLess((close - image).abs().mean().item(), 0.15)
        with self.assertRaisesRegex(ValueError, "start_image needs"):
            DiffusionInferer(sched).sample(image, model, start_image=image)

    @parameterized.expand(
        [
            ("dpm_solver_2", lambda: DPMSolverMultistepScheduler(1000), 20, 0.05),
            ("dpm_solver_3", lambda: DPMSolverMultistepScheduler(1000, solver_order=3), 20, 0.05),
            ("unipc_2", lambda: UniPCMultistepScheduler(1000), 20, 0.05),
            ("unipc_3", lambda: UniPCMultistepScheduler(1000, solver_order=3), 20, 0.05),
            ("euler_karras", lambda: EulerKarrasScheduler(1000), 20, 0.15),  # first order: 0.10 measured
            ("heun_karras", lambda: HeunKarrasScheduler(1000), 20, 0.05),
            ("pflow_vp_heun", lambda: ProbabilityFlowScheduler(1000, sde="vp"), 40, 0.05),
            ("pflow_ve_heun", lambda: ProbabilityFlowScheduler(1000, sde="ve"), 40, 0.1),
            ("euler_maruyama_vp", lambda: EulerMaruyamaScheduler(1000, sde="vp"), 100, 0.1),
            ("predictor_corrector_vp", lambda: PredictorCorrectorScheduler(1000, sde="vp"), 100, 0.1),
        ]
    )
    def test_stateful_sampler_partial_noising(self, _, make, nfe, tol):
        """Stateful samplers start mid-grid through set_begin_index, exactly as on the truncated grid."""
        sched = make()
        sched.set_timesteps(nfe)
        model = ExactModel(MIX, sched)
        image = MIX.sample((4, 1, 32, 32), generator=torch.Generator().manual_seed(0)).float()
        noise = make_input(image.shape)
        out = DiffusionInferer(sched).sample(
            noise, model, start_image=image, strength=0.5, generator=torch.Generator().manual_seed(3)
        )
        first = sched.begin_index
        self.assertEqual(model.calls, len(sched.timesteps) - first)
        self.assertLess(wasserstein1(out, MIX), tol)
        # the same run on the truncated grid of step times (the multistep history starts empty in both)
        t_first = float(sched.timesteps[first])
        levels = torch.unique_consecutive(sched.timesteps)
        sched.set_timesteps(timesteps=levels[levels <= t_first + 1e-3])
        truncated = DiffusionInferer(sched).sample(
            noise, model, start_image=image, start_timestep=t_first, generator=torch.Generator().manual_seed(3)
        )
        assert_allclose(out, truncated, atol=1e-4)  # 3e-5 measured for the SDE samplers (float32 time round trip)
        # a second run after set_timesteps starts afresh
        sched.set_timesteps(nfe)
        again = DiffusionInferer(sched).sample(
            noise, model, start_image=image, strength=0.5, generator=torch.Generator().manual_seed(3)
        )
        assert_allclose(again, out, atol=0.0)

    def test_begin_index_errors(self):
        sched = DPMSolverMultistepScheduler(1000)
        sched.set_timesteps(10)
        for bad in (-1, 10, 2.0):
            with self.assertRaisesRegex(ValueError, "begin index"):
                sched.set_begin_index(bad)
        sched.set_begin_index(3)
        self.assertEqual(sched.begin_index, 3)
        x = make_input((2, 1, 4, 4))
        sched.step(torch.zeros_like(x), sched.timesteps[3], x)
        with self.assertRaisesRegex(ValueError, "under way"):
            sched.set_begin_index(5)
        with self.assertRaisesRegex(ValueError, "in order"):
            sched.step(torch.zeros_like(x), sched.timesteps[3], x)
        # entries where a step cannot start (a correction stage) move to the next entry at the same time
        heun = HeunKarrasScheduler(1000)
        heun.set_timesteps(10)
        heun.set_begin_index(3)
        self.assertEqual(heun.begin_index, 4)
        self.assertEqual(float(heun.timesteps[3]), float(heun.timesteps[4]))
        pflow = ProbabilityFlowScheduler(1000, sde="vp")
        pflow.set_timesteps(20)
        pflow.set_begin_index(1)
        self.assertEqual(pflow.begin_index, 2)

    @parameterized.expand(dims_cases())
    def test_ddim_inversion_round_trip(self, _, dims):
        sched = DDIMScheduler(1000)
        sched.set_timesteps(200)  # first-order method: max error 0.044 at 200 steps, 0.009 at 1000
        gauss = GaussianMixture(torch.tensor([1.0]), torch.tensor([0.2]), torch.tensor([0.8]))
        model = ExactModel(gauss, sched)
        image = gauss.sample((2, 1, *([8] * dims)), generator=torch.Generator().manual_seed(1)).float()
        inferer = DiffusionInferer(sched)
        latent = inferer.ddim_invert(image, model, end_timestep=600)
        self.assertEqual(latent.shape, image.shape)
        t_end = int(sched.timesteps[sched.timesteps <= 600][0])
        recon = inferer.sample(latent, model, start_timestep=t_end)
        self.assertLess((recon - image).abs().max().item(), 0.07)
        self.assertGreater((latent - image).abs().mean().item(), 0.1)  # the encoding did move the image


if __name__ == "__main__":
    unittest.main()


class TestSampleInputChecks(unittest.TestCase):
    """Bad inputs to ``sample``/``ddim_invert`` are refused before the network runs, naming the argument."""

    def setUp(self):
        from monai_diffusion.networks.schedulers import DDIMScheduler
        from tests.test_utils import tiny_unet

        self.net3d = tiny_unet(3).eval()
        self.net2d = tiny_unet(2).eval()
        self.inferer = DiffusionInferer(DDIMScheduler(100))

    def test_dimensionality_mismatch(self):
        with self.assertRaisesRegex(ValueError, "input_noise has 2 spatial dimensions .* the network is 3D"):
            self.inferer.sample(torch.randn(1, 1, 8, 8), self.net3d, num_inference_steps=2)
        with self.assertRaisesRegex(ValueError, "inputs has 3 spatial dimensions .* the network is 2D"):
            self.inferer.ddim_invert(torch.randn(1, 1, 8, 8, 8), self.net2d)

    def test_dtype_mismatch_and_non_float(self):
        with self.assertRaisesRegex(
            ValueError, "input_noise is torch.float16 but the network's weights are torch.float32"
        ):
            self.inferer.sample(torch.randn(1, 1, 8, 8).half(), self.net2d, num_inference_steps=2)
        with self.assertRaisesRegex(ValueError, "floating-point"):
            self.inferer.sample(torch.ones(1, 1, 8, 8, dtype=torch.long), self.net2d, num_inference_steps=2)

    def test_non_finite_and_empty(self):
        bad = torch.randn(1, 1, 8, 8)
        bad[0, 0, 0, 0] = float("nan")
        with self.assertRaisesRegex(ValueError, "input_noise holds NaN"):
            self.inferer.sample(bad, self.net2d, num_inference_steps=2)
        with self.assertRaisesRegex(ValueError, "start_image holds NaN"):
            self.inferer.sample(
                torch.randn(1, 1, 8, 8), self.net2d, num_inference_steps=2, start_image=bad, strength=0.5
            )
        with self.assertRaisesRegex(ValueError, "non-empty batch"):
            self.inferer.sample(torch.randn(0, 1, 8, 8), self.net2d, num_inference_steps=2)

    def test_a_good_call_still_runs(self):
        out = self.inferer.sample(torch.randn(2, 1, 8, 8), self.net2d, num_inference_steps=2)
        self.assertEqual(tuple(out.shape), (2, 1, 8, 8))
        self.assertTrue(torch.isfinite(out).all())


class TestSampleNetworkChecks(unittest.TestCase):
    def test_class_label_beyond_the_embedding(self):
        from monai_diffusion.networks.schedulers import DDIMScheduler
        from tests.test_utils import tiny_unet

        net = tiny_unet(2, classes=4).eval()
        inferer = DiffusionInferer(DDIMScheduler(100), condition_mode="class_label")
        with self.assertRaisesRegex(ValueError, r"class labels must lie in \[0, 3\]"):
            inferer.sample(torch.randn(1, 1, 8, 8), net, conditioning=torch.tensor([7]), num_inference_steps=2)
        out = inferer.sample(torch.randn(1, 1, 8, 8), net, conditioning=torch.tensor([3]), num_inference_steps=2)
        self.assertTrue(torch.isfinite(out).all())

    def test_size_the_unet_cannot_halve(self):
        from monai.networks.nets import DiffusionModelUNet

        from monai_diffusion.networks.schedulers import DDIMScheduler

        net = DiffusionModelUNet(
            2, 1, 1, channels=(8, 8, 8), attention_levels=(False,) * 3, num_res_blocks=1, norm_num_groups=8
        )
        inferer = DiffusionInferer(DDIMScheduler(100))
        with self.assertRaisesRegex(ValueError, "divisible by 4"):
            inferer.sample(torch.randn(1, 1, 10, 8), net, num_inference_steps=2)
