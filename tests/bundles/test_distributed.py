"""``multi_gpu_train.json``: ``torchrun --nproc_per_node 2`` on gloo/CPU ends with identical weights on both ranks,
and they equal a single-process run over the same global batch (both stages: autoencoder and latent diffusion).

Design of the single-process reference (built in this process from train.json with the same overrides, without the
overlay, starting from the initial weights that rank 0 saves before training):

* data: iteration ``i`` takes, for each rank ``r``, batch ``i`` of ``DistributedSampler(num_replicas=2, rank=r)``
  at epoch 1 (what MONAI's trainer sets at the first ``EPOCH_STARTED``), concatenated into one global batch of 4;
* randomness: the overlay reseeds each rank's global torch RNG with ``seed + rank`` when a stage starts and seeds
  the diffusion noise/timestep generator with ``seed + rank``; the reference draws the same numbers per half of
  the global batch from generators seeded the same way (the AutoencoderKL posterior sample through a patched
  ``sampling``, condition dropout through ``drop_condition``, noise and timesteps through ``DiffusionPrepareBatch``);
* one forward of the global batch through the autoencoder and the diffusion UNet (GroupNorm only), one optimiser
  step on the global-batch mean loss. The mean over two equal shards of the per-shard means is the global mean, so
  DDP's averaged gradients are the global-batch gradients up to float32 summation order;
* the PatchDiscriminator has BatchNorm: its batch statistics are per rank under DDP on CPU (``SyncBatchNorm``
  exists only for GPUs; on CUDA the overlay converts it), so the reference runs the discriminator per shard.

Float32 throughout (``amp_dtype: null``) so that the tolerances measure only summation order. Measured: the trained
models' outputs agree to <= 1.3e-6 relative (tolerance 1e-5) while training changed them by ~100 %; every weight
tensor differs by <= 1e-4 of what training changed in it (tolerance 1e-3); the latent scale factor to 2e-8.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundles" / "brain_generation" / "configs"
WORLD = 2
PER_RANK_BATCH = 2
ITERATIONS = 2
MODELS = ("autoencoder", "discriminator", "network", "ema")
#: relative (L2) agreement of the trained models' outputs with the reference: float32 summation order only
RTOL = 1e-5
#: the discriminator's outputs go through BatchNorm over 2 images per rank, which amplifies float32 summation-order
#: differences: measured 1.3e-6 to 5.5e-5 relative across runs and thread counts
DISCRIMINATOR_RTOL = 2e-4
#: weight tensors: ||w_ddp - w_ref|| <= WEIGHT_TOL * ||w_ref - w_initial|| (measured <= 1e-4)
WEIGHT_TOL = 1e-3

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is unavailable",
)

# overrides shared by the torchrun command and the reference: 8 items (2 slices x 4 contrasts), i.e. one pass of
# 2 iterations x 2 ranks x 2 images; the discriminator on from iteration 1 so its DDP path is exercised; float32.
SCALARS = {
    "autoencoder_iterations": ITERATIONS,
    "diffusion_iterations": ITERATIONS,
    "epoch_length": ITERATIONS,
    "batch_size": PER_RANK_BATCH,
    "diffusion_batch_size": PER_RANK_BATCH,
}
STRUCTURED = {
    "train_items": "$monai_diffusion.apps.generation.contrast_items(@datalist, 'training', @contrasts, "
    "@min_brain_voxels, limit=2)",
    "autoencoder_trainer#adversarial_start": 1,
    "amp_dtype": None,
    "progress": False,
}
SAVE_INITIAL = (
    "$torch.save({'autoencoder': @autoencoder.module.state_dict(), 'discriminator': @discriminator.module.state_dict(), "
    "'network': @network.module.state_dict()}, @output_dir + '/initial.pt') if @rank == 0 else None"
)
SAVE_FINAL = (
    "$torch.save({'autoencoder': @autoencoder.module.state_dict(), 'discriminator': @discriminator.module.state_dict(), "
    "'network': @network.module.state_dict(), 'ema': @ema.averaged.state_dict(), "
    "'scale_factor': float(@latent_encoder.scale_factor), "
    "'iterations': [@autoencoder_trainer.state.iteration, @diffusion_trainer.state.iteration]}, "
    "@output_dir + '/final_rank' + str(@rank) + '.pt')"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(tmp_path: Path, datalist: str) -> tuple[Path, Path]:
    """Run the overlay with torchrun on a temporary bundle copy; return (output dir, bundle root)."""
    root = tmp_path / "brain_generation"
    shutil.copytree(CONFIGS, root / "configs")
    out = tmp_path / "out"
    out.mkdir()
    overlay = json.loads((CONFIGS / "multi_gpu_train.json").read_text())
    test_config = {**STRUCTURED, "run": [SAVE_INITIAL, *overlay["run"], SAVE_FINAL]}
    (tmp_path / "test.json").write_text(json.dumps(test_config, indent=2))
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json"), str(tmp_path / "test.json")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--nnodes", "1"]
    cmd += ["--master_port", str(_free_port()), "-m", "monai.bundle", "run", "--config_file", json.dumps(files)]
    cmd += ["--bundle_root", str(root), "--output_dir", str(out), "--datalist", datalist]
    for key, value in SCALARS.items():
        cmd += [f"--{key}", str(value)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return out, root


class _PerShard(nn.Module):
    """Run a BatchNorm discriminator on each rank's shard separately, as DDP without SyncBatchNorm does."""

    def __init__(self, module: nn.Module, shards: int) -> None:
        super().__init__()
        self.module = module
        self.shards = shards

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat([self.module(part)[-1] for part in x.chunk(self.shards)])]


def _global_batches(dataset, seed: int) -> list[dict]:
    """Global batch of each iteration: the ranks' DistributedSampler batches at epoch 1, rank 0 first."""
    from monai.data import DistributedSampler, list_data_collate

    orders = []
    for rank in range(WORLD):
        sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=True, seed=seed)
        sampler.set_epoch(1)
        orders.append(list(sampler))
    batches = []
    for i in range(ITERATIONS):
        idx = [j for order in orders for j in order[i * PER_RANK_BATCH : (i + 1) * PER_RANK_BATCH]]
        batches.append(list_data_collate([dataset[j] for j in idx]))
    return batches


def _reference(datalist: str, initial: dict) -> tuple[dict[str, nn.Module], float, torch.Tensor]:
    """The single-process run over the global batches (see the module docstring): the trained models, the latent
    scale factor and the 8 training images. The recipes' own trainers run, fed the global batches, so whatever the
    recipes attach (EMA, gradient clipping, ...) runs as in the bundle."""
    from monai.bundle import ConfigParser

    from monai_diffusion.inferers import drop_condition

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json")])
    parser.update({**SCALARS, **STRUCTURED, "datalist": datalist, "device": "$torch.device('cpu')"})
    parser.update({"output_dir": "unused", "bundle_root": "unused"})
    for trainer in ("autoencoder_trainer", "diffusion_recipe"):
        parser[f"{trainer}#checkpoint_dir"] = None
        parser[f"{trainer}#train_handlers"] = []
    seed = int(parser.get_parsed_content("seed"))
    ae = parser.get_parsed_content("autoencoder")
    disc = parser.get_parsed_content("discriminator")
    net = parser.get_parsed_content("network")
    for module, key in ((ae, "autoencoder"), (disc, "discriminator"), (net, "network")):
        module.load_state_dict(initial[key])  # before the recipes build optimisers and the EMA copy
    dataset = parser.get_parsed_content("train_dataset")

    # autoencoder stage: the recipe's trainer and AutoencoderStep on the global batches
    trainer = parser.get_parsed_content("autoencoder_trainer")
    step = trainer._process_function
    step.discriminator = _PerShard(step.discriminator, WORLD)
    rngs = [torch.Generator().manual_seed(seed + r) for r in range(WORLD)]  # each rank's global RNG

    def sampling(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
        # as MONAI's randn_like(z_sigma): empty_like keeps z_sigma's (channels-last) strides, so the draws fill memory
        # in the same order
        eps = torch.cat([torch.empty_like(s).normal_(generator=g) for s, g in zip(z_sigma.chunk(WORLD), rngs)])
        return z_mu + eps * z_sigma

    ae.sampling = sampling
    trainer.data_loader = _global_batches(dataset, seed)
    trainer.run()
    del ae.sampling
    latent_encoder = parser.get_parsed_content("latent_encoder")
    scale = latent_encoder.calibrate(parser.get_parsed_content("calibration_loader"))

    # diffusion stage: each half of the global batch gets its rank's noise, timesteps and condition dropout
    diffusion, ema = parser.get_parsed_content("diffusion_recipe")
    prepare, inferer = diffusion.prepare_batch, diffusion.inferer
    noise_rngs = [torch.Generator().manual_seed(seed + r) for r in range(WORLD)]  # diffusion_recipe#seed
    rngs = [torch.Generator().manual_seed(seed + r) for r in range(WORLD)]  # global RNG, reseeded at the start
    dropout, inferer.condition_dropout = inferer.condition_dropout, 0.0  # drawn per rank below

    def prepare_global(batch: dict, device, non_blocking: bool = False, **kwargs):
        parts = []
        for r in range(WORLD):
            shard = {k: v[r * PER_RANK_BATCH : (r + 1) * PER_RANK_BATCH] for k, v in batch.items()}
            prepare.generator = noise_rngs[r]
            x, target, _, kw = prepare(shard, device, non_blocking)
            cond = drop_condition(kw["condition"], inferer.null_condition, dropout, rngs[r])
            parts.append((x, target, kw["noise"], kw["timesteps"], cond["class_label"]))
        x, target, noise, timesteps, labels = (torch.cat(t) for t in zip(*parts))
        return x, target, (), {"noise": noise, "timesteps": timesteps, "condition": {"class_label": labels}}

    diffusion.prepare_batch = prepare_global
    diffusion.data_loader = _global_batches(dataset, seed + 1)
    diffusion.run()
    assert trainer.state.iteration == diffusion.state.iteration == ITERATIONS
    models = {"autoencoder": ae, "discriminator": disc, "network": net, "ema": ema.averaged}
    return models, scale, torch.cat([b["image"] for b in _global_batches(dataset, seed)]).float()


def _probe_outputs(models: dict[str, nn.Module], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each trained model computes on fixed inputs (the discriminator in train mode: BatchNorm batch statistics)."""
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(4, 3, 16, 16, generator=g)
    timesteps, labels = torch.tensor([0, 250, 500, 999]), torch.tensor([0, 1, 2, 4])
    with torch.no_grad():
        out = {"autoencoder": models["autoencoder"].reconstruct(images)}
        out["discriminator"] = models["discriminator"].train()(images)[-1]
        for name in ("network", "ema"):
            out[name] = models[name].eval()(latents, timesteps=timesteps, class_labels=labels)
    return out


def _loaded(models: dict[str, nn.Module], states: dict) -> dict[str, nn.Module]:
    out = {}
    for name, module in models.items():
        out[name] = copy.deepcopy(module)
        out[name].load_state_dict(states[name])
    return out


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


@pytest.fixture
def one_thread():
    """The reference runs on one thread, as the torchrun ranks do (OMP_NUM_THREADS=1): same summation order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_torchrun_two_ranks_equal_single_process_global_batch(tiny_datalist, tmp_path, one_thread):
    out, root = _torchrun(tmp_path, tiny_datalist)
    ranks = [torch.load(out / f"final_rank{r}.pt", weights_only=True) for r in range(WORLD)]
    initial = torch.load(out / "initial.pt", weights_only=True)
    initial["ema"] = initial["network"]

    # (a) both ranks ran every iteration and end bitwise identical (DDP all-reduces the gradients, the same optimiser
    # steps follow). Exception: the discriminator's BatchNorm running statistics, which stay per rank without
    # SyncBatchNorm (DDP broadcasts rank 0's buffers before each forward; train-mode outputs never read them).
    assert ranks[0]["iterations"] == ranks[1]["iterations"] == [ITERATIONS, ITERATIONS]
    assert ranks[0]["scale_factor"] == ranks[1]["scale_factor"]
    for name in MODELS:
        for key, value in ranks[0][name].items():
            if name == "discriminator" and key.endswith(("running_mean", "running_var")):
                continue
            assert torch.equal(value, ranks[1][name][key]), f"{name}.{key} differs between ranks"

    # rank 0 wrote the checkpoints and the export (model.pt: its EMA, autoencoder.pt: its autoencoder)
    assert sorted(p.name for p in (out / "diffusion").iterdir()) == [f"checkpoint_final_iteration={ITERATIONS}.pt"]
    for file, name in (("model.pt", "ema"), ("autoencoder.pt", "autoencoder")):
        exported = torch.load(root / "models" / file, weights_only=True)
        assert exported.keys() == ranks[0][name].keys(), file
        assert all(torch.equal(v, ranks[0][name][k]) for k, v in exported.items()), file
    info = json.loads((root / "models" / "model_info.json").read_text())
    assert info["world_size"] == WORLD and info["diffusion_iterations"] == ITERATIONS

    # (b) equal to the single-process run over the same global batch
    models, scale, images = _reference(tiny_datalist, initial)
    assert abs(ranks[0]["scale_factor"] - scale) <= RTOL * scale, f"scale factor {ranks[0]['scale_factor']} != {scale}"
    reference = {name: m.state_dict() for name, m in models.items()}
    # weight tensors: the difference is float32 summation order, tiny next to what the two Adam steps changed.
    # Biases are left to the output check: attention key biases and conv biases followed by a per-channel GroupNorm
    # have an identically zero gradient, so Adam's lr * g / (|g| + eps) turns their rounding noise into updates of
    # up to lr that differ between any two summation orders and change nothing the network computes.
    for name in MODELS:
        for key, ref in reference[name].items():
            if not ref.is_floating_point() or key.endswith("bias") or "running_" in key:
                continue
            error = float((ranks[0][name][key].double() - ref.double()).norm())
            update = float((ref.double() - initial[name][key].double()).norm())
            assert error <= WEIGHT_TOL * update, f"{name}.{key}: error {error:.1e} vs update {update:.1e}"
    # what the trained models compute agrees to RTOL, and the training changed it far more than that
    ddp = _probe_outputs(_loaded(models, ranks[0]), images)
    ref = _probe_outputs(models, images)
    start = _probe_outputs(_loaded(models, initial), images)
    for name in MODELS:
        error, change = _relative(ddp[name], ref[name]), _relative(start[name], ref[name])
        tol = DISCRIMINATOR_RTOL if name == "discriminator" else RTOL
        assert error <= tol, f"{name} output: relative error {error:.1e} > {tol:.0e}"
        assert change >= 100 * RTOL, f"{name} output barely changed in training ({change:.1e})"
