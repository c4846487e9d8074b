"""ControlNet as a model: equality with MONAI's ControlNet inferers, effect of the control, our samplers and guidance.

MONAI's ``ControlNetDiffusionInferer.sample`` runs its own loop with ``torch.Tensor((t,))`` timesteps and no
generator; ours wraps the UNet in ``ControlNetModel`` and runs ``DiffusionInferer.sample``. With a deterministic DDIM
(eta 0), or DDPM with the global RNG seeded the same, both must give the same sample. MONAI zero-initialises the
ControlNet's output convolutions (and the UNet's last one), so the networks here get small random values in every
all-zero parameter: otherwise the control would have no effect and the tests could not fail.
"""

from __future__ import annotations

import unittest

import torch
from monai.inferers import ControlNetDiffusionInferer as MonaiControlNetInferer
from monai.inferers import ControlNetLatentDiffusionInferer as MonaiControlNetLatentInferer
from monai.networks.nets import ControlNet, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from parameterized import parameterized

from monai_diffusion.inferers import (
    ClassifierFreeGuidance,
    ControlNetDiffusionInferer,
    ControlNetLatentDiffusionInferer,
    ControlNetModel,
    DiffusionInferer,
    NullCondition,
    control_downsampling,
)
from monai_diffusion.networks.schedulers import DPMSolverMultistepScheduler
from tests.test_utils import assert_allclose, dims_cases, make_input, randomise_zeros, tiny_autoencoder

SIZE = {2: (8, 8), 3: (4, 4, 4)}
CONTEXT_DIM = 4


def networks(dims: int, in_channels: int = 1, crossattn: bool = False, embedding=(8,), cond_channels: int = 1):
    """A tiny UNet and a matching ControlNet, both with random values in their zero-initialised parameters."""
    torch.manual_seed(0)
    common = dict(
        spatial_dims=dims,
        in_channels=in_channels,
        channels=(8, 8),
        attention_levels=(False, crossattn),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        with_conditioning=crossattn,
        cross_attention_dim=CONTEXT_DIM if crossattn else None,
    )
    unet = DiffusionModelUNet(out_channels=1, **common).eval()
    controlnet = ControlNet(
        conditioning_embedding_in_channels=cond_channels, conditioning_embedding_num_channels=embedding, **common
    ).eval()
    randomise_zeros(unet, controlnet)
    return unet, controlnet


def ddim(steps: int = 5) -> MonaiDDIM:
    scheduler = MonaiDDIM(num_train_timesteps=100)
    scheduler.set_timesteps(steps)
    return scheduler


class TestControlNetMatchesMonai(unittest.TestCase):
    @parameterized.expand([(f"{name}_{kind}", dims, kind) for name, dims in dims_cases() for kind in ("ddim", "ddpm")])
    def test_sample_equals_monai(self, _, dims, kind):
        unet, controlnet = networks(dims)
        noise = make_input((2, 1, *SIZE[dims]), seed=1)
        control = make_input((2, 1, *SIZE[dims]), seed=2)
        scheduler = ddim() if kind == "ddim" else MonaiDDPM(num_train_timesteps=100)
        if kind == "ddpm":
            scheduler.set_timesteps(5)
        torch.manual_seed(3)  # MONAI's DDPM draws its noise from the global RNG in both loops
        ours, ours_steps = ControlNetDiffusionInferer(scheduler).sample(
            noise, unet, controlnet, control, None, True, 25
        )
        torch.manual_seed(3)
        with torch.no_grad():
            ref, ref_steps = MonaiControlNetInferer(scheduler).sample(
                noise, unet, controlnet, control, None, True, 25, verbose=False
            )
        assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        self.assertEqual(len(ours_steps), len(ref_steps))  # timesteps 50, 25 and 0 of 99, 74, 50, 25, 0
        self.assertEqual(len(ours_steps), 3)
        for a, b in zip(ours_steps, ref_steps):
            assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        self.assertGreater(float((ours - noise).abs().max()), 0.1)

    @parameterized.expand([("crossattn", "crossattn"), ("concat", "concat")])
    def test_conditioning_and_cfg_equal_monai(self, _, mode):
        crossattn = mode == "crossattn"
        unet, controlnet = networks(2, in_channels=1 if crossattn else 2, crossattn=crossattn)
        noise = make_input((2, 1, 8, 8), seed=1)
        control = make_input((2, 1, 8, 8), seed=2)
        cond = make_input((2, 3, CONTEXT_DIM) if crossattn else (2, 1, 8, 8), seed=4)
        scheduler = ddim()
        ours_inf, ref_inf = ControlNetDiffusionInferer(scheduler), MonaiControlNetInferer(scheduler)
        for cfg in (None, 2.5):
            ours = ours_inf.sample(noise, unet, controlnet, control, conditioning=cond, mode=mode, cfg=cfg)
            with torch.no_grad():
                ref = ref_inf.sample(
                    noise, unet, controlnet, control, conditioning=cond, mode=mode, cfg=cfg, verbose=False
                )
            # guidance amplifies the last-bit differences of MONAI's batch-1 timesteps and [null, c] batch order
            tol = 1e-5 if cfg is None else 5e-5
            assert_allclose(ours, ref, rtol=tol, atol=tol, msg=f"cfg={cfg}")
        plain = ours_inf.sample(noise, unet, controlnet, control, conditioning=cond, mode=mode)
        self.assertGreater(float((ours - plain).abs().max()), 1e-3)  # guidance did something

    @parameterized.expand(dims_cases())
    def test_training_forward_equals_monai(self, _, dims):
        unet, controlnet = networks(dims)
        images = make_input((2, 1, *SIZE[dims]), seed=1)
        noise = make_input((2, 1, *SIZE[dims]), seed=2)
        control = make_input((2, 1, *SIZE[dims]), seed=3)
        timesteps = torch.tensor([7, 63])
        scheduler = MonaiDDPM(num_train_timesteps=100)
        ours = ControlNetDiffusionInferer(scheduler)(images, unet, controlnet, noise, timesteps, control)
        ref = MonaiControlNetInferer(scheduler)(images, unet, controlnet, noise, timesteps, control)
        assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
        ours.sum().backward()  # the training forward keeps gradients to the ControlNet
        self.assertTrue(any(p.grad is not None and p.grad.abs().sum() > 0 for p in controlnet.parameters()))


class TestControlNetModel(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_control_changes_the_sample(self, _, dims):
        unet, controlnet = networks(dims)
        noise = make_input((2, 1, *SIZE[dims]), seed=1)
        inferer = ControlNetDiffusionInferer(ddim())
        a = inferer.sample(noise, unet, controlnet, make_input((2, 1, *SIZE[dims]), seed=2))
        b = inferer.sample(noise, unet, controlnet, make_input((2, 1, *SIZE[dims]), seed=5))
        self.assertGreater(float((a - b).abs().max()), 1e-2)
        off = inferer.sample(noise, unet, controlnet, make_input((2, 1, *SIZE[dims]), seed=2), conditioning_scale=0.0)
        plain = DiffusionInferer(ddim()).sample(noise, unet)  # scale 0: the UNet alone
        assert_allclose(off, plain, rtol=1e-5, atol=1e-6)

    @parameterized.expand(dims_cases())
    def test_our_sampler_and_classifier_free_guidance(self, _, dims):
        unet, controlnet = networks(dims, crossattn=True)
        shape = (2, 1, *SIZE[dims])
        noise, control = make_input(shape, seed=1), make_input((1, 1, *SIZE[dims]), seed=2)  # batch-1 control
        context = make_input((2, 3, CONTEXT_DIM), seed=4)
        model = ControlNetModel(unet, controlnet, control)
        null = NullCondition(context=torch.zeros(3, CONTEXT_DIM))
        scheduler = DPMSolverMultistepScheduler(num_train_timesteps=100)  # stateful: restarted by num_inference_steps
        inferer = DiffusionInferer(scheduler)
        outs = {}
        for batched in (True, False):  # one call of batch 2B (the control is repeated) or two calls of batch B
            guided = ClassifierFreeGuidance(model, 3.0, null, batched=batched)
            outs[batched] = inferer.sample(noise, guided, conditioning=context, num_inference_steps=4)
            self.assertEqual(outs[batched].shape, shape)
            self.assertTrue(torch.isfinite(outs[batched]).all())
        assert_allclose(outs[True], outs[False], rtol=1e-4, atol=1e-5)
        unguided = inferer.sample(noise, model, conditioning=context, num_inference_steps=4)
        self.assertGreater(float((outs[True] - unguided).abs().max()), 1e-3)
        # the same through the ControlNet inferer, with its cfg option (the inferer's null condition) and other
        # options of DiffusionInferer.sample
        cn_inferer = ControlNetDiffusionInferer(scheduler)
        x = cn_inferer.sample(
            noise, unet, controlnet, control, conditioning=context, cfg=3.0, cfg_fill_value=0.0, num_inference_steps=4
        )
        assert_allclose(x, outs[True], rtol=1e-5, atol=1e-6)
        x, steps = cn_inferer.sample(
            noise, unet, controlnet, control, None, True, [0, 2], context, num_inference_steps=4
        )
        assert_allclose(x, unguided, rtol=1e-5, atol=1e-6)
        self.assertEqual(len(steps), 2)

    def test_control_shape_errors(self):
        unet, controlnet = networks(2)
        inferer = ControlNetDiffusionInferer(ddim())
        noise = make_input((2, 1, 8, 8))
        with self.assertRaisesRegex(ValueError, r"cn_cond.*spatial size \(8, 8\).*got \(16, 16\)"):
            inferer.sample(noise, unet, controlnet, make_input((2, 1, 16, 16)))
        with self.assertRaisesRegex(ValueError, r"cn_cond.*has 3 spatial dimensions"):
            inferer.sample(noise, unet, controlnet, make_input((2, 1, 8, 8, 8)))
        with self.assertRaisesRegex(ValueError, r"cn_cond.*has batch 3"):
            inferer.sample(noise, unet, controlnet, make_input((3, 1, 8, 8)))
        with self.assertRaisesRegex(ValueError, r"cn_cond.*2 channels.*takes 1"):
            inferer(noise, unet, controlnet, noise, torch.tensor([1, 2]), make_input((2, 2, 8, 8)))
        with self.assertRaisesRegex(TypeError, "cn_cond.*floating-point"):
            ControlNetModel(unet, controlnet, torch.zeros(2, 1, 8, 8, dtype=torch.long))
        with self.assertRaisesRegex(TypeError, "wrap the ControlNetModel instead"):
            ControlNetModel(ClassifierFreeGuidance(unet, 2.0, NullCondition(class_label=0)), controlnet, noise)

    def test_downsampling_embedding_takes_a_larger_control(self):
        unet, controlnet = networks(2, embedding=(8, 8, 8))  # two stride-2 convolutions: factor 4
        self.assertEqual(control_downsampling(controlnet), 4)
        out = ControlNetModel(unet, controlnet, make_input((2, 1, 32, 32)))(make_input((2, 1, 8, 8)), torch.tensor([5]))
        self.assertEqual(out.shape, (2, 1, 8, 8))
        with self.assertRaisesRegex(ValueError, r"spatial size \(32, 32\).*downsamples by 4"):
            ControlNetModel(unet, controlnet, make_input((2, 1, 8, 8)))(make_input((2, 1, 8, 8)), torch.tensor([5]))


class TestControlNetLatent(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_latent_sample_equals_monai(self, _, dims):
        ae = tiny_autoencoder(dims, latent_channels=1).eval()
        unet, controlnet = networks(dims)
        latent = tuple(SIZE[dims])
        image = tuple(2 * n for n in latent)  # this autoencoder halves every side
        noise = make_input((2, 1, *latent), seed=1)
        control = make_input((2, 1, *image), seed=2)  # image space: resized to the latent grid, as MONAI does
        scheduler = ddim()
        ours = ControlNetLatentDiffusionInferer(scheduler, scale_factor=0.7).sample(
            noise, ae, unet, controlnet, control
        )
        with torch.no_grad():
            ref = MonaiControlNetLatentInferer(scheduler, scale_factor=0.7).sample(
                noise, ae, unet, controlnet, control, verbose=False
            )
        self.assertEqual(ours.shape, (2, 1, *image))
        assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)
        # training forward on latents, and a ControlNet whose embedding downsamples by the autoencoder's factor
        unet2, controlnet2 = networks(dims, embedding=(8, 8))
        pred = ControlNetLatentDiffusionInferer(scheduler)(
            make_input((2, 1, *image), seed=3), ae, unet2, controlnet2, noise, torch.tensor([3, 50]), control
        )
        self.assertEqual(pred.shape, noise.shape)
        other = ControlNetLatentDiffusionInferer(scheduler).sample(noise, ae, unet2, controlnet2, control, decode=False)
        self.assertEqual(other.shape, noise.shape)


if __name__ == "__main__":
    unittest.main()
