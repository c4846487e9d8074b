"""``monai-diffusion sample``: draw samples from a checkpoint of ``monai-diffusion train diffusion``.

Subcommand module for :mod:`monai_diffusion.cli` (``add_arguments(parser)`` and ``run(args)``)::

    monai-diffusion sample --checkpoint runs/ddpm --out samples                 # newest checkpoint of the folder
    monai-diffusion sample --checkpoint runs/ddpm/checkpoint_final_iteration=2000.pt --out samples \\
        --num 16 --steps 25 --sampler dpm_solver --seed 1 --device cuda

Writes ``OUT/samples/sample_NNN.nii.gz`` (one per sample, 2D or 3D, intensities in [0, 1]), ``OUT/montage.png``
(3D: middle slice) and ``OUT/sampling.json``. The network and the forward process are rebuilt from the configuration
the training run recorded in the checkpoint; the EMA weights are used when present (``--no-ema``: the trained ones).
The same from Python: :func:`monai_diffusion.engines.sample_checkpoint`.
"""

from __future__ import annotations

import argparse

__all__ = ["SAMPLER_NAMES", "add_arguments", "run"]

#: the keys of :data:`monai_diffusion.engines.sampling.SAMPLERS` (repeated here so that ``--help`` imports no torch)
SAMPLER_NAMES: tuple[str, ...] = ("ddpm", "ddim", "dpm_solver", "unipc", "euler", "heun")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="a checkpoint file, or a folder (its newest checkpoint)")
    parser.add_argument("--out", required=True, help="output folder for the NIfTI files and the montage")
    parser.add_argument("--num", type=int, default=8, help="number of samples")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps")
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, default="ddim", help="the sampler (default ddim)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--no-ema", action="store_true", help="use the trained weights, not their EMA")
    parser.add_argument("--batch-size", type=int, default=None, help="samples per network call (default: all)")
    parser.add_argument("--class-label", type=int, default=None, help="class of a class-conditional network")
    parser.add_argument(
        "--guidance-scale", type=float, default=None, help="classifier-free guidance scale (class-conditional)"
    )


def run(args: argparse.Namespace) -> int:
    from monai_diffusion.utils.devices import resolve_device

    for name in ("num", "steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    device = resolve_device(args.device)

    from monai_diffusion.engines.sampling import sample_checkpoint

    result = sample_checkpoint(
        args.checkpoint,
        args.out,
        num=args.num,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        device=device,
        use_ema=not args.no_ema,
        class_label=args.class_label,
        guidance_scale=args.guidance_scale,
        batch_size=args.batch_size,
        progress=True,
    )
    print(
        f"{args.num} samples from {result['checkpoint']} (iteration {result['iteration']}, {result['weights']} "
        f"weights, {args.sampler} {args.steps} steps): {len(result['nifti'])} NIfTI files in "
        f"{args.out}/samples, montage {result['montage']}"
    )
    return 0
