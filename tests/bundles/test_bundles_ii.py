"""Bundles II (the shared healthy prior, anomaly detection, denoising): each train.json trains and exports on a
temporary copy; the anomaly and denoising bundles load the prior from the prior bundle's folder (2D and 3D
configs); bad inputs are refused with clear messages; multi_gpu_train.json runs under torchrun on gloo."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_diffusion.bundle.runner import bundle_configs, check_metadata, run_bundle, run_workflow
from tests.bundles.test_bundles import _copy_without_weights as _copy

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = {"iterations": 2, "epoch_length": 1, "save_interval": 1, "batch_size": 2, "progress": False}


def _limited(source: str) -> str:
    return (
        "$monai_diffusion.apps.generation.contrast_items(@datalist, 'training', @contrasts, 0, healthy_only=True, "
        f"limit=2, source='{source}')"
    )


def _train(root: Path, datalist: str, tmp: Path, extra_files=(), **overrides) -> dict:
    files = bundle_configs(root, "train") + [str(root / "configs" / f) for f in extra_files]
    settings = {
        **TINY_TRAIN,
        "bundle_root": str(root),
        "output_dir": str(tmp / f"runs_{root.name}_{len(extra_files)}"),
        "datalist": datalist,
        "amp_dtype": None,
        **overrides,
    }
    run_workflow(files, str(root / "configs" / "metadata.json"), settings)
    assert check_metadata(root) == []
    return json.loads((root / "models" / "model_info.json").read_text())


@pytest.fixture(scope="module")
def trained(tiny_datalist, tiny_datalist_3d, tmp_path_factory):
    """Temporary copies of the three bundles, each trained for 2 iterations (the prior also in 3D)."""
    tmp = tmp_path_factory.mktemp("bundles_ii")
    prior = _copy("brain_prior", tmp)
    info = _train(prior, tiny_datalist, tmp, train_items=_limited("{contrast}_clean"))
    assert info["iterations"] == 2 and info["image_source"] == "{contrast}_clean"
    _train(prior, tiny_datalist_3d, tmp, ("train_3d.json",), train_items=_limited("{contrast}_clean"))
    assert (prior / "models" / "model_3d.pt").is_file() and check_metadata(prior) == []
    anomaly = _copy("brain_anomaly", tmp)
    _train(anomaly, tiny_datalist, tmp, train_items=_limited("{contrast}_clean"))
    denoising = _copy("brain_denoising", tmp)
    info = _train(denoising, tiny_datalist, tmp, train_items=_limited("{contrast}_clean"))
    assert info["max_train_sigma"] > 0
    return {"prior": prior, "anomaly": anomaly, "denoising": denoising, "tmp": tmp}


def _chain(err: BaseException | None) -> str:
    out = []
    while err is not None:
        out.append(str(err))
        err = err.__cause__ or err.__context__
    return " | ".join(out)


def test_anomaly_evaluate_loads_the_prior_bundle(trained, tiny_datalist):
    out = trained["tmp"] / "anomaly_out"
    result = run_bundle(
        trained["anomaly"],
        "evaluate",
        quick=True,
        overrides={
            "prior_bundle": str(trained["prior"]),
            "datalist": tiny_datalist,
            "output_dir": str(out),
            "num_inference_steps": 2,
            "limit": 6,
            "progress": False,
        },
    )
    names = [row[0] for row in result["metrics"]["table"]["rows"]]
    assert {"AnoDDPM (Gaussian)", "AnoDDPM (simplex)", "DDIM encode/decode", "autoencoder (baseline)"} <= set(names)
    assert "intensity threshold (baseline)" in names
    assert (out / "maps_flair.png").is_file()


def test_denoising_evaluate_loads_the_prior_bundle(trained, tiny_datalist):
    out = trained["tmp"] / "denoising_out"
    result = run_bundle(
        trained["denoising"],
        "evaluate",
        quick=True,
        overrides={
            "prior_bundle": str(trained["prior"]),
            "datalist": tiny_datalist,
            "output_dir": str(out),
            "num_inference_steps": 2,
            "limit": 2,
            "sigmas": [0.05],
            "progress": False,
        },
    )
    names = {row[0] for row in result["metrics"]["table"]["rows"]}
    assert {"noisy input", "non-local means (baseline)", "total variation (baseline)"} <= names
    assert {"supervised UNet (baseline)", "diffusion (DDIM from matched t)"} <= names
    level = result["metrics"]["levels"]["0.05"]
    assert 0 < level["estimate_mean"] < 0.2


@pytest.mark.parametrize("name", ["anomaly", "denoising"])
def test_3d_configs_run_with_the_3d_prior(trained, tiny_datalist_3d, name):
    root = trained[name]
    files = [*bundle_configs(root, "inference"), str(root / "configs" / "inference_3d.json")]
    out = trained["tmp"] / f"{name}_3d_out"
    overrides = {
        "bundle_root": str(root),
        "prior_bundle": str(trained["prior"]),
        "datalist": tiny_datalist_3d,
        "output_dir": str(out),
        "num_inference_steps": 2,
        "progress": False,
    }
    overrides.update({"contrasts": ["flair"]} if name == "anomaly" else {"sigmas": [0.05], "limit": 1})
    run_workflow(files, str(root / "configs" / "metadata.json"), overrides)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["table"]["rows"]


def test_bad_inputs_are_refused(trained, tiny_datalist):
    """A contrast the prior was not trained on; a datalist without brain masks; a noise level below the schedule."""
    from monai_diffusion.apps.denoising import DiffusionDenoiser
    from monai_diffusion.apps.prior import load_prior

    base = {"prior_bundle": str(trained["prior"]), "num_inference_steps": 2, "limit": 4, "progress": False}
    with pytest.raises(Exception) as info:
        run_bundle(
            trained["anomaly"],
            "inference",
            overrides={
                **base,
                "datalist": tiny_datalist,
                "contrasts": ["dwi"],
                "output_dir": str(trained["tmp"] / "x"),
            },
        )
    assert "dwi" in _chain(info.value)
    items = json.loads(Path(tiny_datalist).read_text())
    for section in ("validation", "test"):
        for it in items[section]:
            it.pop("label")
            for key in list(it):
                if key in ("t1w", "t2w", "pd", "flair", "lesion") or key.endswith("_clean"):
                    it[key] = str(Path(tiny_datalist).parent / it[key])
    no_mask = trained["tmp"] / "no_mask.json"
    no_mask.write_text(json.dumps(items))
    with pytest.raises(Exception) as info:
        run_bundle(
            trained["anomaly"],
            "inference",
            overrides={**base, "datalist": str(no_mask), "output_dir": str(trained["tmp"] / "y")},
        )
    assert "brain mask" in _chain(info.value)
    prior = load_prior(trained["prior"])
    with pytest.raises(ValueError, match="outside what the schedule covers"):
        DiffusionDenoiser(prior, num_steps=2)(torch.rand(1, 1, 64, 64), "t1w", sigma=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("name", ["brain_prior", "brain_anomaly", "brain_denoising"])
def test_multi_gpu_train_runs_under_torchrun(name, tiny_datalist, tmp_path):
    """Two gloo ranks, two iterations: rank 0 exports weights with world_size 2 recorded."""
    root = _copy(name, tmp_path)
    files = bundle_configs(root, "multi_gpu_train")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--nnodes", "1"]
    cmd += ["--master_port", str(_free_port()), "-m", "monai.bundle", "run", "--config_file", json.dumps(files)]
    cmd += ["--bundle_root", str(root), "--output_dir", str(tmp_path / "out"), "--datalist", tiny_datalist]
    for key, value in TINY_TRAIN.items():
        cmd += [f"--{key}", str(value)]
    cmd += ["--train_items", _limited("{contrast}_clean")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    info = json.loads((root / "models" / "model_info.json").read_text())
    assert info["world_size"] == 2 and info["iterations"] == 2
