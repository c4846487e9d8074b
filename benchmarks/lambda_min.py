"""The ``lambda_min`` default of the log-SNR grid, measured with a trained network (the ``brain_prior`` bundle).

A trained network has no exact answer, but every deterministic sampler integrates the same probability-flow ODE,
so its error at a few evaluations is its distance to a converged solution of that ODE from the same initial noise.
The script draws ``--samples`` noise images (seeded; contrasts in turn), integrates them once with many steps
(DPM-Solver++ 2M on the full log-SNR grid, ``--reference-steps``; a second run with half as many steps estimates the
reference's own error), and then runs each fast sampler (DPM-Solver++ and UniPC with their defaults,
``timestep_spacing="log_snr"``) for each ``lambda_min`` at 10 and 20 NFE, reporting the RMSE to the reference and
the PSNR (data range 2: the prior's images are in [-1, 1]). With ``--heun`` it also measures ``HeunKarrasScheduler``
on its grids at 9, 19 and 39 NFE. Without ``--clip-sample`` no sampler clips or thresholds (the pure ODE); with it
every sampler, the reference included, clips its x0 predictions to [-1, 1] as the bundle's DDIM sampler does.

Usage::

    python benchmarks/lambda_min.py                      # 32 samples, reference 300 steps, 1 thread (minutes)
    python benchmarks/lambda_min.py --samples 8 --reference-steps 100 --lambda-min none -3   # a quick look
    python benchmarks/lambda_min.py --cache ref.pt --json out.json --heun
"""

from __future__ import annotations

import argparse
import json
import platform
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="bundles/brain_prior", help="the prior bundle's folder")
    parser.add_argument("--samples", type=int, default=32, help="number of samples (contrasts in turn)")
    parser.add_argument("--batch", type=int, default=32, help="batch size of the network calls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise")
    parser.add_argument("--reference-steps", type=int, default=300, help="steps of the reference run")
    parser.add_argument("--nfe", type=int, nargs="+", default=[10, 20], help="budgets of the fast samplers")
    parser.add_argument(
        "--lambda-min",
        nargs="+",
        default=["none", "-5", "-4", "-3", "-2", "-1"],
        help="lambda_min values to compare ('none': the schedule's own grid)",
    )
    parser.add_argument("--heun", action="store_true", help="also measure HeunKarrasScheduler's grids")
    parser.add_argument(
        "--clip-sample", action="store_true", help="clip every predicted x0 to [-1, 1] (the bundle's DDIM setting)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    parser.add_argument("--cache", default=None, help="load the reference from / save it to this .pt file")
    parser.add_argument("--json", default=None, help="write the results to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import os

    import torch

    from monai_diffusion.apps.prior import load_prior
    from monai_diffusion.networks.schedulers import (
        DPMSolverMultistepScheduler,
        HeunKarrasScheduler,
        UniPCMultistepScheduler,
    )

    torch.set_num_threads(args.threads)
    start = time.time()
    prior = load_prior(args.bundle)
    n_classes = max(1, len(prior.contrasts))
    labels = torch.arange(args.samples) % n_classes
    noise = torch.randn((args.samples, 1, *prior.spatial_shape), generator=torch.Generator().manual_seed(args.seed))

    def sample(scheduler) -> tuple[torch.Tensor, int]:
        """The MONAI loop over the batch in chunks; returns the samples and the NFE."""
        out = []
        for i in range(0, args.samples, args.batch):
            x = noise[i : i + args.batch] * scheduler.init_noise_sigma
            lab = labels[i : i + args.batch] if prior.contrasts else None
            for t in scheduler.timesteps:
                tt = torch.full((len(x),), float(t))
                with torch.no_grad():
                    eps = prior.network(x, tt, class_labels=lab)
                x, _ = scheduler.step(eps, t, x)
            out.append(x)
        return torch.cat(out), len(scheduler.timesteps)

    clip = {"clip_sample": bool(args.clip_sample)}

    def reference_sampler(steps: int):
        s = DPMSolverMultistepScheduler(timestep_spacing="log_snr", **clip)
        s.set_timesteps(steps)
        return s

    key = (args.bundle, args.samples, args.seed, args.reference_steps, bool(args.clip_sample))
    reference = check = None
    if args.cache and os.path.exists(args.cache):
        saved = torch.load(args.cache)
        if saved["key"] == list(key):
            reference, check = saved["reference"], saved["check"]
    if reference is None:
        reference, _ = sample(reference_sampler(args.reference_steps))
        check, _ = sample(reference_sampler(args.reference_steps // 2))
        if args.cache:
            torch.save({"key": list(key), "reference": reference, "check": check}, args.cache)

    def errors(x: torch.Tensor) -> tuple[float, float]:
        """RMSE to the reference over all pixels, and the mean per-sample PSNR (data range 2)."""
        rmse = float((x - reference).pow(2).mean().sqrt())
        per = (x - reference).pow(2).flatten(1).mean(1).clamp_min(1e-20)
        return rmse, float((10 * torch.log10(4.0 / per)).mean())

    rows = []
    rmse, psnr = errors(check)
    ref_row = {"sampler": f"DPM-Solver++ 2M, {args.reference_steps // 2} steps", "grid": "log_snr (reference check)"}
    rows.append({**ref_row, "nfe": args.reference_steps // 2, "rmse": rmse, "psnr": psnr})
    configs = []
    for name, cls in (("DPM-Solver++ 2M", DPMSolverMultistepScheduler), ("UniPC-2", UniPCMultistepScheduler)):
        for value in args.lambda_min:
            lam = None if value.lower() == "none" else float(value)
            label = "log_snr" if lam is None else f"log_snr, lambda_min={lam:g}"
            configs.append(
                (
                    name,
                    label,
                    lambda cls=cls, lam=lam: cls(timestep_spacing="log_snr", lambda_min=lam, **clip),
                    args.nfe,
                )
            )
    if args.heun:
        heun_nfe = sorted({2 * ((n + 1) // 2) - 1 for n in args.nfe} | {2 * n - 1 for n in args.nfe})
        for spacing in ("karras", "linspace", "log_snr"):
            configs.append(
                (
                    "Heun",
                    spacing,
                    lambda spacing=spacing: HeunKarrasScheduler(timestep_spacing=spacing, **clip),
                    heun_nfe,
                )
            )
    for name, label, make, budgets in configs:
        for nfe in budgets:
            scheduler = make()
            scheduler.set_timesteps((nfe + 1) // 2 if name == "Heun" else nfe)
            x, used = sample(scheduler)
            rmse, psnr = errors(x)
            rows.append({"sampler": name, "grid": label, "nfe": used, "rmse": rmse, "psnr": psnr})
            print(f"{name:16s} {label:28s} NFE {used:3d}  RMSE {rmse:.4f}  PSNR {psnr:6.2f} dB", flush=True)

    seconds = time.time() - start
    print()
    print(
        f"# {args.bundle}: {args.samples} samples (seed {args.seed}), reference DPM-Solver++ 2M log_snr "
        f"{args.reference_steps} steps, clip_sample={bool(args.clip_sample)}; {platform.platform()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {seconds:.0f} s"
    )
    budgets = sorted({r["nfe"] for r in rows[1:]})
    print("| sampler | grid | " + " | ".join(f"NFE {b}: RMSE / PSNR" for b in budgets) + " |")
    print("|---|---|" + "---|" * len(budgets))
    print(f"| {rows[0]['sampler']} | {rows[0]['grid']} | RMSE {rows[0]['rmse']:.4f} / {rows[0]['psnr']:.1f} dB |")
    for name, label, _, _ in configs:
        cells = []
        for b in budgets:
            hit = [r for r in rows if r["sampler"] == name and r["grid"] == label and r["nfe"] == b]
            cells.append(f"{hit[0]['rmse']:.4f} / {hit[0]['psnr']:.1f} dB" if hit else "")
        print(f"| {name} | {label} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            meta = {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()}
            json.dump({**meta, "args": vars(args), "seconds": seconds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
