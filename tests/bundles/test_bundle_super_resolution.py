"""The super-resolution bundle: verify, inference writing high-resolution and uncertainty NIfTI, evaluate with all
methods and both factors (settings overridden to keep it short), the low-resolution input path, train.json that
trains nothing but records the prior's hash, and bad inputs refused with clear messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monai_diffusion.bundle.runner import check_metadata, run_bundle, verify_bundle
from tests.bundles.test_bundles import _copy_without_weights

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "bundles" / "brain_super_resolution"
TINY = {
    "num_inference_steps": 2,
    "num_posterior_samples": 2,
    "contrasts": ["t1w", "flair"],
    "progress": False,
    "device": "$torch.device('cpu')",
}


def _chain(err: BaseException | None) -> str:
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(out)


def test_verify_and_metadata():
    assert verify_bundle(ROOT)["checked"][-1] == "verify_net_in_out"
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    assert meta["survey_category"] == "other"
    info = json.loads((ROOT / "models" / "model_info.json").read_text())
    assert info["trained_here"] is False and info["prior_bundle"] == "brain_prior"


def test_inference_writes_high_res_and_uncertainty_nifti(tiny_datalist, tmp_path):
    result = run_bundle(
        ROOT, "inference", overrides={**TINY, "limit": 1, "datalist": tiny_datalist, "output_dir": str(tmp_path)}
    )
    rows = result["metrics"]["table"]["rows"]
    assert [r[1] for r in rows] == ["x2", "x4"]
    samples = tmp_path / "samples"
    for f in (2, 4):
        assert len(list(samples.glob(f"diffusion_mean_of_samples_x{f}_000?.nii.gz"))) == 2  # 2 slices
        assert len(list(samples.glob(f"diffusion_mean_of_samples_x{f}_*_std.nii.gz"))) == 2
        assert len(list(samples.glob(f"low_res_x{f}_*.nii.gz"))) == 2
    assert (tmp_path / "super_resolution_x4.png").is_file()

    # the low-resolution images written above go back in as a user's low-resolution data
    low = [{"image": str(p), "contrast": "t1w"} for p in sorted(samples.glob("low_res_x4_*.nii.gz"))]
    (tmp_path / "low.json").write_text(json.dumps({"test": low}))
    out = tmp_path / "from_low_res"
    overrides = {**TINY, "limit": 1, "datalist": tiny_datalist, "output_dir": str(out)}
    run_bundle(ROOT, "inference", overrides={**overrides, "low_res_datalist": str(tmp_path / "low.json")})
    assert len(list((out / "samples").glob("sr_*_std.nii.gz"))) == 2


def test_evaluate_all_methods_both_factors(tiny_datalist, tmp_path):
    overrides = {**TINY, "num_inference_steps": 3, "limit": 2, "wavelet_iterations": 10}
    overrides.update(datalist=tiny_datalist, output_dir=str(tmp_path))
    result = run_bundle(ROOT, "evaluate", overrides=overrides)
    rows = result["metrics"]["table"]["rows"]
    names = {r[0] for r in rows}
    assert {"diffusion (mean of samples)", "DDNM (1 sample)", "data consistency (1 sample)"} <= names
    assert {"DPS (1 sample)", "MCG (1 sample)", "bicubic (baseline)", "L1-wavelet (baseline)"} <= names
    assert len(rows) == 2 * len(names) and result["metrics"]["images"] == 4
    ddnm = result["metrics"]["factors"]["4"]["DDNM (1 sample)"]
    assert ddnm["residual"] < 1e-5 and ddnm["psnr"] > 10


def test_train_records_the_prior_and_trains_nothing(tmp_path):
    root = _copy_without_weights("brain_super_resolution", tmp_path)
    run_bundle(root, "train", overrides={"bundle_root": str(root)})
    assert check_metadata(root) == []
    assert json.loads((root / "models" / "model_info.json").read_text())["trained_here"] is False


def test_bad_inputs_are_refused(tiny_datalist, tmp_path):
    base = {**TINY, "limit": 1, "datalist": tiny_datalist, "output_dir": str(tmp_path)}
    with pytest.raises(Exception) as info:
        run_bundle(ROOT, "inference", overrides={**base, "prior_bundle": str(tmp_path / "no_prior")})
    assert "no_prior" in _chain(info.value) and "not found" in _chain(info.value)
    with pytest.raises(Exception) as info:
        run_bundle(ROOT, "inference", overrides={**base, "factors": [3]})
    assert "factor 3 does not divide the image size (64, 64)" in _chain(info.value)
