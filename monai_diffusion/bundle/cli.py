"""``monai-diffusion bundle list|run|train|evaluate|verify NAME``: a thin layer over ``monai.bundle``.

    monai-diffusion bundle list
    monai-diffusion bundle run brain_generation --quick --output-dir out/gen
    monai-diffusion bundle evaluate brain_generation --quick --json out/gen_eval.json
    monai-diffusion bundle train brain_generation --set diffusion_iterations=20000
    monai-diffusion bundle verify brain_generation

``--set id=value`` overrides any config id (the value is read as JSON when it parses, else as a string), exactly as
``python -m monai.bundle run ... --id value`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_arguments", "run", "parse_overrides"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "run", "train", "evaluate", "verify"), help="what to do")
    parser.add_argument("name", nargs="?", help="bundle name (a folder of bundles/) or path")
    parser.add_argument("--quick", action="store_true", help="the bundle's quick setting (configs/quick.json)")
    parser.add_argument("--output-dir", default=None, help="overrides the config id output_dir")
    parser.add_argument("--dataset-dir", default=None, help="overrides the config id dataset_dir (embedded data)")
    parser.add_argument("--datalist", default=None, help="a datalist JSON of your own NIfTI/DICOM data")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available)")
    parser.add_argument("--json", default=None, help="evaluate: also write the metrics to this JSON file")
    parser.add_argument("--multi-gpu", action="store_true", help="train: use multi_gpu_train.json (run under torchrun)")
    parser.add_argument("--set", action="append", default=[], metavar="ID=VALUE", help="override a config id")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (JSON values where they parse).

    Raises:
        ValueError: an item without ``=``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects ID=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from monai_diffusion.bundle import runner
    from monai_diffusion.utils.devices import resolve_device

    if args.action == "list":
        rows = runner.list_bundles()
        if not rows:
            print(f"no bundles in {runner.bundles_dir()}")
        for b in rows:
            weights = "weights present" if b["weights"] else "NO WEIGHTS"
            print(f"{b['name']:<24} v{b['version']:<8} {str(b['category']):<14} {weights:<16} {b['task']}")
        return 0
    if not args.name:
        raise ValueError(f"`bundle {args.action}` needs a bundle name; see `monai-diffusion bundle list`")
    if args.device is not None:
        resolve_device(args.device)
    overrides = parse_overrides(args.set)
    for key in ("output_dir", "dataset_dir", "datalist"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    if args.device is not None:
        overrides["device"] = f"$torch.device({args.device!r})"
    if args.action == "verify":
        result = runner.verify_bundle(args.name, device=args.device or "cpu")
        print(f"bundle {result['bundle']}: verified ({', '.join(result['checked'])})")
        return 0
    kind = {"run": "inference", "evaluate": "evaluate", "train": "multi_gpu_train" if args.multi_gpu else "train"}
    result = runner.run_bundle(args.name, kind[args.action], quick=args.quick, overrides=overrides)
    if args.json is not None and "metrics" in result:
        from pathlib import Path

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result["metrics"], indent=2) + "\n")
    where = result.get("output_dir", "(see the config's output ids)")
    extra = " and metrics.json" if "metrics" in result else ""
    print(f"bundle {result['bundle']} {args.action}: done in {result['wall_s']:.0f} s; outputs{extra} in {where}")
    sys.stdout.flush()
    return 0
