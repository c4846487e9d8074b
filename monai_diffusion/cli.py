"""The ``monai-diffusion`` command line.

Each area of the package contributes one subcommand through a module that defines
``add_arguments(parser)`` and ``run(args) -> int``. Subcommands are imported lazily so that
``monai-diffusion --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand name -> (module path, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("monai_diffusion.data.cli", "prepare and preview the embedded offline brain MRI data set"),
    "train": (
        "monai_diffusion.engines.cli",
        "train diffusion models and autoencoders on the embedded data or your own images (resumable)",
    ),
    "sample": ("monai_diffusion.engines.sample_cli", "draw samples (NIfTI + PNG montage) from a training checkpoint"),
    "bundle": ("monai_diffusion.bundle.cli", "list, run, train, evaluate and verify the MONAI bundles in bundles/"),
    "report": ("monai_diffusion.bundle.report", "evaluate every bundle against its baselines into a static HTML page"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported to add its arguments (all of them when ``None``), so that
    ``monai-diffusion --help`` does not import torch and MONAI."""
    parser = argparse.ArgumentParser(prog="monai-diffusion", description="Diffusion models for medical imaging.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or command == name:
            importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), "")
    parser = build_parser(chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (ValueError, TypeError, OSError) as err:
        print(f"monai-diffusion {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
