"""bundles/brain_reconstruction: verification, inference on two user images end to end (k-space simulated, NIfTI
reconstructions and uncertainty maps written), the evaluation with every method at a tiny setting, and bad inputs
refused with clear messages. Uses the shipped brain_prior weights (the bundle has none of its own)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from monai_diffusion.bundle.runner import check_metadata, run_bundle, verify_bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "brain_reconstruction"
PRIOR = REPO / "bundles" / "brain_prior"
TINY = {"num_inference_steps": 2, "num_posterior_samples": 2, "progress": False, "device": "$torch.device('cpu')"}

pytestmark = pytest.mark.skipif(
    not (PRIOR / "models" / "model.pt").is_file(), reason="the brain_prior weights are not present"
)


def _chain(err: BaseException | None) -> str:
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(out)


def _user_datalist(tiny_datalist: str, folder: Path, size: int | None = None) -> str:
    """Two noiseless test slices of the tiny data set (FLAIR and T1w) as a user's datalist of NIfTI images
    (``size``: crop them, for a wrong-size input)."""
    root = Path(tiny_datalist).parent
    test = [it for it in json.loads(Path(tiny_datalist).read_text())["test"] if it["brain_voxels"] >= 800]
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for it, contrast in zip([test[len(test) // 2], test[len(test) // 3]], ["flair", "t1w"]):
        item = {"image": str(root / it[f"{contrast}_clean"]), "label": str(root / it["label"]), "contrast": contrast}
        if size is not None:
            for key in ("image", "label"):
                img = nib.load(item[key])
                crop = np.asarray(img.dataobj)[:size, :size]
                item[key] = str(folder / f"{key}_{contrast}.nii.gz")
                nib.save(nib.Nifti1Image(crop.astype(np.float32), img.affine), item[key])
        items.append(item)
    path = folder / "datalist.json"
    path.write_text(json.dumps({"test": items}))
    return str(path)


def test_verify():
    assert check_metadata(BUNDLE) == []
    assert "verify_net_in_out" in verify_bundle(BUNDLE)["checked"]
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["survey_category"] == "reconstruction"
    assert meta["eval_metrics"]["test_psnr_brain_R4"] > meta["eval_metrics"]["test_psnr_cs_baseline_R4"]
    info = json.loads((BUNDLE / "models" / "model_info.json").read_text())
    prior_meta = json.loads((PRIOR / "configs" / "metadata.json").read_text())
    # the prior the numbers were measured with is the one shipped
    assert info["prior_weights_sha256"] == prior_meta["weights"]["models/model.pt"]["sha256"]


def test_inference_on_two_user_images_writes_nifti(tiny_datalist, tmp_path):
    datalist = _user_datalist(tiny_datalist, tmp_path / "data")
    out = tmp_path / "out"
    overrides = {**TINY, "datalist": datalist, "output_dir": str(out), "num_inference_steps": 5}
    result = run_bundle(BUNDLE, "inference", overrides=overrides)
    rows = result["metrics"]["table"]["rows"]
    assert [r[0] for r in rows] == ["MCG, mean of samples", "zero-filled (baseline)"] and rows[0][1] == "4"
    assert result["metrics"]["images"] == 2
    for i in range(2):
        recon = nib.load(out / "samples" / f"mcg_mean_of_samples_R4_{i:04d}.nii.gz").get_fdata()
        std = nib.load(out / "samples" / f"mcg_mean_of_samples_R4_{i:04d}_std.nii.gz").get_fdata()
        assert recon.shape[:2] == (64, 64) and np.isfinite(recon).all() and (std >= 0).all() and std.max() > 0
    assert (out / "reconstruction_examples.png").is_file()
    # 5 steps already beat zero-filling inside the brain (2 do not: MCG's gradient step overshoots)
    assert rows[0][2] > rows[1][2]


def test_evaluate_every_method_with_overrides(tiny_datalist, tmp_path):
    out = tmp_path / "eval"
    overrides = {
        **TINY,
        "datalist": tiny_datalist,
        "output_dir": str(out),
        "limit": 2,
        "lesion_limit": 1,
        "num_inference_steps": 3,
        "contrasts": ["flair"],
        "cs_iterations": 10,
    }
    result = run_bundle(BUNDLE, "evaluate", overrides=overrides)
    metrics = result["metrics"]
    assert set(metrics["accelerations"]) == {"4", "8"} and metrics["images"] == 3  # 2 slices + 1 with a lesion
    assert metrics["lesion_images"] >= 1
    methods = metrics["accelerations"]["8"]["methods"]
    expected = {"MCG, mean of samples", "MCG, 1 sample", "DDNM", "Score-MRI DC", "DPS"}
    assert expected | {"L1-wavelet CS (baseline)", "zero-filled (baseline)"} == set(methods)
    assert methods["MCG, mean of samples"]["nfe"] == 6 and methods["DDNM"]["nfe"] == 3
    assert not list(out.glob("samples/*"))  # evaluate.json turns NIfTI outputs off


def test_bad_inputs_are_refused(tiny_datalist, tmp_path):
    base = {**TINY, "datalist": _user_datalist(tiny_datalist, tmp_path / "ok"), "output_dir": str(tmp_path / "x")}
    with pytest.raises(Exception) as info:
        run_bundle(BUNDLE, "inference", overrides={**base, "prior_bundle": str(tmp_path / "no_prior")})
    assert "no_prior" in _chain(info.value) and "not found" in _chain(info.value)
    with pytest.raises(Exception) as info:
        run_bundle(BUNDLE, "inference", overrides={**base, "acceleration": 0.5})
    assert "acceleration R must be a finite number >= 1" in _chain(info.value)
    small = _user_datalist(tiny_datalist, tmp_path / "small", size=32)
    with pytest.raises(Exception) as info:
        run_bundle(BUNDLE, "inference", overrides={**base, "datalist": small})
    assert "trained on (64, 64) images" in _chain(info.value) and "(32, 32)" in _chain(info.value)


def test_train_json_records_the_prior_and_never_touches_it(tmp_path):
    """The bundle has no weights of its own: train.json re-records the prior's hash in models/model_info.json."""
    import shutil

    bundle = tmp_path / "brain_reconstruction"
    shutil.copytree(BUNDLE, bundle, ignore=shutil.ignore_patterns("runs"))
    prior = Path(BUNDLE).parent / "brain_prior" / "models" / "model.pt"
    before = prior.stat().st_mtime_ns
    run_bundle(bundle, "train", overrides={"bundle_root": str(bundle)})
    info = json.loads((bundle / "models" / "model_info.json").read_text())
    assert info["trained_here"] is False
    assert info["prior_weights_sha256"] == hashlib.sha256(prior.read_bytes()).hexdigest()
    assert check_metadata(bundle) == []
    assert prior.stat().st_mtime_ns == before
