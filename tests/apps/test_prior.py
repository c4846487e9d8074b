"""The shared diffusion prior: contrast labels, input checks, noise-level matching, partial reverse and encoding,
and loading from a bundle folder with hash-checked weights (2D and 3D)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_diffusion.apps.prior import DiffusionPrior, load_prior, noise_to_signal, sample_prior
from monai_diffusion.networks.schedulers import DDIMScheduler
from tests.test_utils import tiny_unet


def make_prior(dim: int = 2, size: int = 16) -> DiffusionPrior:
    sampler = DDIMScheduler(1000, "linear_beta", beta_start=1e-4, beta_end=0.02, clip_sample=True)
    return DiffusionPrior(tiny_unet(dim, classes=4).eval(), sampler, ("t1w", "t2w", "pd", "flair"), (size,) * dim)


def test_class_labels_and_errors():
    prior = make_prior()
    assert prior.class_labels("flair", 3).tolist() == [3, 3, 3]
    assert prior.class_labels(["t1w", 2], 2).tolist() == [0, 2]
    with pytest.raises(ValueError, match="trained on the contrasts"):
        prior.class_labels("dwi", 1)
    with pytest.raises(ValueError, match="outside the prior's classes"):
        prior.class_labels(7, 1)
    with pytest.raises(ValueError, match="3 contrast labels for a batch of 2"):
        prior.class_labels(["t1w"] * 3, 2)


@pytest.mark.parametrize("dim", [2, 3])
def test_check_image(dim):
    prior = make_prior(dim, 8)
    prior.check_image(torch.zeros(2, 1, *(8,) * dim))
    with pytest.raises(ValueError, match=f"for this {dim}D prior"):
        prior.check_image(torch.zeros(2, 1, *(8,) * (5 - dim)))
    with pytest.raises(ValueError, match="for this"):
        prior.check_image(torch.zeros(2, 1, *(10,) * dim))
    with pytest.raises(ValueError, match="NaN"):
        prior.check_image(torch.full((1, 1, *(8,) * dim), float("nan")))
    with pytest.raises(ValueError, match="empty batch"):
        prior.check_image(torch.zeros(0, 1, *(8,) * dim))


def test_timestep_for_noise_matches_the_schedule():
    prior = make_prior()
    nts = noise_to_signal(prior.sampler.alphas_cumprod)
    # exact grid values map back to their own timestep
    for t in (1, 10, 100, 400):
        assert int(prior.timestep_for_noise(float(nts[t]))) == t
    # sqrt((1 - abar)/abar) is increasing, so larger noise gives later times
    t = prior.timestep_for_noise(torch.tensor([0.04, 0.1, 0.2]))
    assert (t[1:] > t[:-1]).all()
    with pytest.raises(ValueError, match="outside what the schedule covers"):
        prior.timestep_for_noise(1e-4)
    with pytest.raises(ValueError, match="finite"):
        prior.timestep_for_noise(float("nan"))


@pytest.mark.parametrize("dim", [2, 3])
def test_reverse_encode_and_grid(dim):
    prior = make_prior(dim, 8)
    x = torch.rand(2, 1, *(8,) * dim) * 2 - 1
    assert prior._grid(250, 10).tolist()[0] == 250 and prior._grid(250, 10).tolist()[-1] > 0
    assert len(prior._grid(3, 10)) == 3  # never more steps than integer times
    z = prior.encode(x, 100, 4, "t1w")
    assert z.shape == x.shape and torch.isfinite(z).all()
    out = prior.reverse(z, 100, 4, "t1w")
    assert out.shape == x.shape and out.abs().max() <= 1 + 1e-5  # clipped x0 predictions, last step to abar = 1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    a = prior.reverse(z, 100, 4, "t1w", eta=1.0, generator=g1)
    b = prior.reverse(z, 100, 4, "t1w", eta=1.0, generator=g2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="start timestep"):
        prior.reverse(z, 0, 4)


def test_add_noise_is_the_forward_marginal():
    prior = make_prior()
    x, n = torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16)
    abar = float(prior.sampler.alphas_cumprod[300])
    assert torch.allclose(prior.add_noise(x, n, 300), torch.full_like(x, abar**0.5))


def test_load_prior_from_a_bundle_folder(tmp_path):
    """A bundle folder with network_def/sampler in its inference config and hash-recorded weights."""
    from monai_diffusion.bundle import WeightsHashError, export_weights

    root = tmp_path / "prior_bundle"
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "metadata.json").write_text("{}")
    config = {
        "dim": 2,
        "size": 16,
        "contrasts": ["t1w", "t2w", "pd", "flair"],
        "network_def": {
            "_target_": "monai.networks.nets.DiffusionModelUNet",
            "spatial_dims": "@dim",
            "in_channels": 1,
            "out_channels": 1,
            "channels": [8, 8],
            "attention_levels": [False, False],
            "num_res_blocks": 1,
            "norm_num_groups": 8,
            "num_head_channels": 8,
            "num_class_embeds": 4,
        },
        "sampler": {"_target_": "monai_diffusion.networks.schedulers.DDIMScheduler", "num_train_timesteps": 1000},
    }
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    net = tiny_unet(2, classes=4)
    export_weights(root, {"model.pt": net})
    prior = load_prior(root)
    assert prior.spatial_shape == (16, 16) and prior.contrasts[3] == "flair"
    assert all(not p.requires_grad for p in prior.network.parameters())
    x = torch.randn(1, 1, 16, 16)
    t = torch.tensor([10])
    assert torch.allclose(
        prior.network(x, t, class_labels=torch.tensor([1])), net(x, t, class_labels=torch.tensor([1]))
    )
    samples = sample_prior(prior, per_contrast=1, num_steps=2, output_dir=tmp_path / "out")
    assert samples.shape == (4, 1, 16, 16) and (tmp_path / "out" / "prior_montage.png").is_file()
    (root / "models" / "model.pt").write_bytes((root / "models" / "model.pt").read_bytes()[:-4])
    with pytest.raises(WeightsHashError, match="model.pt"):
        load_prior(root)
