"""x2 / x4 super-resolution of 64 x 64 brain slices with the healthy-brain prior, on the validation split.

Ground truth: the noiseless renderings (``<contrast>_clean``, [0, 1]) of validation slices of the embedded data set
(evenly spread over the list, all four contrasts); low resolution: box averaging over f x f blocks
(``SuperResolutionOperator``), optionally plus Gaussian noise. Methods (``monai_diffusion.apps.super_resolution``):

* diffusion posterior sampling with the prior of ``bundles/brain_prior`` (contrast as class label) through
  ``DiffusionInferer.sample(noise, method.bind(network, 2 y - 1), ...)``, our DDIM with ``--steps`` steps: DDNM
  (hard), Score-MRI-style hard data consistency on the noise-matched state (DC), DPS and MCG; ``eta`` 0 vs 1 is
  measured for DDNM and DC, the step size for DPS and MCG (run with ``eta`` 1, the ancestral sampling of their
  papers); then the mean of ``--samples`` samples (``eta`` 1) of the best;
* bicubic and bilinear interpolation, the operator's pinv (nearest upsampling);
* L1-wavelet least squares (FISTA, 200 iterations), ``lam`` chosen per factor.

Prints one table (PSNR / SSIM inside the brain, data residual, seconds per slice) and the chosen settings.

    OMP_NUM_THREADS=1 python benchmarks/super_resolution.py            # 3 positions x 4 contrasts, x2 and x4
    OMP_NUM_THREADS=1 python benchmarks/super_resolution.py --quick    # 1 position x 4 contrasts, small grids
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ETAS = (0.0, 1.0)
DPS_STEPS = (0.5, 1.0, 2.0)
MCG_STEPS = (0.5, 1.0)
LAMS = (1e-4, 3e-4, 1e-3, 3e-3)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 slice position x 4 contrasts, small grids")
    parser.add_argument(
        "--slices", type=int, default=None, help="validation slice positions, x4 contrasts (3; quick 1)"
    )
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4], help="downsampling factors (2 4)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps per sample")
    parser.add_argument("--samples", type=int, default=None, help="samples averaged for the best method (4)")
    parser.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std on the low-res image")
    parser.add_argument("--seed", type=int, default=0, help="noise and sampler seed")
    parser.add_argument("--bundle", default="bundles/brain_prior", help="the prior bundle's folder")
    parser.add_argument("--data", default="data", help="folder of the prepared embedded data set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="save all results as JSON here")
    args = parser.parse_args(argv)
    args.slices = args.slices or (1 if args.quick else 3)
    args.samples = args.samples or (2 if args.quick else 4)
    if args.steps < 1 or args.samples < 1 or args.slices < 1 or args.noise < 0 or min(args.factors) < 1:
        parser.error("steps, samples, slices and factors >= 1 and noise >= 0 are required")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)

    import torch

    from monai_diffusion.apps.generation import embedded_datalist
    from monai_diffusion.apps.generation.pipeline import format_table
    from monai_diffusion.apps.prior import load_prior
    from monai_diffusion.apps.super_resolution import (
        DiffusionSuperResolution,
        InterpolationSuperResolution,
        WaveletSuperResolution,
        degrade,
        load_super_resolution_data,
        super_resolution_items,
    )
    from monai_diffusion.metrics import masked_psnr, masked_ssim
    from monai_diffusion.operators import SuperResolutionOperator

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    t_all = time.perf_counter()
    prior = load_prior(args.bundle)
    datalist = embedded_datalist(args.data, 2, 64)
    items = super_resolution_items(datalist, "validation", list(prior.contrasts), 800, args.slices)
    data = load_super_resolution_data(items)
    clean, brain, contrast = data["clean"], data["brain"], data["contrast"]
    n = clean.shape[0]
    print(f"validation slices: {n} (contrast ids {contrast.tolist()}), factors {args.factors}, noise {args.noise}")

    candidates: dict[str, tuple[str, dict, object]] = {}  # key -> (family, settings, method)
    for eta in ETAS[-1:] if args.quick else ETAS:
        for m in ("ddnm", "dc"):
            candidates[f"{m} eta={eta:g}"] = (m, {"eta": eta}, DiffusionSuperResolution(prior, m, args.steps, eta))
    for s in DPS_STEPS[1:2] if args.quick else DPS_STEPS:
        candidates[f"dps step={s:g}"] = (
            "dps",
            {"step_size": s},
            DiffusionSuperResolution(prior, "dps", args.steps, 1.0, 1, s),
        )
    for s in MCG_STEPS[:1] if args.quick else MCG_STEPS:
        candidates[f"mcg step={s:g}"] = (
            "mcg",
            {"step_size": s},
            DiffusionSuperResolution(prior, "mcg", args.steps, 1.0, 1, s),
        )
    for mode in ("bicubic", "bilinear", "pinv"):
        candidates[mode] = (mode, {}, InterpolationSuperResolution(mode))
    for lam in LAMS[1:3] if args.quick else LAMS:
        candidates[f"l1-wavelet lam={lam:g}"] = ("l1-wavelet", {"lam": lam}, WaveletSuperResolution(lam))

    results: dict[str, dict[int, dict]] = {}

    def evaluate(key: str, method, factor: int, low_res, level: int) -> None:
        g = torch.Generator().manual_seed(args.seed + 100 + level)
        t0 = time.perf_counter()
        mean, std = method(low_res, factor, contrast, generator=g)
        wall = time.perf_counter() - t0
        op = SuperResolutionOperator(factor)
        res = (op.A(mean) - low_res).flatten(1).norm(dim=1) / low_res.flatten(1).norm(dim=1)
        c = mean.clamp(0, 1)
        results.setdefault(key, {})[factor] = {
            "psnr": float(masked_psnr(c, clean, brain, 1.0).mean()),
            "ssim": float(masked_ssim(c, clean, brain, 1.0).mean()),
            "residual": float(res.mean()),
            "s_per_slice": wall / n,
            "mean_std_brain": None if std is None else float((std * brain).sum() / brain.sum()),
        }
        _log(f"{key} x{factor}: {results[key][factor]}")

    lows = {
        f: degrade(clean, f, args.noise, torch.Generator().manual_seed(args.seed + i))
        for i, f in enumerate(args.factors)
    }
    for key, (_, _, method) in candidates.items():
        for i, f in enumerate(args.factors):
            evaluate(key, method, f, lows[f], i)

    def mean_psnr(key: str) -> float:
        return sum(results[key][f]["psnr"] for f in args.factors) / len(args.factors)

    chosen: dict[str, str] = {}
    for family in ("ddnm", "dc", "dps", "mcg"):
        keys = [k for k, (fam, _, _) in candidates.items() if fam == family]
        chosen[family] = max(keys, key=mean_psnr)
    lam_keys = [k for k, (fam, _, _) in candidates.items() if fam == "l1-wavelet"]
    chosen_lam = {f: candidates[max(lam_keys, key=lambda k: results[k][f]["psnr"])][1]["lam"] for f in args.factors}
    best = max(chosen.values(), key=mean_psnr)
    fam, settings, _ = candidates[best]
    mean_key = f"{fam} mean of {args.samples} (eta=1)"
    method = DiffusionSuperResolution(prior, fam, args.steps, 1.0, args.samples, settings.get("step_size", 1.0))
    for i, f in enumerate(args.factors):
        evaluate(mean_key, method, f, lows[f], i)

    columns = ["method / setting"] + [f"x{f} PSNR / SSIM / resid / s" for f in args.factors]
    rows = []
    for key, per in results.items():
        rows.append(
            [key]
            + [
                f"{per[f]['psnr']:.2f} / {per[f]['ssim']:.3f} / {per[f]['residual']:.1e} / {per[f]['s_per_slice']:.2f}"
                for f in args.factors
            ]
        )
    print(format_table(columns, rows))
    print(f"chosen per family (mean PSNR over factors): {chosen}")
    print(f"best single-sample diffusion setting: {best}; L1-wavelet lam per factor: {chosen_lam}")
    print(f"total wall time: {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, "chosen": chosen, "lam": chosen_lam, "best": best}, fh, indent=2)


if __name__ == "__main__":
    main()
