"""Super-resolution methods: the diffusion methods are exactly consistent with the low-resolution data where the
method projects (DDNM, data consistency, MCG), draw several samples for the uncertainty map, and refuse bad input;
the baselines have the right shapes and properties; the evaluation report writes its outputs (2D and 3D)."""

from __future__ import annotations

import json

import pytest
import torch

from monai_diffusion.apps.super_resolution import (
    DiffusionSuperResolution,
    InterpolationSuperResolution,
    WaveletSuperResolution,
    check_low_res,
    degrade,
)
from monai_diffusion.operators import SuperResolutionOperator
from tests.apps.test_prior import make_prior


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("method", ["ddnm", "dc", "mcg"])
def test_projecting_methods_are_exactly_consistent(dim, method):
    prior = make_prior(dim, 8)
    clean = torch.rand(2, 1, *(8,) * dim)
    low = degrade(clean, 2)
    sr = DiffusionSuperResolution(prior, method, num_steps=3, eta=1.0, num_samples=2, step_size=0.5)
    mean, std = sr(low, 2, ["t1w", "flair"], generator=torch.Generator().manual_seed(0))
    assert mean.shape == clean.shape and std is not None and std.shape == clean.shape
    assert bool((std >= 0).all()) and float(std.max()) > 0  # two different samples
    assert torch.allclose(SuperResolutionOperator(2, dim).A(mean), low, atol=1e-5)
    assert sr.nfe == 6


def test_dps_single_sample_is_seeded_and_has_no_std():
    prior = make_prior(2, 8)
    low = degrade(torch.rand(1, 1, 8, 8), 4)
    sr = DiffusionSuperResolution(prior, "dps", num_steps=2, step_size=0.1)
    a, std = sr(low, 4, 0, generator=torch.Generator().manual_seed(1))
    b, _ = sr(low, 4, 0, generator=torch.Generator().manual_seed(1))
    assert std is None and torch.equal(a, b) and bool(torch.isfinite(a).all())


def test_diffusion_errors():
    prior = make_prior(2, 8)
    with pytest.raises(ValueError, match="method must be one of"):
        DiffusionSuperResolution(prior, "ddrm")
    with pytest.raises(ValueError, match="eta"):
        DiffusionSuperResolution(prior, eta=2.0)
    sr = DiffusionSuperResolution(prior, num_steps=1)
    with pytest.raises(ValueError, match="does not divide the image size"):
        sr(torch.rand(1, 1, 3, 3), 3)
    with pytest.raises(ValueError, match="does not match"):
        sr(torch.rand(1, 1, 2, 2), 2)
    with pytest.raises(ValueError, match="NaN"):
        sr(torch.full((1, 1, 4, 4), float("nan")), 2)
    with pytest.raises(ValueError, match="integer >= 1"):
        check_low_res(torch.rand(1, 1, 4, 4), 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_low_res([[0.0]], 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not divide"):
        degrade(torch.rand(1, 1, 6, 6), 4)


@pytest.mark.parametrize("dim", [2, 3])
def test_baselines(dim):
    clean = torch.rand(2, 1, *(16,) * dim)
    low = degrade(clean, 4)
    op = SuperResolutionOperator(4, dim)
    modes = ["bilinear", "nearest", "pinv"] + (["bicubic"] if dim == 2 else [])
    for mode in modes:
        out, std = InterpolationSuperResolution(mode)(low, 4)
        assert out.shape == clean.shape and std is None
        const, _ = InterpolationSuperResolution(mode)(torch.full_like(low, 0.3), 4)
        assert torch.allclose(const, torch.full_like(const, 0.3), atol=1e-5)  # constants are kept
    pinv, _ = InterpolationSuperResolution("pinv")(low, 4)
    assert torch.allclose(op.A(pinv), low, atol=1e-6)
    if dim == 3:
        with pytest.raises(ValueError, match="2D only"):
            InterpolationSuperResolution("bicubic")(low, 4)
    wav, _ = WaveletSuperResolution({4: 1e-4}, num_iter=30, wavelet="haar")(low, 4)
    bil, _ = InterpolationSuperResolution("bilinear")(low, 4)
    res = (op.A(wav) - low).norm()
    assert wav.shape == clean.shape and res < (op.A(bil) - low).norm() and res / low.norm() < 0.05
    with pytest.raises(ValueError, match="no lam for factor 2"):
        WaveletSuperResolution({4: 1e-4})(degrade(clean, 2), 2)


def test_report_writes_table_nifti_and_figure(tmp_path, tiny_items):
    from monai_diffusion.apps.super_resolution import super_resolution_report

    prior = make_prior(2, 64)
    methods = {
        "diffusion (DDNM)": DiffusionSuperResolution(prior, "ddnm", num_steps=1, eta=1.0, num_samples=2),
        "bicubic (baseline)": InterpolationSuperResolution("bicubic"),
    }
    result = super_resolution_report(methods, tiny_items, tmp_path, factors=(4,), noise_std=0.01, progress=False)
    rows = result["table"]["rows"]
    assert [r[0] for r in rows] == list(methods) and all(r[1] == "x4" for r in rows)
    assert json.loads((tmp_path / "metrics.json").read_text())["factors"]["4"]["bicubic (baseline)"]["psnr"] > 10
    assert len(list((tmp_path / "samples").glob("diffusion_ddnm_x4_*_std.nii.gz"))) == len(tiny_items)
    assert (tmp_path / "super_resolution_x4.png").is_file()
    with pytest.raises(ValueError, match="does not divide"):
        super_resolution_report(methods, tiny_items, tmp_path, factors=(3,), progress=False)
