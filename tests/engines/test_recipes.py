"""Few-step training runs of the recipes on the embedded data set (2D, 16 px, 4 subjects), with resume."""

from __future__ import annotations

import shutil
import tempfile
import unittest

import torch
from ignite.engine import Events
from monai.networks.nets import VQVAE, AutoencoderKL, DiffusionModelUNet, PatchDiscriminator

from monai_diffusion.engines import autoencoder_trainer, brainsim_loader, diffusion_trainer, latest_checkpoint
from monai_diffusion.inferers import NullCondition
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.test_utils import skip_if_no_cuda


def unet() -> DiffusionModelUNet:
    torch.manual_seed(0)
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
        num_class_embeds=3,
    )


class TestRecipes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp()
        cls.loader = brainsim_loader(cls.root, keys=("t1w",), dim=2, size=16, subjects=4, batch_size=4)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_data(self):
        batch = next(iter(self.loader))
        self.assertEqual(tuple(batch["t1w"].shape), (4, 1, 16, 16))
        self.assertLessEqual(batch["t1w"].max().item(), 1.0 + 1e-6)
        self.assertEqual(batch["healthy"].shape, (4,))

    def _diffusion(self, ckpt, max_epochs, device="cpu"):
        return diffusion_trainer(
            unet(),
            DDPMScheduler(100),
            self.loader,
            max_epochs=max_epochs,
            device=device,
            epoch_length=2,
            image_key="t1w",
            condition={"class_label": "healthy"},
            null_condition=NullCondition(class_label=2),
            condition_dropout=0.2,
            checkpoint_dir=ckpt,
            save_interval=2,
            lr=1e-3,
        )

    def test_diffusion_resume(self):
        ckpt = tempfile.mkdtemp(dir=self.root)
        trainer, ema = self._diffusion(ckpt, max_epochs=1)
        trainer.run()
        self.assertEqual(trainer.state.iteration, 2)
        self.assertTrue(torch.isfinite(trainer.state.output["loss"]))
        saved = {k: v.clone() for k, v in trainer.network.state_dict().items()}
        self.assertIn("iteration=2", latest_checkpoint(ckpt).name)
        # a new process: fresh network, same checkpoint folder, more epochs -> continues at iteration 3
        resumed, ema2 = self._diffusion(ckpt, max_epochs=2)
        first = []
        resumed.add_event_handler(
            Events.ITERATION_STARTED(once=3),
            lambda e: first.append({k: v.clone() for k, v in e.network.state_dict().items()}),
        )
        resumed.run()
        self.assertEqual(resumed.state.iteration, 4)
        self.assertEqual(len(first), 1)
        for k, v in saved.items():
            torch.testing.assert_close(first[0][k], v)
        self.assertEqual(int(ema2.num_updates), 4)

    def test_autoencoders(self):
        for ae in (
            AutoencoderKL(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                channels=(8, 8),
                latent_channels=2,
                num_res_blocks=1,
                norm_num_groups=8,
                attention_levels=(False, False),
            ),
            VQVAE(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                channels=(8, 8),
                num_res_channels=(8, 8),
                num_res_layers=1,
                downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
                upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
                num_embeddings=16,
                embedding_dim=2,
            ),
        ):
            ckpt = tempfile.mkdtemp(dir=self.root)
            disc = PatchDiscriminator(spatial_dims=2, channels=8, in_channels=1, num_layers_d=2)
            trainer = autoencoder_trainer(
                ae,
                self.loader,
                max_epochs=1,
                discriminator=disc,
                epoch_length=2,
                image_key="t1w",
                checkpoint_dir=ckpt,
                save_interval=2,
                adversarial_start=2,
            )
            trainer.run()
            out = trainer.state.output
            for key in ("loss", "l1", "spectral", "discriminator"):
                self.assertTrue(torch.isfinite(out[key]), key)
            self.assertGreater(out["discriminator"].item(), 0.0)  # adversarial term switched on at iteration 2
            state = torch.load(latest_checkpoint(ckpt), weights_only=False)
            self.assertEqual(sorted(state), ["d_optimizer", "discriminator", "network", "optimizer", "trainer"])

    def test_3d_and_perceptual_hook(self):
        """One iteration of each recipe on 3D volumes of the embedded data; a given perceptual loss is applied."""
        loader = brainsim_loader(self.root, keys=("t1w",), dim=3, size=16, subjects=3, batch_size=1)
        net = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=(8, 8),
            attention_levels=(False, False),
            num_res_blocks=1,
            norm_num_groups=8,
        )
        trainer, _ = diffusion_trainer(net, DDPMScheduler(100), loader, max_epochs=1, epoch_length=1, image_key="t1w")
        trainer.run()
        self.assertTrue(torch.isfinite(trainer.state.output["loss"]))
        calls = []

        def perceptual(recon, x):
            calls.append(tuple(recon.shape))
            return (recon - x).abs().mean()

        ae = AutoencoderKL(
            spatial_dims=3,
            in_channels=1,
            out_channels=1,
            channels=(8, 8),
            latent_channels=2,
            num_res_blocks=1,
            norm_num_groups=8,
            attention_levels=(False, False),
        )
        trainer = autoencoder_trainer(
            ae,
            loader,
            max_epochs=1,
            epoch_length=1,
            image_key="t1w",
            discriminator=PatchDiscriminator(spatial_dims=3, channels=8, in_channels=1, num_layers_d=2),
            perceptual_loss=perceptual,
            perceptual_weight=0.5,
        )
        trainer.run()
        self.assertEqual(calls, [(1, 1, 16, 16, 16)])
        self.assertTrue(torch.isfinite(trainer.state.output["loss"]))
        self.assertGreater(trainer.state.output["discriminator"].item(), 0.0)

    @skip_if_no_cuda
    def test_cuda(self):
        trainer, _ = self._diffusion(None, max_epochs=1, device="cuda")
        trainer.run()
        self.assertTrue(torch.isfinite(trainer.state.output["loss"]))


if __name__ == "__main__":
    unittest.main()
