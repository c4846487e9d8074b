"""Anomaly detectors and their evaluation: post-processing, every detector in 2D and 3D, clear errors, and the
metrics on a constructed case where the answer is known."""

from __future__ import annotations

import pytest
import torch

from monai_diffusion.apps.anomaly import (
    AutoencoderDetector,
    DDIMEncodeDecodeDetector,
    IntensityDetector,
    PartialNoisingDetector,
    anomaly_map,
    score_maps,
)
from tests.apps.test_prior import make_prior


def test_anomaly_map_masks_and_filters():
    image = torch.zeros(1, 1, 16, 16)
    recon = torch.zeros(1, 1, 16, 16)
    image[0, 0, 8, 8] = 1.0  # an isolated hot pixel: removed by the median filter
    image[0, 0, 2:7, 2:7] = 1.0  # a 5x5 blob: kept
    brain = torch.ones_like(image)
    brain[..., 12:, :] = 0
    image[0, 0, 13, 13] = 5.0
    m = anomaly_map(image, recon, brain, median_kernel=3)
    assert m[0, 0, 8, 8] == 0 and m[0, 0, 4, 4] == 1.0
    assert m[..., 12:, :].abs().sum() == 0  # nothing outside the brain
    assert torch.equal(anomaly_map(image, recon, brain, 1), (image - recon).abs() * brain)
    with pytest.raises(ValueError, match="odd"):
        anomaly_map(image, recon, brain, 4)


def test_a_brain_mask_is_required():
    det = IntensityDetector()
    with pytest.raises(ValueError, match="brain mask is required"):
        det(torch.zeros(1, 1, 8, 8), "flair", None)
    with pytest.raises(ValueError, match="empty"):
        det(torch.zeros(1, 1, 8, 8), "flair", torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        det(torch.zeros(1, 1, 8, 8), "flair", torch.ones(1, 1, 4, 4))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kind", ["gaussian", "simplex", "ddim", "autoencoder", "intensity"])
def test_every_detector_in_2d_and_3d(dim, kind):
    prior = make_prior(dim, 8)
    image = torch.rand(2, 1, *(8,) * dim) * 2 - 1
    brain = torch.ones_like(image)
    if kind in ("gaussian", "simplex"):
        det = PartialNoisingDetector(prior, start_timestep=100, num_steps=3, noise=kind, median_kernel=3)
    elif kind == "ddim":
        det = DDIMEncodeDecodeDetector(prior, end_timestep=100, num_steps=3, median_kernel=3)
    elif kind == "autoencoder":
        det = AutoencoderDetector(torch.nn.Conv3d(1, 1, 1) if dim == 3 else torch.nn.Conv2d(1, 1, 1), median_kernel=3)
    else:
        det = IntensityDetector(median_kernel=3)
    out = det(image, "flair", brain, generator=torch.Generator().manual_seed(0))
    assert out["map"].shape == image.shape and out["reconstruction"].shape == image.shape
    assert (out["map"] >= 0).all() and torch.isfinite(out["map"]).all()
    if kind in ("gaussian", "simplex"):  # seeded noise: reproducible
        again = det(image, "flair", brain, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out["map"], again["map"])


def test_detector_argument_errors():
    prior = make_prior()
    with pytest.raises(ValueError, match="noise must be"):
        PartialNoisingDetector(prior, noise="pink")
    with pytest.raises(ValueError, match="start_timestep"):
        PartialNoisingDetector(prior, start_timestep=1000)
    with pytest.raises(ValueError, match="end_timestep"):
        DDIMEncodeDecodeDetector(prior, end_timestep=0)
    det = PartialNoisingDetector(prior, start_timestep=50, num_steps=2)
    with pytest.raises(ValueError, match="trained on the contrasts"):
        det(torch.zeros(1, 1, 16, 16), "dwi", torch.ones(1, 1, 16, 16))
    with pytest.raises(ValueError, match="for this 2D prior"):
        det(torch.zeros(1, 1, 8, 8), "t1w", torch.ones(1, 1, 8, 8))


def test_score_maps_on_a_known_case():
    """A perfect map: AUPRC 1, best Dice 1, Dice 1 at a threshold inside the gap, AUROCs 1."""
    lesion = torch.zeros(4, 1, 8, 8)
    lesion[0, 0, 2:4, 2:4] = 1
    lesion[1, 0, 5:7, 1:3] = 1
    maps = lesion * 0.9 + 0.1 * torch.rand(4, 1, 8, 8) * (1 - lesion)
    data = {
        "brain": torch.ones_like(lesion),
        "lesion": lesion,
        "healthy": torch.tensor([False, False, True, True]),
        "subject": ["a", "a", "b", "c"],
    }
    m = score_maps(maps, data, threshold=0.5)
    assert m["auprc"] == pytest.approx(1.0) and m["best_dice"] == pytest.approx(1.0) and m["dice"] == pytest.approx(1.0)
    assert m["image_auroc"] == pytest.approx(1.0) and m["subject_auroc"] == pytest.approx(1.0) and m["subjects"] == 3
    # an inverted map ranks every lesion pixel last
    worst = score_maps(1 - maps, data, threshold=0.5)
    assert worst["auprc"] < 0.2 and worst["dice"] == pytest.approx(0.0)
