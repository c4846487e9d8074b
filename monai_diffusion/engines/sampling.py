"""Samples from a training checkpoint in one call: :func:`sample_checkpoint` (``monai-diffusion sample`` runs it).

The checkpoint says what to build: the ``config`` entry that ``monai-diffusion train diffusion`` (or a recipe given
``config=``) records holds the network's and the training scheduler's constructor arguments and the image shape and
intensity range (see :mod:`monai_diffusion.engines.checkpoints`). The weights are the EMA of the network when the
checkpoint holds one (Ho et al., 2020, App. B), else the trained network. Any discrete-time sampler of
:mod:`monai_diffusion.networks.schedulers` may draw the samples: it is built on the recorded forward process
(training steps, noise schedule, prediction type), which :func:`~monai_diffusion.networks.schedulers.check_forward_process`
confirms.
"""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from monai_diffusion.engines.checkpoints import build_component, checkpoint_iteration, latest_checkpoint

__all__ = ["SAMPLERS", "load_checkpoint_for_sampling", "sampler_from_config", "sample_checkpoint"]

#: sampler names of ``monai-diffusion sample --sampler`` -> class in :mod:`monai_diffusion.networks.schedulers`
SAMPLERS: dict[str, str] = {
    "ddpm": "DDPMScheduler",
    "ddim": "DDIMScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
    "euler": "EulerKarrasScheduler",
    "heun": "HeunKarrasScheduler",
}

#: constructor arguments that describe the forward process (shared by every discrete-time sampler)
_FORWARD_PROCESS_ARGS = (
    "num_train_timesteps",
    "schedule",
    "prediction_type",
    "clip_sample",
    "clip_sample_range",
    "thresholding",
    "dynamic_thresholding_ratio",
    "sample_max_value",
)

_NO_CONFIG = (
    "{path} records no network/scheduler configuration: it was written before `monai-diffusion train` recorded one, "
    "or by a Python recipe without `config=`. Resume it with the `monai-diffusion train diffusion` command that wrote "
    "it (same --out, a larger --epochs): its next checkpoints record the configuration. Or, from Python, call "
    "monai_diffusion.engines.sample_checkpoint(path, config={{'network': {{'_target_': ..., ...}}, 'scheduler': "
    "{{'_target_': ..., ...}}, 'image': {{'spatial_size': [...]}}}})."
)
_AUTOENCODER = (
    "{path} is an autoencoder checkpoint (as written by `monai-diffusion train autoencoder`): it encodes and decodes "
    "images and cannot draw samples. Sample from a diffusion checkpoint (`monai-diffusion train diffusion ...`)."
)


def _resolve(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no readable checkpoint (*.pt) in the folder {str(path)!r}")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    return path


def _looks_like_autoencoder(checkpoint: Mapping[str, Any]) -> bool:
    if "discriminator" in checkpoint or "d_optimizer" in checkpoint:
        return True
    network = checkpoint.get("network")
    keys = list(network) if isinstance(network, Mapping) else []
    parts = ("encoder", "decoder", "quantizer", "quant_conv_mu", "quant_conv_log_sigma", "post_quant_conv")
    return bool(keys) and all(k.split(".")[0] in parts for k in keys)


def load_checkpoint_for_sampling(
    checkpoint: str | os.PathLike, config: Mapping[str, Any] | None = None
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """Read a diffusion checkpoint and its configuration, refusing what cannot be sampled with a clear message.

    Args:
        checkpoint: a checkpoint file, or a folder (its newest readable checkpoint).
        config: use this configuration instead of (or where there is none, in place of) the recorded one.

    Returns:
        ``(path, checkpoint dict, config)``.

    Raises:
        FileNotFoundError: no such file, or a folder without a readable checkpoint.
        ValueError: an unreadable file, one without network weights, an autoencoder checkpoint, or no configuration.
    """
    path = _resolve(checkpoint)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} (truncated, or not a PyTorch checkpoint): {err}"
        ) from None
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("network"), Mapping):
        have = sorted(ckpt) if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ValueError(
            f"{path} holds no 'network' weights (it has {have}); expected a checkpoint written by "
            "`monai-diffusion train diffusion` or by monai_diffusion.engines.diffusion_trainer"
        )
    recorded = ckpt.get("config")
    cfg = dict(config) if config is not None else (dict(recorded) if isinstance(recorded, Mapping) else None)
    kind = cfg.get("kind") if cfg is not None else None
    if kind == "autoencoder" or (kind is None and _looks_like_autoencoder(ckpt)):
        raise ValueError(_AUTOENCODER.format(path=path))
    if kind not in (None, "diffusion"):
        raise ValueError(f"{path} is a {kind!r} checkpoint; sampling needs a diffusion checkpoint")
    if cfg is None:
        raise ValueError(_NO_CONFIG.format(path=path))
    missing = [k for k in ("network", "scheduler") if not isinstance(cfg.get(k), Mapping)]
    if missing:
        raise ValueError(
            f"the configuration of {path} has no {' or '.join(missing)} entry; {_NO_CONFIG.format(path='it')}"
        )
    return path, dict(ckpt), cfg


def sampler_from_config(scheduler_config: Mapping[str, Any], sampler: str) -> Any:
    """The sampler ``sampler`` (a key of :data:`SAMPLERS`) on the forward process of a recorded training scheduler.

    Raises:
        ValueError: an unknown sampler name, or a training scheduler whose forward process the sampler cannot run.
    """
    from monai_diffusion.networks import schedulers

    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    trained = build_component(scheduler_config)
    explicit = set(inspect.signature(type(trained).__init__).parameters) - {"self", "args", "kwargs", "schedule_args"}
    # forward-process arguments, and any schedule keywords (beta_start, ...) beyond the class's named arguments
    args = {
        k: v
        for k, v in scheduler_config.items()
        if k != "_target_" and (k in _FORWARD_PROCESS_ARGS or k not in explicit)
    }
    cls = getattr(schedulers, SAMPLERS[sampler])
    try:
        scheduler = cls(**args)
        schedulers.check_forward_process(trained, scheduler)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"cannot run sampler {sampler!r} on the recorded training scheduler {dict(scheduler_config)!r}: {err}"
        ) from None
    return scheduler


def _ema_weights(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The averaged network's weights from an :class:`ExponentialMovingAverage` state dict."""
    return {k[len("averaged.") :]: v for k, v in state.items() if k.startswith("averaged.")}


def sample_checkpoint(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    num: int = 8,
    steps: int = 50,
    sampler: str = "ddim",
    seed: int = 0,
    device: str | torch.device | None = None,
    use_ema: bool = True,
    class_label: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int | None = None,
    progress: bool = False,
    config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Draw samples from a diffusion checkpoint and (with ``out_dir``) write them: one NIfTI per sample and a PNG montage.

    Args:
        checkpoint: a checkpoint of ``monai-diffusion train diffusion`` (or of a recipe given ``config=``), or a
            folder of them (the newest readable one).
        out_dir: where ``samples/sample_NNN.nii.gz`` (intensities in [0, 1]), ``montage.png`` (rows of up to 8; 3D:
            middle slice) and ``sampling.json`` (what was sampled how) go; ``None``: write nothing.
        num: number of samples.
        steps: sampler steps (network evaluations for first-order samplers).
        sampler: a key of :data:`SAMPLERS`.
        seed: seeds the initial noise and the sampler's random steps.
        device: ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
        use_ema: sample with the EMA weights when the checkpoint holds them (the trained weights otherwise).
        class_label: for a class-conditional network, the class to draw (default: the recorded ``sample_class``,
            1 = healthy for ``--class-conditional`` training).
        guidance_scale: classifier-free guidance scale for a class-conditional network trained with condition
            dropout (``None``/1: plain conditional sampling).
        batch_size: samples per network call (default: all at once).
        progress: a progress bar over the sampling steps.
        config: a configuration to use instead of the recorded one (needed for checkpoints that record none).

    Returns:
        ``{"images": (num, C, *spatial) tensor in [0, 1], "nifti": [paths], "montage": path or None,
        "checkpoint": path, "iteration": N, "weights": "ema" or "network"}``.

    Raises:
        FileNotFoundError: a missing checkpoint.
        ValueError: a checkpoint that cannot be sampled (see :func:`load_checkpoint_for_sampling`), bad counts, an
            unknown sampler, or conditioning options that do not fit the network.
    """
    from monai_diffusion.inferers import ClassifierFreeGuidance, DiffusionInferer, NullCondition
    from monai_diffusion.utils.devices import resolve_device
    from monai_diffusion.utils.image_io import save_nifti_images, write_montage_png

    for name, value in (("num", num), ("steps", steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}")
    dev = torch.device(resolve_device(None if device is None else str(device), "device"))
    path, ckpt, cfg = load_checkpoint_for_sampling(checkpoint, config)

    network = build_component(cfg["network"])
    weights = "ema" if use_ema and isinstance(ckpt.get("ema"), Mapping) else "network"
    state = _ema_weights(ckpt["ema"]) if weights == "ema" else ckpt["network"]
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the {weights} weights of {path} do not fit the recorded network: {err}") from None
    network = network.to(dev).eval()
    scheduler = sampler_from_config(cfg["scheduler"], sampler).to(dev)

    image = cfg.get("image", {})
    size = image.get("spatial_size")
    if not size:
        raise ValueError(f"the configuration of {path} has no image spatial_size to sample at")
    channels = int(image.get("channels", getattr(network, "in_channels", 1)))
    low, high = (float(v) for v in image.get("intensity_range", (-1.0, 1.0)))

    condition = cfg.get("condition")
    model: Any = network
    conditioning = None
    label = None
    if condition:
        label = int(condition.get("sample_class", 1)) if class_label is None else int(class_label)
        classes = int(condition["num_classes"])
        null = condition.get("null_class_label")
        real = classes - 1 if null == classes - 1 else classes
        if not 0 <= label < real:
            raise ValueError(f"class_label must lie in [0, {real - 1}] for this network, got {label}")
        conditioning = {"class_label": torch.full((num,), label, dtype=torch.long)}
        if guidance_scale is not None and guidance_scale != 1.0:
            if null is None:
                raise ValueError("guidance_scale needs a network trained with a null class (condition dropout)")
            model = ClassifierFreeGuidance(network, guidance_scale, NullCondition(class_label=int(null)))
    elif class_label is not None or guidance_scale not in (None, 1.0):
        raise ValueError(f"{path} holds an unconditional network: class_label and guidance_scale do not apply")

    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((num, channels, *size), generator=generator)
    inferer = DiffusionInferer(scheduler, condition_mode="class_label")
    parts = []
    step = batch_size or num
    with torch.no_grad():
        for start in range(0, num, step):
            batch_cond = None
            if conditioning is not None:
                batch_cond = {k: v[start : start + step].to(dev) for k, v in conditioning.items()}
            x = inferer.sample(
                noise[start : start + step].to(dev),
                model,
                scheduler,
                conditioning=batch_cond,
                num_inference_steps=steps,  # set_timesteps for every batch: multistep samplers keep state
                generator=generator,
                progress=progress,
            )
            assert isinstance(x, torch.Tensor)  # no intermediates were asked for
            parts.append(x.float().cpu())
    images = ((torch.cat(parts) - low) / (high - low)).clamp(0, 1)
    result: dict[str, Any] = {
        "images": images,
        "nifti": [],
        "montage": None,
        "checkpoint": str(path),
        "iteration": checkpoint_iteration(path),
        "weights": weights,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        names = [f"sample_{i:03d}.nii.gz" for i in range(num)]
        result["nifti"] = [str(p) for p in save_nifti_images(images, out / "samples", names)]
        columns = min(8, num)
        rows = [images[i : i + columns] for i in range(0, num, columns)]
        result["montage"] = str(write_montage_png(rows, out / "montage.png", columns))
        record = {k: v for k, v in result.items() if k != "images"}
        record.update(sampler=sampler, steps=steps, seed=seed, class_label=label, guidance_scale=guidance_scale)
        record["config"] = cfg
        (out / "sampling.json").write_text(json.dumps(record, indent=1) + "\n")
    return result
