"""Every bundle in bundles/: metadata and hashes, configs, a 2-step inference on CPU, verify_net_in_out, the CLI, the
report, and train -> export -> load on a temporary copy (the shipped weights are never touched)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from monai_diffusion.bundle import WeightsHashError, load_weights
from monai_diffusion.bundle.runner import (
    REQUIRED_INFERENCE_IDS,
    bundle_configs,
    check_metadata,
    list_bundles,
    run_bundle,
    run_workflow,
    verify_bundle,
)
from monai_diffusion.cli import main

REPO = Path(__file__).resolve().parents[2]
BUNDLES = [b["name"] for b in list_bundles(REPO / "bundles")]
TINY_INFERENCE = {"num_inference_steps": 2, "num_samples_per_contrast": 2, "reference_limit": 8, "progress": False}
#: per-bundle settings that keep a CPU inference to seconds (on top of TINY_INFERENCE)
TINY_BY_BUNDLE = {
    "brain_prior": {"num_samples_per_contrast": 1, "limit": 8},
    "brain_anomaly": {"limit": 8, "contrasts": ["flair"], "save_nifti": True},
    "brain_denoising": {"limit": 4, "sigmas": [0.05], "save_nifti": True},
}
#: outputs every inference must write (glob patterns under the output folder)
OUTPUTS = {
    "brain_anomaly": "maps/*/*.nii.gz",
    "brain_denoising": "denoised/*/*.nii.gz",
}


def _copy_without_weights(name: str, dest: Path) -> Path:
    root = dest / name
    shutil.copytree(REPO / "bundles" / name / "configs", root / "configs")
    meta_path = root / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["weights"] = {}
    meta_path.write_text(json.dumps(meta, indent=4))
    return root


def test_bundles_found():
    assert "brain_generation" in BUNDLES


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_and_hashes(name):
    assert check_metadata(REPO / "bundles" / name) == []
    meta = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())
    assert meta["weights"], "a bundle ships weights"
    assert (REPO / "bundles" / name / "docs" / "README.md").is_file()
    for rel in meta["weights"]:
        size_mb = (REPO / "bundles" / name / rel).stat().st_size / 2**20
        assert size_mb < 25, f"{rel} is {size_mb:.1f} MB"


@pytest.mark.parametrize("name", BUNDLES)
def test_configs(name):
    from monai.bundle import ConfigParser

    folder = REPO / "bundles" / name / "configs"
    meta = json.loads((folder / "metadata.json").read_text())
    evaluated = meta.get("survey_category") is not None  # a component bundle (the shared prior) has no evaluation
    for f in ("inference.json", "train.json", "multi_gpu_train.json", "logging.conf") + (
        ("evaluate.json",) * evaluated
    ):
        assert (folder / f).is_file(), f
    inference = ConfigParser.load_config_file(folder / "inference.json")
    train = ConfigParser.load_config_file(folder / "train.json")
    for key in REQUIRED_INFERENCE_IDS:
        assert key in inference, key
    for key in ("network_def", "autoencoder_def"):
        if key in inference and key in train:
            assert inference[key] == train[key], f"{key} differs between inference.json and train.json"
    if evaluated:
        assert len(bundle_configs(REPO / "bundles" / name, "evaluate", quick=True)) == 3


def test_hash_mismatch_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "b"
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    net = torch.nn.Linear(2, 2)
    from monai_diffusion.bundle import export_weights

    (root / "configs" / "metadata.json").write_text("{}")
    export_weights(root, {"model.pt": net})
    assert load_weights(torch.nn.Linear(2, 2), root / "models" / "model.pt") is not None
    data = bytearray((root / "models" / "model.pt").read_bytes())
    data[-20] ^= 0xFF
    (root / "models" / "model.pt").write_bytes(bytes(data))
    with pytest.raises(WeightsHashError, match="model.pt"):
        load_weights(torch.nn.Linear(2, 2), root / "models" / "model.pt")
    with pytest.raises(WeightsHashError, match="no sha256 recorded"):
        (root / "models" / "other.pt").write_bytes(b"x")
        load_weights(None, root / "models" / "other.pt")
    with pytest.raises(FileNotFoundError, match="train the bundle"):
        load_weights(None, root / "models" / "missing.pt")


@pytest.mark.parametrize("name", BUNDLES)
def test_verify(name):
    assert "verify_net_in_out" in verify_bundle(REPO / "bundles" / name)["checked"]


def _chain(err: BaseException | None) -> str:
    """The messages of an exception and its causes (MONAI's config runner wraps errors in RuntimeError)."""
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(out)


def _dim(name: str) -> int:
    return int(json.loads((REPO / "bundles" / name / "configs" / "inference.json").read_text()).get("dim", 2))


@pytest.mark.parametrize("name", BUNDLES)
def test_two_step_inference_on_cpu(name, tiny_datalist, tiny_datalist_3d, tmp_path):
    datalist = tiny_datalist_3d if _dim(name) == 3 else tiny_datalist
    out = tmp_path / "out"
    result = run_bundle(
        REPO / "bundles" / name,
        "inference",
        overrides={
            **TINY_INFERENCE,
            **TINY_BY_BUNDLE.get(name, {}),
            "output_dir": str(out),
            "datalist": datalist,
            "device": "$torch.device('cpu')",
        },
    )
    metrics = result["metrics"]
    assert metrics["table"]["rows"], "metrics.json has a table"
    assert list(out.glob(OUTPUTS.get(name, "samples/*.nii.gz"))), "NIfTI outputs"
    assert list(out.glob("*.png")), "a PNG montage"
    for m in metrics.get("generators", {}).values():
        assert torch.isfinite(torch.tensor(m["fid"]))
    if name == "brain_generation_3d":  # a 2D reference for a 3D generator is refused with a clear message
        bad = {**TINY_INFERENCE, "datalist": tiny_datalist, "output_dir": str(tmp_path / "bad")}
        with pytest.raises(Exception) as info:
            run_bundle(REPO / "bundles" / name, "inference", overrides=bad)
        assert "differ in dimensionality" in _chain(info.value)


def test_train_export_load_round_trip(tiny_datalist, tmp_path):
    """train.json for 2+2 iterations on a copy: weights exported with hashes, then the copy's inference loads them."""
    root = _copy_without_weights("brain_generation", tmp_path)
    tiny = {
        "bundle_root": str(root),
        "output_dir": str(tmp_path / "runs"),
        "datalist": tiny_datalist,
        "autoencoder_iterations": 2,
        "diffusion_iterations": 2,
        "epoch_length": 1,
        "save_interval": 1,
        "batch_size": 2,
        "diffusion_batch_size": 2,
        "progress": False,
    }
    run_workflow(bundle_configs(root, "train"), str(root / "configs" / "metadata.json"), tiny)
    assert check_metadata(root) == []
    info = json.loads((root / "models" / "model_info.json").read_text())
    assert info["diffusion_iterations"] == 2 and info["scale_factor"] > 0
    out = tmp_path / "out"
    run_bundle(root, "inference", overrides={**TINY_INFERENCE, "output_dir": str(out), "datalist": tiny_datalist})
    assert (out / "metrics.json").is_file()
    (root / "models" / "model.pt").write_bytes((root / "models" / "model.pt").read_bytes()[:-10])
    with pytest.raises(Exception) as info:
        run_bundle(root, "inference", overrides={**TINY_INFERENCE, "output_dir": str(out), "datalist": tiny_datalist})
    assert "model.pt" in _chain(info.value) and "sha256" in _chain(info.value)


def test_cli_list_and_errors(capsys):
    assert main(["bundle", "list"]) == 0
    assert "brain_generation" in capsys.readouterr().out
    assert main(["bundle", "run", "no_such_bundle"]) == 2
    assert "no bundle 'no_such_bundle'" in capsys.readouterr().err
    assert main(["bundle", "run"]) == 2
    if not torch.cuda.is_available():
        assert main(["bundle", "run", "brain_generation", "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["bundle", "run", "brain_generation", "--set", "novalue"]) == 2


def test_report_tiny(tiny_datalist, tmp_path, capsys):
    out = tmp_path / "report"
    sets = [f"{k}={json.dumps(v)}" for k, v in {**TINY_INFERENCE, "datalist": tiny_datalist}.items()]
    args = ["report", "--out", str(out), "--quick", "--only", "brain_generation"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    page = (out / "index.html").read_text()
    assert "Generation" in page and "<table>" in page and "model_card.md" in page
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["brain_generation"]["generators"]) >= {"latent diffusion", "Gaussian latent prior"}
    assert "open" in capsys.readouterr().out
