"""Train the feature network of ``monai_diffusion.metrics`` (``BrainFeatureNet``) and report its validation figures.

Trains on the training split of the embedded 2D data set (64 x 64 slices, items with >= 800 brain pixels, all four
contrasts) with MONAI's ``SupervisedTrainer`` (``monai_diffusion.metrics.train_feature_network``), saves the weights,
and prints contrast accuracy and tissue-fraction MAE on the validation (and test) split, the wall time, the
hardware and the sha256 of the weights: the figures of ``docs/feature_network.md``. The shipped weights were made
with the defaults below, on one thread (``OMP_NUM_THREADS=1``).

Usage::

    python3 -c "from monai_diffusion.data import prepare_dataset; prepare_dataset('data/brainsim2d', 2, 64, None, 0)"
    OMP_NUM_THREADS=1 python3 benchmarks/feature_network.py --data data/brainsim2d \\
        --out monai_diffusion/metrics/assets/brain_features_2d.pt --json feature_network.json
    python3 benchmarks/feature_network.py --evaluate-only --reference --data data/brainsim2d   # the shipped weights
"""

from __future__ import annotations

# ruff: noqa: E402 (the heavy imports follow the argument parsing)
import argparse
import hashlib
import json
import os
import platform
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/brainsim2d", help="folder with datalist.json of the 2D 64 px set")
    parser.add_argument("--out", default="feature_network.pt", help="where to save the trained weights")
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate-only", action="store_true", help="evaluate the shipped weights, do not train")
    parser.add_argument("--reference", action="store_true", help="also print FID/KID of real and corrupted sets")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the shipped weights: 1)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and usage errors answer here, before torch and MONAI are imported (seconds)

import monai
import torch

from monai_diffusion.metrics.features import (
    DEFAULT_WEIGHTS,
    evaluate_feature_network,
    extract_features,
    load_feature_network,
    load_feature_set,
    train_feature_network,
)
from monai_diffusion.metrics.generative import frechet_distance, kernel_inception_distance


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def reference_distances(data_dir: str, seed: int = 0) -> list[dict]:
    """FID and KID between real sets and corrupted copies, to read feature distances against.

    Real vs real: validation vs test split (different subjects), all contrasts pooled and T1w alone. Then the
    validation split against corrupted test images (intensities in [0, 1] before the ``2 x - 1`` scaling):
    Gaussian noise inside the brain, a 3 x 3 box blur, and another contrast (T1w vs FLAIR). Every pair compares
    different subjects (a set against a corrupted copy of itself is a paired comparison, where KID goes negative).
    """
    val, test = load_feature_set(data_dir, "validation"), load_feature_set(data_dir, "test")
    net = load_feature_network()
    g = torch.Generator().manual_seed(seed)

    def feats(x: torch.Tensor) -> torch.Tensor:
        return extract_features(2 * x.clamp(0, 1) - 1, net)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    f_val, f_test = feats(val["image"]), feats(test["image"])
    t1_val, t1_test = val["contrast"] == 0, test["contrast"] == 0
    flair_test = test["contrast"] == 3
    brain = test["image"] > 0
    noisy = {s: test["image"] + s * torch.randn(test["image"].shape, generator=g) * brain for s in (0.02, 0.05, 0.1)}
    rows = [
        ("validation vs test (all contrasts)", f_val, f_test),
        ("validation vs test (T1w)", f_val[t1_val], f_test[t1_test]),
        ("validation vs test + noise 0.02", f_val, feats(noisy[0.02])),
        ("validation vs test + noise 0.05", f_val, feats(noisy[0.05])),
        ("validation vs test + noise 0.1", f_val, feats(noisy[0.1])),
        ("validation vs test blurred 3x3", f_val, feats(blur(test["image"]))),
        ("validation T1w vs test FLAIR", f_val[t1_val], f_test[flair_test]),
    ]
    out = []
    for name, a, b in rows:
        kid, kid_std = kernel_inception_distance(a, b, subsets=100, generator=torch.Generator().manual_seed(seed))
        out.append({"pair": name, "n": [len(a), len(b)], "fid": frechet_distance(a, b), "kid": kid, "kid_std": kid_std})
    return out


def main(args: argparse.Namespace | None = None) -> None:
    args = parse_args() if args is None else args
    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}", flush=True)
    if args.evaluate_only:
        weights = DEFAULT_WEIGHTS
        result: dict = {
            "validation": evaluate_feature_network(load_feature_network(), load_feature_set(args.data, "validation"))
        }
    else:
        result = {
            "validation": train_feature_network(
                args.data,
                args.out,
                iterations=args.iterations,
                batch_size=args.batch_size,
                seed=args.seed,
                progress=True,
            )
        }
        weights = Path(args.out)
    result["test"] = evaluate_feature_network(load_feature_network(weights), load_feature_set(args.data, "test"))
    result["setup"] = {
        "weights": str(weights),
        "sha256": sha256(weights),
        "bytes": os.path.getsize(weights),
        "threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }
    print(f"{'split':<12}{'accuracy':>10}{'tissue MAE':>12}  per contrast")
    for split in ("validation", "test"):
        r = result[split]
        per = " ".join(f"{k}={v:.3f}" for k, v in r["accuracy_per_contrast"].items())
        print(f"{split:<12}{r['contrast_accuracy']:>10.4f}{r['tissue_mae']:>12.4f}  {per}")
    if "train_seconds" in result["validation"]:
        print(f"trained {args.iterations} iterations in {result['validation']['train_seconds']:.0f} s")
    print(json.dumps(result["setup"], indent=1))
    if args.reference:
        result["reference"] = reference_distances(args.data, args.seed)
        print(f"{'pair (shipped network)':<40}{'n':>12}{'FID':>10}{'KID':>10}{'KID std':>10}")
        for r in result["reference"]:
            n = "/".join(str(v) for v in r["n"])
            print(f"{r['pair']:<40}{n:>12}{r['fid']:>10.4f}{r['kid']:>10.5f}{r['kid_std']:>10.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main(ARGS)
