"""Learned denoisers: the diffusion denoiser starts at the matched noise level, averages samples, refuses what it
cannot take; the supervised and classical wrappers; the evaluation report on a tiny data set."""

from __future__ import annotations

import pytest
import torch

from monai_diffusion.apps.denoising import ClassicalDenoiser, DiffusionDenoiser, SupervisedDenoiser
from tests.apps.test_prior import make_prior


@pytest.mark.parametrize("dim", [2, 3])
def test_diffusion_denoiser_shapes_range_and_start_time(dim):
    prior = make_prior(dim, 8)
    seen = []
    original = prior.reverse

    def spy(x, t, *args, **kwargs):
        seen.append((int(t), x.shape[0]))
        return original(x, t, *args, **kwargs)

    prior.reverse = spy
    noisy = torch.rand(3, 1, *(8,) * dim)
    den = DiffusionDenoiser(prior, num_steps=2, eta=1.0, num_samples=2)
    out = den(noisy, "t2w", sigma=torch.tensor([0.02, 0.05, 0.05]), generator=torch.Generator().manual_seed(0))
    assert out.shape == noisy.shape and out.min() >= 0 and out.max() <= 1
    expected = prior.timestep_for_noise(torch.tensor([0.04, 0.1]))  # model units span 2
    assert sorted(seen) == sorted([(int(expected[0]), 2), (int(expected[1]), 4)])  # grouped per start time
    assert den.nfe == 4


def test_diffusion_denoiser_errors():
    prior = make_prior()
    den = DiffusionDenoiser(prior, num_steps=2)
    with pytest.raises(ValueError, match="outside what the schedule covers"):
        den(torch.rand(1, 1, 16, 16), "t1w", sigma=1e-5)
    with pytest.raises(ValueError, match="trained on the contrasts"):
        den(torch.rand(1, 1, 16, 16), "dwi", sigma=0.05)
    with pytest.raises(ValueError, match="NaN"):
        den(torch.full((1, 1, 16, 16), float("nan")), "t1w", sigma=0.05)
    with pytest.raises(ValueError, match="eta"):
        DiffusionDenoiser(prior, eta=2.0)


def test_supervised_and_classical_wrappers():
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.zero_()
    noisy = torch.rand(2, 1, 16, 16)
    assert torch.allclose(SupervisedDenoiser(net)(noisy), noisy, atol=1e-6)  # identity network, exact round trip
    tv = ClassicalDenoiser("monai_diffusion.apps.denoising.baselines.tv_denoise", weight_factor=1.0)
    out = tv(noisy, None, sigma=torch.tensor([0.05, 0.05]))
    assert out.shape == noisy.shape and not torch.equal(out, noisy)
