"""From training to samples: checkpoints of 2-iteration ``monai-diffusion train`` runs (2D on the embedded data, 3D on
a datalist of NIfTI volumes, 16 px) sampled by ``monai-diffusion sample`` and :func:`sample_checkpoint`, and the
errors for checkpoints that cannot be sampled."""

from __future__ import annotations

import argparse
import contextlib
import io
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from monai_diffusion.cli import main
from monai_diffusion.engines import checkpoint_config, cli, latest_checkpoint, sample_checkpoint
from monai_diffusion.engines.sample_cli import SAMPLER_NAMES
from monai_diffusion.engines.sampling import SAMPLERS
from tests.engines.test_cli import write_nifti_datalist


def train(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    common = ["--epochs", "1", "--epoch-length", "2", "--batch-size", "2", "--device", "cpu", "--save-interval", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.run(parser.parse_args([*argv, *common])) == 0


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from monai_diffusion.data import prepare_dataset

    root = tmp_path_factory.mktemp("sampling")
    prepare_dataset(root / "brainsim2d", dim=2, size=16, subjects=4)
    return root


@pytest.fixture(scope="module")
def run2d(root):
    out = root / "ddpm2d"
    train(["diffusion", "--data", str(root / "brainsim2d"), "--out", str(out)])
    return out


def test_sampler_names_agree():
    assert tuple(SAMPLERS) == SAMPLER_NAMES


def test_sample_2d_from_the_command_line_and_python(run2d, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = ["sample", "--checkpoint", str(run2d), "--out", str(out), "--num", "3", "--steps", "2", "--device", "cpu"]
    assert main(argv) == 0
    assert "3 samples from" in capsys.readouterr().out
    files = sorted((out / "samples").iterdir())
    assert [f.name for f in files] == ["sample_000.nii.gz", "sample_001.nii.gz", "sample_002.nii.gz"]
    volume = nib.load(str(files[0])).get_fdata()
    assert volume.shape == (16, 16) and 0.0 <= volume.min() and volume.max() <= 1.0
    assert np.asarray(Image.open(out / "montage.png")).shape == (16, 48)
    record = json.loads((out / "sampling.json").read_text())
    assert record["weights"] == "ema" and record["iteration"] == 2 and record["sampler"] == "ddim"
    # the same from Python, seeded; the files hold what is returned
    first = sample_checkpoint(run2d, num=3, steps=2, device="cpu")
    again = sample_checkpoint(latest_checkpoint(run2d), num=3, steps=2, device="cpu")
    assert first["images"].shape == (3, 1, 16, 16) and torch.equal(first["images"], again["images"])
    np.testing.assert_allclose(volume, first["images"][0, 0].numpy(), atol=1e-6)
    trained = sample_checkpoint(run2d, num=3, steps=2, device="cpu", use_ema=False)
    assert trained["weights"] == "network" and not torch.equal(trained["images"], first["images"])
    other_seed = sample_checkpoint(run2d, num=3, steps=2, device="cpu", seed=1)
    assert not torch.equal(other_seed["images"], first["images"])


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs_on_the_recorded_forward_process(run2d, sampler):
    result = sample_checkpoint(run2d, num=2, steps=2, sampler=sampler, device="cpu", batch_size=1)
    images = result["images"]
    assert images.shape == (2, 1, 16, 16) and bool(torch.isfinite(images).all())
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0


def test_sample_3d_from_a_datalist_run(root, tmp_path):
    datalist = write_nifti_datalist(tmp_path / "vols", [(18, 16, 14)] * 3 + [(16, 16, 16)])
    out = root / "ddpm3d"
    train(["diffusion", "--datalist", datalist, "--dim", "3", "--size", "16", "--out", str(out)])
    assert checkpoint_config(latest_checkpoint(out))["image"]["spatial_size"] == [16, 16, 16]
    samples = tmp_path / "samples"
    assert main(["sample", "--checkpoint", str(out), "--out", str(samples), "--num", "2", "--steps", "2"]) == 0
    assert nib.load(str(samples / "samples" / "sample_001.nii.gz")).shape == (16, 16, 16)
    assert np.asarray(Image.open(samples / "montage.png")).shape == (16, 32)  # middle slices


def test_class_conditional_checkpoint(root, run2d):
    out = root / "conditional"
    train(["diffusion", "--data", str(root / "brainsim2d"), "--out", str(out), "--class-conditional"])
    lesion = sample_checkpoint(out, num=2, steps=2, device="cpu", class_label=0)
    guided = sample_checkpoint(out, num=2, steps=2, device="cpu", class_label=0, guidance_scale=3.0)
    assert not torch.equal(lesion["images"], guided["images"])
    with pytest.raises(ValueError, match=r"class_label must lie in \[0, 1\]"):
        sample_checkpoint(out, num=1, steps=1, device="cpu", class_label=2)
    with pytest.raises(ValueError, match="unconditional network"):
        sample_checkpoint(run2d, num=1, steps=1, device="cpu", class_label=1)


def test_checkpoints_that_cannot_be_sampled(run2d, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="not found"):
        sample_checkpoint(tmp_path / "nothing.pt")
    assert main(["sample", "--checkpoint", str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "s")]) == 2
    assert "monai-diffusion sample: error: checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no readable checkpoint"):
        sample_checkpoint(tmp_path / "empty")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        sample_checkpoint(tmp_path / "broken.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds no 'network' weights"):
        sample_checkpoint(tmp_path / "other.pt")

    # written before the configuration was recorded: the message says what to do; config= works
    full = torch.load(latest_checkpoint(run2d), weights_only=True)
    old = {k: v for k, v in full.items() if k != "config"}
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(
        ValueError, match=r"records no network/scheduler configuration.*monai-diffusion train diffusion"
    ):
        sample_checkpoint(tmp_path / "old.pt", device="cpu")
    rescued = sample_checkpoint(tmp_path / "old.pt", num=1, steps=2, device="cpu", config=full["config"])
    assert rescued["images"].shape == (1, 1, 16, 16)

    # autoencoder checkpoints, with and without a recorded configuration
    from tests.test_utils import tiny_autoencoder

    ae = tiny_autoencoder(2)
    ae_config = {"kind": "autoencoder", "network": {"_target_": "monai.networks.nets.AutoencoderKL"}}
    torch.save({"network": ae.state_dict(), "config": ae_config}, tmp_path / "ae.pt")
    torch.save({"network": ae.state_dict()}, tmp_path / "ae_old.pt")
    for name in ("ae.pt", "ae_old.pt"):
        with pytest.raises(ValueError, match="autoencoder checkpoint .*monai-diffusion train diffusion"):
            sample_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_checkpoint(run2d, sampler="nope")
    with pytest.raises(ValueError, match="num must be an integer >= 1"):
        sample_checkpoint(run2d, num=0)
