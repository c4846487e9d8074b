from __future__ import annotations

import unittest

import torch
from monai.networks.nets import VQVAE, AutoencoderKL, DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture
from monai_diffusion.inferers import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    LatentDiffusionInferer,
    NullCondition,
    decode_latent,
    encode_latent,
    estimate_scale_factor,
)
from monai_diffusion.networks.schedulers import DDIMScheduler
from tests.test_utils import dims_cases, make_input


def autoencoder_kl(dims: int) -> AutoencoderKL:
    return AutoencoderKL(
        spatial_dims=dims,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=3,
        num_res_blocks=1,
        norm_num_groups=8,
        attention_levels=(False, False),
    )


def vqvae(dims: int) -> VQVAE:
    return VQVAE(
        spatial_dims=dims,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        num_res_channels=(8, 8),
        num_res_layers=1,
        downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
        upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
        num_embeddings=16,
        embedding_dim=3,
    )


CASES = [(f"{kind}_{name}", kind, dims) for kind in ("kl", "vq") for name, dims in dims_cases()]


class TestLatent(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_shapes_scale_and_sampling(self, _, kind, dims):
        torch.manual_seed(0)
        ae = (autoencoder_kl if kind == "kl" else vqvae)(dims).eval()
        images = make_input((2, 1, *([16] * dims)))
        z = encode_latent(ae, images)
        factor = 4 if kind == "vq" else 2
        self.assertEqual(tuple(z.shape), (2, 3, *([16 // factor] * dims)))
        self.assertEqual(decode_latent(ae, z).shape, images.shape)

        scale = estimate_scale_factor(ae, [{"image": images[:1]}, {"image": images[1:]}])
        inferer = LatentDiffusionInferer(DDIMScheduler(100), scale_factor=scale)
        scaled = inferer.encode(ae, images)
        self.assertAlmostEqual(scaled.std().item(), 1.0, delta=0.05)

        unet = DiffusionModelUNet(
            spatial_dims=dims,
            in_channels=3,
            out_channels=3,
            channels=(8, 8),
            attention_levels=(False, False),
            num_res_blocks=1,
            norm_num_groups=8,
            num_class_embeds=3,
        )
        noise = torch.randn_like(scaled)
        pred = inferer(
            images, ae, unet, noise, torch.tensor([5, 50]), condition=torch.tensor([0, 1]), mode="class_label"
        )
        self.assertEqual(pred.shape, scaled.shape)
        guided = ClassifierFreeGuidance(unet, 2.0, NullCondition(class_label=2))
        out = inferer.sample(noise, ae, guided, conditioning=torch.tensor(1), mode="class_label", num_inference_steps=2)
        self.assertEqual(out.shape, images.shape)
        classifier = DiffusionModelEncoder(
            spatial_dims=dims,
            in_channels=3,
            out_channels=2,
            input_shape=tuple(scaled.shape[2:]),
            channels=(8, 8),
            attention_levels=(False, False),
            num_res_blocks=1,
            norm_num_groups=8,
        )
        both = ClassifierGuidance(guided, classifier, 1.0, inferer.scheduler)
        out = inferer.sample(noise, ae, both, conditioning={"class_label": torch.tensor(1)}, num_inference_steps=2)
        self.assertEqual(out.shape, images.shape)
        latents = inferer.sample(noise, ae, unet, conditioning=torch.tensor(0), mode="class_label", decode=False)
        self.assertEqual(latents.shape, scaled.shape)

    @parameterized.expand(dims_cases())
    def test_latent_round_trip(self, _, dims):
        """DDIM inversion then decoding in latent space returns the autoencoder's reconstruction."""
        torch.manual_seed(0)
        ae = autoencoder_kl(dims).eval()
        images = make_input((2, 1, *([8] * dims)))
        sched = DDIMScheduler(1000)
        sched.set_timesteps(200)
        inferer = LatentDiffusionInferer(sched, scale_factor=estimate_scale_factor(ae, images))
        # a unit Gaussian prior over the scaled latents stands in for a trained latent network
        model = ExactModel(GaussianMixture(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([1.0])), sched)
        latent = inferer.ddim_invert(images, ae, model, end_timestep=500)
        t_end = int(sched.timesteps[sched.timesteps <= 500][0])
        with torch.no_grad():
            recon = inferer.sample(latent, ae, model, start_timestep=t_end)
            expected = decode_latent(ae, encode_latent(ae, images))
        self.assertLess((recon - expected).abs().max().item(), 0.05 * expected.abs().max().item())

    def test_first_stage_is_frozen(self):
        """A VQVAE left in training mode moves its codebook when it encodes; the inferer encodes and decodes in eval
        mode, restores the mode, and leaves every weight unchanged."""
        torch.manual_seed(0)
        ae = vqvae(2).train()
        images = make_input((2, 1, 8, 8))
        before = {k: v.clone() for k, v in ae.state_dict().items()}
        with torch.no_grad():
            ae.encode_stage_2_inputs(images)  # what an unguarded encode does
        moved = max((ae.state_dict()[k].float() - v.float()).abs().max().item() for k, v in before.items())
        self.assertGreater(moved, 0.0)
        before = {k: v.clone() for k, v in ae.state_dict().items()}
        inferer = LatentDiffusionInferer(DDIMScheduler(100), scale_factor=0.5)
        z = inferer.encode(ae, images)
        inferer.decode(ae, z)
        estimate_scale_factor(ae, images)
        self.assertTrue(ae.training)
        for k, v in before.items():
            torch.testing.assert_close(ae.state_dict()[k], v, rtol=0, atol=0, msg=k)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "positive"):
            LatentDiffusionInferer(DDIMScheduler(10), scale_factor=0.0)
        with self.assertRaisesRegex(TypeError, "first-stage"):
            encode_latent(torch.nn.Identity(), torch.zeros(1, 1, 4, 4))
        with self.assertRaisesRegex(ValueError, "no key"):
            estimate_scale_factor(autoencoder_kl(2), [{"img": torch.zeros(1, 1, 8, 8)}])


if __name__ == "__main__":
    unittest.main()
