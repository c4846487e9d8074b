"""Inferer-layer components are buildable from a MONAI bundle config (``_target_`` + JSON arguments)."""

from __future__ import annotations

import unittest

import torch
from monai.bundle import ConfigParser

from monai_diffusion.engines import DiffusionPrepareBatch, ExponentialMovingAverage
from monai_diffusion.inferers import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    DiffusionInferer,
    LatentDiffusionInferer,
    NullCondition,
)

CONFIG = {
    "scheduler": {"_target_": "monai_diffusion.networks.schedulers.DDIMScheduler", "num_train_timesteps": 100},
    "null": {"_target_": "monai_diffusion.inferers.NullCondition", "class_label": 3, "context_shape": [1, 8]},
    "network": {
        "_target_": "monai.networks.nets.DiffusionModelUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 8],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
        "num_class_embeds": 4,
    },
    "inferer": {
        "_target_": "monai_diffusion.inferers.DiffusionInferer",
        "scheduler": "@scheduler",
        "condition_mode": "class_label",
        "null_condition": "@null",
        "condition_dropout": 0.1,
    },
    "latent_inferer": {
        "_target_": "monai_diffusion.inferers.LatentDiffusionInferer",
        "scheduler": "@scheduler",
        "scale_factor": 0.8,
    },
    "guided": {
        "_target_": "monai_diffusion.inferers.ClassifierFreeGuidance",
        "network": "@network",
        "guidance_scale": 2.0,
        "null_condition": "@null",
    },
    "prepare_batch": {
        "_target_": "monai_diffusion.engines.DiffusionPrepareBatch",
        "scheduler": "@scheduler",
        "condition": {"class_label": "label"},
        "loss_weighting": {"_target_": "monai_diffusion.losses.MinSNRWeighting", "gamma": 5.0},
    },
    "spectral": {"_target_": "monai_diffusion.losses.SpectralLoss", "log_magnitude": True},
    "classifier": {
        "_target_": "monai.networks.nets.diffusion_model_unet.DiffusionModelEncoder",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 2,
        "input_shape": [8, 8, 8],
        "channels": [8, 8],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
    },
    "network_3d": {
        "_target_": "monai.networks.nets.DiffusionModelUNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [8, 8],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 8,
    },
    "classifier_guided": {
        "_target_": "monai_diffusion.inferers.ClassifierGuidance",
        "network": "@network_3d",
        "classifier": "@classifier",
        "guidance_scale": 2.0,
        "scheduler": "@scheduler",
        "label": 1,
    },
    "ema": {"_target_": "monai_diffusion.engines.ExponentialMovingAverage", "network": "@network_3d", "decay": 0.99},
}


class TestBundleConfig(unittest.TestCase):
    def test_build(self):
        parser = ConfigParser(CONFIG)
        self.assertIsInstance(parser.get_parsed_content("inferer"), DiffusionInferer)
        self.assertIsInstance(parser.get_parsed_content("latent_inferer"), LatentDiffusionInferer)
        self.assertIsInstance(parser.get_parsed_content("prepare_batch"), DiffusionPrepareBatch)
        null = parser.get_parsed_content("null")
        self.assertIsInstance(null, NullCondition)
        guided = parser.get_parsed_content("guided")
        self.assertIsInstance(guided, ClassifierFreeGuidance)
        out = guided(torch.zeros(2, 1, 8, 8), torch.tensor(5), {"class_label": torch.tensor([0, 1])})
        self.assertEqual(out.shape, (2, 1, 8, 8))
        classifier_guided = parser.get_parsed_content("classifier_guided")
        self.assertIsInstance(classifier_guided, ClassifierGuidance)
        sample = DiffusionInferer(parser.get_parsed_content("scheduler")).sample(
            torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)),
            classifier_guided,
            num_inference_steps=2,
        )
        self.assertEqual(sample.shape, (2, 1, 8, 8, 8))
        self.assertTrue(torch.isfinite(sample).all())
        ema = parser.get_parsed_content("ema")
        self.assertIsInstance(ema, ExponentialMovingAverage)
        self.assertEqual(ema.decay, 0.99)


if __name__ == "__main__":
    unittest.main()
