"""``monai-diffusion train``: run the training recipes on the embedded data set or on your own images (or resume them).

Subcommand module for :mod:`monai_diffusion.cli` (``add_arguments(parser)`` and ``run(args)``)::

    monai-diffusion train diffusion --data data --out runs/ddpm --dim 2 --size 32 --epochs 10
    monai-diffusion train diffusion --data data/brainsim2d --out runs/ddpm      # a folder `data prepare` wrote
    monai-diffusion train diffusion --datalist my_images.json --out runs/mine --size 64
    monai-diffusion train autoencoder --data data --out runs/ae --kind kl --epochs 10 --device cuda

``--data`` is either a folder of prepared data sets (the embedded data set is built there on first use, in a
sub-folder named after ``--dim``/``--size``) or one prepared data set (a folder holding the ``datalist.json`` that
``monai-diffusion data prepare`` writes), which is used as it is. ``--datalist`` is a MONAI datalist JSON of your own
NIfTI or DICOM images (``{"training": [{"image": "a.nii.gz"}, ...]}``), read by the same MONAI ``LoadImaged`` chain as
the embedded data and resampled to ``--size``. Rerunning the same command after an interruption resumes from the
newest checkpoint in ``--out``. Every checkpoint records the network's and the scheduler's constructor arguments, so
``monai-diffusion sample --checkpoint OUT`` rebuilds the network without further arguments. The networks are small
MONAI presets suited to the embedded data; use the Python recipes for other architectures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run", "run_config"]

#: file name of the datalist in a prepared folder of the embedded data set
_DATALIST = "datalist.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("diffusion", "autoencoder"), help="which recipe to run")
    source = parser.add_argument_group("data (give one)")
    source.add_argument(
        "--data", default=None, help="folder of prepared data sets (built on first use), or one prepared data set"
    )
    source.add_argument("--datalist", default=None, help="MONAI datalist JSON of your own NIfTI/DICOM images")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumed when it holds checkpoints)")
    parser.add_argument("--dim", type=int, default=None, choices=(2, 3), help="2D slices or 3D volumes (default 2)")
    parser.add_argument(
        "--size", type=int, default=None, help="voxels per side (default 32; a prepared folder: its own size)"
    )
    parser.add_argument("--subjects", type=int, default=None, help="number of synthetic subjects (embedded data)")
    parser.add_argument("--contrast", default="t1w", help="image contrast to train on (embedded data)")
    parser.add_argument("--image-key", default="image", help="datalist key of the image paths (--datalist)")
    parser.add_argument("--reader", default=None, help="force a MONAI image reader (--datalist), e.g. PydicomReader")
    parser.add_argument("--epochs", type=int, default=10, help="total epochs (counting resumed ones)")
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--save-interval", type=int, default=100, help="iterations between checkpoints")
    parser.add_argument("--kind", choices=("kl", "vq"), default="kl", help="autoencoder type")
    parser.add_argument("--class-conditional", action="store_true", help="diffusion: condition on 'healthy'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default=None,
        help="diffusion: bfloat16 autocast (default; trains as well as float32 and 1.2-1.8x faster per iteration on "
        "CPU, docs/bundles.md) or float32; autoencoder: float32 only",
    )


def _check_writable(out: str) -> None:
    """Create ``out`` and write a probe file in it, so that a read-only folder is reported before any data work."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"--out {out!r} cannot be written: {err.strerror or err}") from None


def _prepared_config(datalist: Path) -> dict[str, Any] | None:
    """The build configuration of an embedded-data datalist (``None`` for any other datalist)."""
    try:
        header = json.loads(datalist.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the datalist {str(datalist)!r}: {err}") from None
    if isinstance(header, dict) and header.get("name") == "BrainSim" and isinstance(header.get("config"), dict):
        return dict(header["config"])
    return None


def _data_source(args: argparse.Namespace) -> dict[str, Any]:
    """Where the images come from: ``{"kind": "embedded" | "prepared" | "datalist", "datalist", "key", "dim",
    "size"}``, with ``--dim``/``--size`` resolved and checked against a prepared folder."""
    if (args.data is None) == (args.datalist is None):
        raise ValueError("give the training images with exactly one of --data (embedded data) and --datalist")
    if args.datalist is not None:
        datalist = Path(args.datalist)
        if not datalist.is_file():
            raise FileNotFoundError(f"--datalist {args.datalist!r} not found")
    else:
        datalist = Path(args.data) / _DATALIST
        if not datalist.is_file():
            if args.data and Path(args.data).is_file():
                raise ValueError(f"--data {args.data!r} is a file; give a folder, or a datalist with --datalist")
            dim = args.dim or 2
            return {"kind": "embedded", "datalist": None, "key": args.contrast, "dim": dim, "size": args.size or 32}
    prepared = _prepared_config(datalist)
    if prepared is None:
        if args.datalist is None:
            raise ValueError(
                f"--data {args.data!r} holds a {_DATALIST} that `monai-diffusion data prepare` did not write; pass it "
                f"with --datalist {datalist} to train on its images"
            )
        if args.subjects is not None:
            raise ValueError("--subjects applies to the embedded data set, not to --datalist")
        return {
            "kind": "datalist",
            "datalist": datalist,
            "key": args.image_key,
            "dim": args.dim or 2,
            "size": args.size or 32,
        }
    # a prepared folder of the embedded data: its own dimensions and size
    for option, given, own in (("--dim", args.dim, prepared.get("dim")), ("--size", args.size, prepared.get("size"))):
        if given is not None and given != own:
            raise ValueError(
                f"{option} {given} differs from the prepared data in {str(datalist.parent)!r} ({option} {own}); "
                f"leave {option} out, or give a folder of data sets with --data to build one of that size"
            )
    if args.subjects is not None and args.subjects != prepared.get("subjects"):
        raise ValueError(
            f"--subjects {args.subjects} differs from the prepared data in {str(datalist.parent)!r} "
            f"({prepared.get('subjects')} subjects)"
        )
    contrasts = prepared.get("contrasts", [])
    if args.contrast not in contrasts:
        raise ValueError(f"--contrast {args.contrast!r} is not in the prepared data (contrasts {contrasts})")
    return {
        "kind": "prepared",
        "datalist": datalist,
        "key": args.contrast,
        "dim": int(prepared["dim"]),
        "size": int(prepared["size"]),
    }


def _check(args: argparse.Namespace) -> dict[str, Any]:
    if args.what == "autoencoder" and getattr(args, "precision", None) == "bf16":
        raise ValueError("--precision bf16 is for the diffusion recipe; the autoencoder recipe trains in float32")
    for name in ("epochs", "batch_size", "save_interval"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be >= 1, got {args.size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.epoch_length is not None and args.epoch_length < 1:
        raise ValueError(f"--epoch-length must be >= 1, got {args.epoch_length}")
    from monai_diffusion.utils.devices import resolve_device

    args.device = resolve_device(args.device)
    source = _data_source(args)
    if source["size"] % 4:
        raise ValueError(f"--size must be a multiple of 4 for the preset networks, got {source['size']}")
    return source


def run_config(args: argparse.Namespace, source: dict[str, Any]) -> dict[str, Any]:
    """What the checkpoints record: the network's (and scheduler's) constructor arguments in MONAI bundle syntax,
    the image shape and intensity range, the conditioning and the command's arguments."""
    dim, size = source["dim"], source["size"]
    config: dict[str, Any] = {
        "kind": args.what,
        "written_by": f"monai-diffusion train {args.what}",
        "arguments": {
            k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
            for k, v in vars(args).items()
            if not k.startswith("_")
        },
        "data": {"source": source["kind"], "datalist": None if source["datalist"] is None else str(source["datalist"])},
        "image": {"key": source["key"], "spatial_size": [size] * dim, "channels": 1, "intensity_range": [-1.0, 1.0]},
    }
    if args.what == "diffusion":
        config["network"] = {
            "_target_": "monai.networks.nets.DiffusionModelUNet",
            "spatial_dims": dim,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [32, 64, 64],
            "attention_levels": [False, False, True],
            "num_res_blocks": 1,
            "num_head_channels": 32,
            "num_class_embeds": 3 if args.class_conditional else None,
        }
        config["scheduler"] = {
            "_target_": "monai_diffusion.networks.schedulers.DDPMScheduler",
            "num_train_timesteps": 1000,
            "schedule": "linear_beta",
            "prediction_type": "epsilon",
        }
        if args.class_conditional:
            # 0 = lesion, 1 = healthy, 2 = the null class of condition dropout (classifier-free guidance)
            config["condition"] = {
                "class_label": "healthy",
                "num_classes": 3,
                "null_class_label": 2,
                "dropout": 0.1,
                "sample_class": 1,
            }
    elif args.kind == "kl":
        config["network"] = {
            "_target_": "monai.networks.nets.AutoencoderKL",
            "spatial_dims": dim,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [32, 64],
            "latent_channels": 3,
            "num_res_blocks": 1,
            "attention_levels": [False, False],
        }
    else:
        config["network"] = {
            "_target_": "monai.networks.nets.VQVAE",
            "spatial_dims": dim,
            "in_channels": 1,
            "out_channels": 1,
            "channels": [32, 64],
            "num_res_channels": [32, 64],
            "num_res_layers": 1,
            "downsample_parameters": [[2, 4, 1, 1], [2, 4, 1, 1]],
            "upsample_parameters": [[2, 4, 1, 1, 0], [2, 4, 1, 1, 0]],
            "num_embeddings": 64,
            "embedding_dim": 3,
        }
    return config


def _loader(args: argparse.Namespace, source: dict[str, Any]):
    from monai_diffusion.engines.recipes import brainsim_loader, datalist_loader

    if source["kind"] == "embedded":
        return brainsim_loader(
            args.data,
            keys=(source["key"],),
            dim=source["dim"],
            size=source["size"],
            subjects=args.subjects,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=True,
        )
    if args.class_conditional and source["kind"] == "datalist":
        from monai_diffusion.data import load_datalist

        if any("healthy" not in item for item in load_datalist(source["datalist"], "training")):
            raise ValueError("--class-conditional needs a 'healthy' entry (0 or 1) in every datalist item")
    return datalist_loader(
        source["datalist"],
        keys=(source["key"],),
        dim=source["dim"],
        size=source["size"] if source["kind"] == "datalist" else None,
        batch_size=args.batch_size,
        seed=args.seed,
        reader=args.reader,
        progress=True,
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from monai.networks.nets import PatchDiscriminator

    from monai_diffusion.engines.checkpoints import build_component, check_resume_config
    from monai_diffusion.engines.handlers import ProgressBar
    from monai_diffusion.engines.recipes import autoencoder_trainer, diffusion_trainer, latest_checkpoint
    from monai_diffusion.inferers.conditioning import NullCondition

    source = _check(args)
    _check_writable(args.out)
    config = run_config(args, source)
    previous = latest_checkpoint(args.out)
    if previous is not None:
        check_resume_config(previous, config)  # before the data are built
    torch.manual_seed(args.seed)
    network = build_component(config["network"])
    loader = _loader(args, source)
    common: dict[str, Any] = {
        "max_epochs": args.epochs,
        "device": args.device,
        "lr": args.lr,
        "epoch_length": args.epoch_length,
        "image_key": source["key"],
        "checkpoint_dir": args.out,
        "save_interval": args.save_interval,
        "config": config,
    }
    if args.what == "diffusion":
        conditional = bool(args.class_conditional)
        trainer, _ = diffusion_trainer(
            network,
            build_component(config["scheduler"]),
            loader,
            condition={"class_label": "healthy"} if conditional else None,
            condition_mode="class_label",
            null_condition=NullCondition(class_label=2) if conditional else None,
            condition_dropout=0.1 if conditional else 0.0,
            seed=args.seed,
            amp_dtype=None if args.precision == "fp32" else "bfloat16",
            **common,
        )
    else:
        discriminator = PatchDiscriminator(spatial_dims=source["dim"], channels=32, in_channels=1, num_layers_d=2)
        trainer = autoencoder_trainer(network, loader, discriminator=discriminator, **common)
    # attached last, so that the checkpoint saver sees an exception before the bar's handler re-raises it
    bar = ProgressBar(desc=args.what)
    bar.attach(trainer)
    try:
        trainer.run()
    except KeyboardInterrupt:
        bar.close()
        last = latest_checkpoint(args.out)
        where = f"the newest checkpoint is {last.resolve()}" if last is not None else "no checkpoint was written"
        print(f"\ninterrupted at iteration {trainer.state.iteration}; {where}; rerun the command to resume")
        return 130
    finally:
        bar.close()
    last = latest_checkpoint(args.out)
    print(f"trained to iteration {trainer.state.iteration}; checkpoints in {Path(args.out).resolve()}")
    if last is not None:
        print(f"newest checkpoint: {last.resolve()}")
        if args.what == "diffusion":
            print(f"draw samples: monai-diffusion sample --checkpoint {last.resolve()} --out samples")
    return 0
