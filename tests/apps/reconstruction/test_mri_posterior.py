"""``apps.reconstruction.mri`` and ``.evaluation``: seeded per-image masks and k-space, the posterior reconstructor
through the one sampling loop (exact answers: full sampling returns the image, hard methods reproduce the measured
lines), the baselines' call, items from both kinds of datalist and the report's files. A stand-in prior (a network
that predicts zero noise) keeps this fast; the trained prior is exercised by ``tests/bundles``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from monai_diffusion.apps.prior import DiffusionPrior
from monai_diffusion.apps.reconstruction import (
    CSReconstructor,
    PosteriorReconstructor,
    ZeroFilledReconstructor,
    reconstruction_items,
    reconstruction_report,
    simulate_kspace,
)
from monai_diffusion.networks.schedulers import DDIMScheduler
from monai_diffusion.operators import MRIOperator

SHAPES = {2: (16, 16), 3: (8, 8, 8)}


class ZeroNoise(nn.Module):
    """Predicts zero noise (so x0 = x / alpha): any network would do for the data-consistency checks."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps, class_labels=None):
        return self.scale * x


def _prior(dim: int) -> DiffusionPrior:
    sampler = DDIMScheduler(1000, "linear_beta", beta_start=1e-4, beta_end=0.02, clip_sample=True)
    return DiffusionPrior(ZeroNoise(), sampler, ("t1w", "flair"), SHAPES[dim])


def _images(dim: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, *SHAPES[dim]), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("dim", [2, 3])
def test_simulated_kspace_has_one_seeded_mask_per_image(dim):
    images = _images(dim, 3)
    kspace, masks = simulate_kspace(images, 4, seeds=[5, 6, 7])
    again, masks_again = simulate_kspace(images, 4, seeds=[5, 6, 7])
    assert torch.equal(masks, masks_again) and torch.equal(kspace, again)
    assert not torch.equal(masks[0], masks[1])  # a mask per image
    assert kspace.is_complex() and kspace.shape == images.shape
    assert float(kspace[masks == 0].abs().max()) == 0.0
    n = masks[0].numel()
    assert all(abs(n / float(m.sum()) - 4) < 0.5 for m in masks)
    full, ones = simulate_kspace(images, 1)
    assert bool((ones == 1).all())
    rec, std = ZeroFilledReconstructor()(full, ones)
    assert std is None and torch.allclose(rec, images, atol=1e-5)


@pytest.mark.parametrize("bad", [0.5, 0.0, -4, float("nan"), float("inf")])
def test_acceleration_below_one_is_refused(bad):
    with pytest.raises(ValueError, match="acceleration R must be a finite number >= 1"):
        simulate_kspace(_images(2), bad)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("method", ["mcg", "ddnm", "score_mri"])
def test_hard_methods_reproduce_the_measured_lines_and_full_sampling(dim, method):
    images = _images(dim)
    prior = _prior(dim)
    recon = PosteriorReconstructor(prior, method, num_steps=3, num_samples=3, batch_size=4)
    kspace, masks = simulate_kspace(images, 4, seeds=[0, 1])
    g = torch.Generator().manual_seed(0)
    mean, std = recon(kspace, masks, ["t1w", "flair"], generator=g)
    assert mean.shape == images.shape and std is not None and std.shape == images.shape
    op = MRIOperator(masks, spatial_dims=dim, real_image=True)
    assert float((op.A(mean) - kspace).abs().max()) < 1e-4  # every sample is data-consistent, so is the mean
    assert float(std.max()) > 1e-3  # the unmeasured part varies between samples
    full, ones = simulate_kspace(images, 1)
    mean, std = recon(full, ones, "t1w", generator=g)
    assert torch.allclose(mean, images, atol=1e-4) and float(std.max()) < 1e-4
    assert recon.nfe == 9


def test_dps_single_sample_and_the_clipping_of_the_prior_is_off():
    prior = _prior(2)
    recon = PosteriorReconstructor(prior, "dps", num_steps=2, num_samples=1, step_size=0.5)
    mean, std = recon(*simulate_kspace(_images(2), 4), 0)
    assert std is None and torch.isfinite(mean).all()
    assert prior.sampler.clip_sample and not recon.scheduler.clip_sample  # the prior's own sampler is untouched
    assert recon.scheduler.eta == 1.0 and prior.sampler.eta == 0.0


def test_cs_baseline_improves_on_zero_filled():
    x = torch.zeros(1, 1, 32, 32)
    x[..., 8:24, 10:22] = 0.8  # piecewise constant: sparse in Haar
    kspace, masks = simulate_kspace(x, 3, seeds=[3])
    zf, _ = ZeroFilledReconstructor()(kspace, masks)
    cs, std = CSReconstructor(lam=1e-3, wavelet="haar", num_iter=100)(kspace, masks)
    assert std is None and float((cs - x).norm()) < 0.93 * float((zf - x).norm())  # lam = 0 gives 0.96


def test_bad_inputs_are_refused():
    prior = _prior(2)
    kspace, masks = simulate_kspace(_images(2), 4)
    with pytest.raises(ValueError, match="method must be one of"):
        PosteriorReconstructor(prior, "admm")
    with pytest.raises(ValueError, match=">= 1"):
        PosteriorReconstructor(prior, num_samples=0)
    with pytest.raises(ValueError, match="trained on"):
        PosteriorReconstructor(prior, num_steps=1)(*simulate_kspace(torch.rand(1, 1, 8, 8), 2), 0)
    with pytest.raises(TypeError, match="complex"):
        PosteriorReconstructor(prior, num_steps=1)(kspace.real, masks, 0)
    with pytest.raises(ValueError, match="one mask per image"):
        ZeroFilledReconstructor()(kspace, masks[:1])
    with pytest.raises(ValueError, match="not 'dwi'"):
        PosteriorReconstructor(prior, num_steps=1)(kspace, masks, "dwi")
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        simulate_kspace(torch.rand(2, 2, 16, 16), 4)


def _write(path, array) -> str:
    nib.save(nib.Nifti1Image(np.asarray(array, dtype=np.float32), np.eye(4)), str(path))
    return str(path)


@pytest.fixture
def user_datalist(tmp_path):
    """Two fully sampled 16 x 16 images with brain masks, one with a lesion, as a user's datalist."""
    items = []
    for i in range(2):
        image = np.zeros((16, 16), np.float32)
        image[3:13, 4:12] = 0.5 + 0.1 * i
        brain = (image > 0).astype(np.float32)
        item = {
            "image": _write(tmp_path / f"im{i}.nii.gz", image),
            "label": _write(tmp_path / f"brain{i}.nii.gz", brain),
            "contrast": "flair",
        }
        if i == 1:
            lesion = np.zeros_like(image)
            lesion[6:9, 6:9] = 1
            item["lesion"] = _write(tmp_path / "lesion1.nii.gz", lesion)
        items.append(item)
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"test": items}))
    return str(path)


def test_items_from_a_user_datalist(user_datalist):
    items = reconstruction_items(user_datalist, "test", ["t1w", "flair"])
    assert [it["contrast"] for it in items] == [1, 1] and "brain" in items[0] and "lesion" in items[1]
    assert len(reconstruction_items(user_datalist, "test", ["t1w", "flair"], limit=1)) == 1
    with pytest.raises(ValueError, match="not one the prior knows"):
        reconstruction_items(user_datalist, "test", ["t1w", "t2w"])


def test_report_writes_metrics_nifti_and_figure(user_datalist, tmp_path):
    items = reconstruction_items(user_datalist, "test", ["t1w", "flair"])
    methods = {
        "posterior": PosteriorReconstructor(_prior(2), "ddnm", num_steps=2, num_samples=2),
        "zero-filled": ZeroFilledReconstructor(),
    }
    out = tmp_path / "out"
    result = reconstruction_report(methods, items, out, [1, 4], batch_size=1, progress=False, save_nifti=True)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["table"]["rows"] == result["table"]["rows"] and len(result["table"]["rows"]) == 4
    assert result["lesion_images"] == 1
    full = result["accelerations"]["1"]["methods"]["zero-filled"]
    assert full["psnr_brain"] > 60 and full["psnr_lesion"] > 60  # full sampling: exact
    assert "std_error_correlation" in result["accelerations"]["4"]["methods"]["posterior"]
    assert (out / "samples" / "posterior_R4_0001_std.nii.gz").is_file()
    assert (out / "samples" / "zero_filled_R4_0000.nii.gz").is_file()
    assert (out / "reconstruction_examples.png").is_file()
    with pytest.raises(ValueError, match="acceleration R"):
        reconstruction_report(methods, items, out, [0.5], progress=False)
