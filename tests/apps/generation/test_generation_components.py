"""Components of the generation bundle: contrast items, calibrated latent encoder, Gaussian latent prior, generator."""

from __future__ import annotations

import unittest

import torch
from monai.networks.nets import AutoencoderKL
from parameterized import parameterized

from monai_diffusion.apps.generation import GaussianLatentPrior, LatentEncoder, contrast_items
from monai_diffusion.apps.generation.pipeline import (
    GaussianLatentGenerator,
    LatentGenerator,
    contrast_labels,
    format_table,
    write_montage,
)
from monai_diffusion.networks.schedulers import DDIMScheduler
from tests.test_utils import dims_cases, tiny_unet


def _items():
    return [
        {
            "t1w": "a_t1.nii",
            "t2w": "a_t2.nii",
            "label": "a_l.nii",
            "brain_voxels": 900,
            "healthy": True,
            "subject": "a",
        },
        {
            "t1w": "b_t1.nii",
            "t2w": "b_t2.nii",
            "label": "b_l.nii",
            "brain_voxels": 10,
            "healthy": False,
            "subject": "b",
        },
    ]


def _autoencoder(dim: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        spatial_dims=dim,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=2,
        num_res_blocks=1,
        attention_levels=(False, False),
        norm_num_groups=8,
    )


class TestContrastItems(unittest.TestCase):
    def test_one_item_per_contrast_with_ids(self):
        out = contrast_items(_items(), contrasts=("t1w", "t2w"))
        self.assertEqual([o["contrast"] for o in out], [0, 1, 0, 1])
        self.assertEqual(
            out[1], {"image": "a_t2.nii", "contrast": 1, "label": "a_l.nii", "healthy": True, "subject": "a"}
        )

    def test_source_picks_another_key(self):
        items = [{"t1w": "a.nii", "t1w_clean": "a_clean.nii", "healthy": True}]
        self.assertEqual(
            contrast_items(items, contrasts=("t1w",), source="{contrast}_clean")[0]["image"], "a_clean.nii"
        )
        with self.assertRaisesRegex(ValueError, "t2w_clean"):
            contrast_items(items, contrasts=("t2w",), source="{contrast}_clean")

    def test_filters(self):
        self.assertEqual(len(contrast_items(_items(), contrasts=("t1w",), min_brain_voxels=800)), 1)
        self.assertEqual(len(contrast_items(_items(), contrasts=("t1w",), healthy_only=True)), 1)
        self.assertEqual(len(contrast_items(_items() * 5, contrasts=("t1w",), limit=3)), 3)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "no key"):
            contrast_items(_items(), contrasts=("t1w", "flair"))
        with self.assertRaisesRegex(ValueError, "no items left"):
            contrast_items(_items(), contrasts=("t1w",), min_brain_voxels=10_000)
        with self.assertRaisesRegex(ValueError, "at least one contrast"):
            contrast_items(_items(), contrasts=())

    def test_contrast_labels(self):
        self.assertEqual(contrast_labels(["t2w", "flair"], 2).tolist(), [1, 1, 3, 3])
        with self.assertRaisesRegex(ValueError, "trained on"):
            contrast_labels(["dwi"], 2)


class TestLatentEncoder(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_calibrated_latents_have_unit_std(self, _, dim):
        ae = _autoencoder(dim)
        enc = LatentEncoder(ae)
        x = torch.rand(6, 1, *([16] * dim)) * 2 - 1
        with self.assertRaisesRegex(RuntimeError, "calibrate"):
            enc(x)
        enc.calibrate(x)
        z = enc(x)
        self.assertAlmostEqual(float(z.double().std()), 1.0, places=4)
        self.assertIn("scale_factor", enc.state_dict())
        self.assertTrue(ae.training, "the encoder restores the first stage's mode")

    def test_bad_scale(self):
        with self.assertRaisesRegex(ValueError, "positive"):
            LatentEncoder(_autoencoder(2), scale_factor=0.0)


class TestGaussianLatentPrior(unittest.TestCase):
    def test_fit_recovers_moments(self):
        g = torch.Generator().manual_seed(0)
        n, shape = 20000, (2, 2, 1)
        a = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.8, 0.6, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
        z0 = (torch.randn(n, 4, generator=g) @ a.T).reshape(n, *shape)
        z1 = (torch.randn(n, 4, generator=g) * 0.5 + 3.0).reshape(n, *shape)
        labels = torch.cat([torch.zeros(n), torch.ones(n)]).long()
        prior = GaussianLatentPrior(2, shape, shrinkage=0.0).fit(torch.cat([z0, z1]), labels)
        s = prior.sample(torch.zeros(n, dtype=torch.long), generator=g).reshape(n, 4)
        torch.testing.assert_close(torch.cov(s.T), a @ a.T, atol=0.05, rtol=0.06)  # ~4 sd of the estimate
        s1 = prior.sample(torch.ones(n, dtype=torch.long), generator=g).reshape(n, 4)
        torch.testing.assert_close(s1.mean(0), torch.full((4,), 3.0), atol=0.02, rtol=0)

    def test_identity_is_standard_normal_and_errors(self):
        prior = GaussianLatentPrior(1, (3,), identity=True)
        s = prior.sample(torch.zeros(5000, dtype=torch.long), generator=torch.Generator().manual_seed(1))
        self.assertLess(abs(float(s.std()) - 1.0), 0.03)
        with self.assertRaisesRegex(ValueError, "labels must be"):
            prior.sample(torch.tensor([1]))
        with self.assertRaisesRegex(ValueError, "at least 2"):
            GaussianLatentPrior(2, (3,)).fit(torch.randn(4, 3), torch.tensor([0, 0, 0, 1]))


class TestGenerators(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_shapes_range_and_determinism(self, _, dim):
        ae = _autoencoder(dim)
        unet = tiny_unet(dim, in_channels=2, classes=3, out_channels=2)
        latent = (2, *([8] * dim))
        gen = LatentGenerator(ae, unet, DDIMScheduler(1000), 1.0, latent, null_class=2, num_inference_steps=2)
        labels = torch.tensor([0, 1, 1])
        a = gen(labels, generator=torch.Generator().manual_seed(0))
        b = gen(labels, generator=torch.Generator().manual_seed(0))
        self.assertEqual(tuple(a.shape), (3, 1, *([16] * dim)))
        self.assertTrue(torch.equal(a, b))
        self.assertLessEqual(float(a.abs().max()), 1.0)
        self.assertEqual(gen.nfe(), 4)
        with self.assertRaisesRegex(ValueError, "contrast ids"):
            gen(torch.tensor([2]))
        base = GaussianLatentGenerator(ae, GaussianLatentPrior(2, latent, identity=True))
        self.assertEqual(tuple(base(labels).shape), (3, 1, *([16] * dim)))

    def test_montage_and_table(self, tmp=None):
        import tempfile

        import numpy as np
        from PIL import Image

        with tempfile.TemporaryDirectory() as d:
            path = write_montage(np.random.rand(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 1, 2]), f"{d}/m.png", columns=3)
            self.assertEqual(Image.open(path).size, (24, 24))
        text = format_table(["a", "bb"], [[1, None], ["xyz", 2.5]])
        self.assertEqual(text.splitlines()[1], "---  ---")


if __name__ == "__main__":
    unittest.main()


class TestEvaluateSamples(unittest.TestCase):
    def test_precomputed_reference_gives_the_same_metrics(self):
        from monai_diffusion.apps.generation.pipeline import evaluate_samples, reference_statistics

        g = torch.Generator().manual_seed(0)
        samples, real = torch.rand(8, 1, 64, 64, generator=g) * 2 - 1, torch.rand(8, 1, 64, 64, generator=g) * 2 - 1
        labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        direct = evaluate_samples(samples, labels, real, labels, pairs=4)
        cached = evaluate_samples(samples, labels, reference_statistics(real, labels), pairs=4)
        self.assertEqual(direct, cached)
        with self.assertRaisesRegex(ValueError, "reference_labels"):
            evaluate_samples(samples, labels, real)
