"""``monai-diffusion data ...``: build and preview the embedded data set from the command line."""

from __future__ import annotations

import argparse
import sys

_CONTRASTS = ("t1w", "t2w", "pd", "flair")  # kept here so that --help does not import the simulator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``prepare`` sub-subcommand to the ``data`` parser."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION")
    prep = sub.add_parser(
        "prepare",
        help="render the synthetic brain MRI data set (NIfTI + datalist.json)",
        description="Render the synthetic multi-contrast brain MRI data set into --out: NIfTI files and a MONAI "
        "datalist.json with training/validation/test sections. Offline and deterministic. Re-running checks the "
        "folder (file sizes; with --verify also sha256) and rebuilds only what is missing or differs; an "
        "interrupted build leaves no datalist.json.",
    )
    prep.add_argument("--out", required=True, help="output folder (created if needed)")
    prep.add_argument("--dim", type=int, default=2, choices=(2, 3), help="2: axial slices, 3: volumes (default 2)")
    prep.add_argument("--size", type=int, default=None, help="voxels per side (default 64 in 2D, 32 in 3D)")
    prep.add_argument("--subjects", type=int, default=None, help="number of synthetic subjects (default 40)")
    prep.add_argument("--seed", type=int, default=0, help="data-set seed (default 0)")
    prep.add_argument(
        "--contrasts",
        nargs="+",
        default=list(_CONTRASTS),
        metavar="NAME",
        help=f"contrasts to render, from {', '.join(_CONTRASTS)} (default all)",
    )
    prep.add_argument("--preview", action="store_true", help="also write OUT/preview.png (needs matplotlib)")
    prep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    prep.add_argument(
        "--verify",
        action="store_true",
        help="check the sha256 of every file against its record, not only its size, and rebuild what differs",
    )
    prep.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a datalist.json (and, with --preview, a preview.png) in OUT that this command did not write",
    )


def run(args: argparse.Namespace) -> int:
    """Run the selected action; returns the exit status."""
    if getattr(args, "data_command", None) != "prepare":
        print("usage: monai-diffusion data prepare --out DIR [options]  (see --help)", file=sys.stderr)
        return 2
    import logging

    from monai_diffusion.data.brain_sim import logger, prepare_dataset

    # what the build did (subjects rebuilt, files found damaged) goes to stderr
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("monai-diffusion data: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        path = prepare_dataset(
            args.out,
            dim=args.dim,
            size=args.size,
            subjects=args.subjects,
            seed=args.seed,
            contrasts=args.contrasts,
            preview=args.preview,
            progress=not args.no_progress,
            verify=args.verify,
            overwrite=args.overwrite,
        )
    except ImportError as err:
        print(f"monai-diffusion data: error: {err}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    import json

    datalist = json.loads(path.read_text())
    counts = ", ".join(f"{s}: {len(datalist[s])}" for s in ("training", "validation", "test"))
    print(f"datalist: {path} ({counts} items)")
    if args.preview:
        print(f"preview: {path.parent / 'preview.png'}")
    return 0
