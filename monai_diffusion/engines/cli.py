"""``monai-diffusion train``: run the training recipes on the embedded data set (or resume them).

Subcommand module for :mod:`monai_diffusion.cli` (``add_arguments(parser)`` and ``run(args)``)::

    monai-diffusion train diffusion --data data --out runs/ddpm --dim 2 --size 32 --epochs 10
    monai-diffusion train autoencoder --data data --out runs/ae --kind kl --epochs 10 --device cuda

Rerunning the same command after an interruption resumes from the newest checkpoint in ``--out``. The networks are
small MONAI presets suited to the embedded data; use the Python recipes for other architectures.
"""

from __future__ import annotations

import argparse

import torch

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=("diffusion", "autoencoder"), help="which recipe to run")
    parser.add_argument("--data", required=True, help="folder of prepared data sets (built on first use)")
    parser.add_argument("--out", required=True, help="checkpoint folder (resumed when it holds checkpoints)")
    parser.add_argument("--dim", type=int, default=2, choices=(2, 3), help="2D slices or 3D volumes")
    parser.add_argument("--size", type=int, default=32, help="voxels per side")
    parser.add_argument("--subjects", type=int, default=None, help="number of synthetic subjects")
    parser.add_argument("--contrast", default="t1w", help="image contrast to train on")
    parser.add_argument("--epochs", type=int, default=10, help="total epochs (counting resumed ones)")
    parser.add_argument("--epoch-length", type=int, default=None, help="iterations per epoch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--save-interval", type=int, default=100, help="iterations between checkpoints")
    parser.add_argument("--kind", choices=("kl", "vq"), default="kl", help="autoencoder type")
    parser.add_argument("--class-conditional", action="store_true", help="diffusion: condition on 'healthy'")
    parser.add_argument("--seed", type=int, default=0)


def _check(args: argparse.Namespace) -> None:
    for name in ("size", "epochs", "batch_size", "save_interval"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.size % 4:
        raise ValueError(f"--size must be a multiple of 4 for the preset networks, got {args.size}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if args.epoch_length is not None and args.epoch_length < 1:
        raise ValueError(f"--epoch-length must be >= 1, got {args.epoch_length}")
    from monai_diffusion.utils.devices import resolve_device

    args.device = resolve_device(args.device)


def run(args: argparse.Namespace) -> int:
    from monai.networks.nets import VQVAE, AutoencoderKL, DiffusionModelUNet, PatchDiscriminator

    from monai_diffusion.engines.handlers import ProgressBar
    from monai_diffusion.engines.recipes import autoencoder_trainer, brainsim_loader, diffusion_trainer
    from monai_diffusion.inferers.conditioning import NullCondition
    from monai_diffusion.networks.schedulers import DDPMScheduler

    _check(args)
    torch.manual_seed(args.seed)
    loader = brainsim_loader(
        args.data,
        keys=(args.contrast,),
        dim=args.dim,
        size=args.size,
        subjects=args.subjects,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    if args.what == "diffusion":
        unet = DiffusionModelUNet(
            spatial_dims=args.dim,
            in_channels=1,
            out_channels=1,
            channels=(32, 64, 64),
            attention_levels=(False, False, True),
            num_res_blocks=1,
            num_head_channels=32,
            num_class_embeds=3 if args.class_conditional else None,
        )
        trainer, _ = diffusion_trainer(
            unet,
            DDPMScheduler(1000),
            loader,
            max_epochs=args.epochs,
            device=args.device,
            lr=args.lr,
            epoch_length=args.epoch_length,
            image_key=args.contrast,
            condition={"class_label": "healthy"} if args.class_conditional else None,
            condition_mode="class_label",
            null_condition=NullCondition(class_label=2) if args.class_conditional else None,
            condition_dropout=0.1 if args.class_conditional else 0.0,
            checkpoint_dir=args.out,
            save_interval=args.save_interval,
            seed=args.seed,
            train_handlers=[ProgressBar(desc="diffusion")],
        )
    else:
        ae: torch.nn.Module
        if args.kind == "kl":
            ae = AutoencoderKL(
                spatial_dims=args.dim,
                in_channels=1,
                out_channels=1,
                channels=(32, 64),
                latent_channels=3,
                num_res_blocks=1,
                attention_levels=(False, False),
            )
        else:
            ae = VQVAE(
                spatial_dims=args.dim,
                in_channels=1,
                out_channels=1,
                channels=(32, 64),
                num_res_channels=(32, 64),
                num_res_layers=1,
                downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)),
                upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
                num_embeddings=64,
                embedding_dim=3,
            )
        trainer = autoencoder_trainer(
            ae,
            loader,
            max_epochs=args.epochs,
            discriminator=PatchDiscriminator(spatial_dims=args.dim, channels=32, in_channels=1, num_layers_d=2),
            device=args.device,
            lr=args.lr,
            epoch_length=args.epoch_length,
            image_key=args.contrast,
            checkpoint_dir=args.out,
            save_interval=args.save_interval,
            train_handlers=[ProgressBar(desc="autoencoder")],
        )
    trainer.run()
    print(f"trained to iteration {trainer.state.iteration}; checkpoints in {args.out}")
    return 0
