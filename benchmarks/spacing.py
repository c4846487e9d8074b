"""Which timestep grid suits which noise schedule: fast solvers under the exact score, per spacing.

The uniform log-SNR grid (the default of our DPM-Solver++ and UniPC) is best for the linear schedule of
``benchmarks/samplers.py``, but the cosine schedule drives ``abar`` to about 2e-9 at ``t = 999`` (log-SNR near -20),
and a log-SNR grid then spends several evaluations where the data are already destroyed. This script measures it:
for each data set, schedule, spacing and order, the 1-Wasserstein distance to the data mixture of samples drawn with
the exact noise prediction from stratified initial noise (normal quantiles in a seeded random order; deterministic
samplers, so no Monte-Carlo floor to speak of), with DDIM as the reference. ``log_snr, lambda_min=L`` is the
log-SNR grid clipped below at half log-SNR ``L`` after its first point at ``t = 999`` (the ``lambda_min`` option).

Data (scalar mixtures, every pixel an independent draw): ``main`` ``0.4 N(-0.8, 0.2^2) + 0.6 N(0.6, 0.3^2)``;
``wide`` ``0.3 N(-2.5, 0.3^2) + 0.4 N(0, 0.5^2) + 0.3 N(2.5, 0.3^2)``; ``narrow`` ``0.5 N(-0.3, 0.05^2) +
0.5 N(0.3, 0.05^2)``.

Usage::

    python benchmarks/spacing.py                 # three data sets, cosine and linear schedules, NFE 10 and 20
    python benchmarks/spacing.py --json out.json
    python benchmarks/spacing.py --heun          # HeunKarrasScheduler's grids on four schedules, NFE 9 / 19 / 39
"""

from __future__ import annotations

# ruff: noqa: E402 (the heavy imports follow the argument parsing)
import argparse
import json
import platform
import time


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    parser.add_argument("--samples", type=int, default=2048, help="number of scalar samples (a multiple of 64)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    parser.add_argument("--heun", action="store_true", help="only HeunKarrasScheduler's grids, for four schedules")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and usage errors answer here, before torch and MONAI are imported (seconds)

import torch

from monai_diffusion.exact import ExactModel, GaussianMixture, stratified_normal, wasserstein1
from monai_diffusion.inferers import DiffusionInferer
from monai_diffusion.networks.schedulers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    HeunKarrasScheduler,
    UniPCMultistepScheduler,
)

MIXTURE = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-0.8, 0.6]), torch.tensor([0.2, 0.3]))
MIXTURES = {
    "main": MIXTURE,
    "wide": GaussianMixture(
        torch.tensor([0.3, 0.4, 0.3]), torch.tensor([-2.5, 0.0, 2.5]), torch.tensor([0.3, 0.5, 0.3])
    ),
    "narrow": GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([-0.3, 0.3]), torch.tensor([0.05, 0.05])),
}
SCHEDULES = {"linear": "linear_beta", "cosine": "cosine"}


def w1(scheduler, nfe: int, noise: torch.Tensor, mixture: GaussianMixture = MIXTURE) -> float:
    scheduler.set_timesteps(nfe)
    model = ExactModel(mixture, scheduler)
    x = DiffusionInferer(scheduler).sample(noise.clone(), model, generator=torch.Generator().manual_seed(0))
    return wasserstein1(x, mixture)


def heun_grids(noise: torch.Tensor) -> list[dict]:
    """W1 of ``HeunKarrasScheduler`` per schedule, grid (and the default), data set, at 5, 10 and 20 steps."""
    rows = []
    schedules = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")
    for schedule in schedules:
        top = float(HeunKarrasScheduler(schedule=schedule).log_sigmas()[-1].exp())
        for spacing in (None, "linspace", "karras", "log_snr"):
            sched = HeunKarrasScheduler(schedule=schedule, timestep_spacing=spacing)
            label = f"default ({sched.timestep_spacing})" if spacing is None else spacing
            for data, mixture in MIXTURES.items():
                for steps in (5, 10, 20):
                    nfe = 2 * steps - 1
                    rows.append(
                        {
                            "schedule": schedule,
                            "top_level": top,
                            "grid": label,
                            "data": data,
                            "nfe": nfe,
                            "w1": w1(sched, steps, noise, mixture),
                        }
                    )
    print(f"Heun: W1 to the data mixture under the exact score ({noise.numel()} stratified samples), NFE 9 / 19 / 39")
    print("| schedule (top sigma/alpha) | grid | " + " | ".join(MIXTURES) + " |")
    print("|---|---|" + "---|" * len(MIXTURES))
    for schedule in schedules:
        for grid in dict.fromkeys(r["grid"] for r in rows if r["schedule"] == schedule):
            sel = [r for r in rows if r["schedule"] == schedule and r["grid"] == grid]
            cells = [" / ".join(f"{r['w1']:.3g}" for r in sel if r["data"] == data) for data in MIXTURES]
            print(f"| {schedule} ({sel[0]['top_level']:.3g}) | {grid} | " + " | ".join(cells) + " |")
    return rows


def main(args: argparse.Namespace | None = None) -> None:
    args = parse_args() if args is None else args
    torch.set_num_threads(args.threads)
    t0 = time.time()
    noise = stratified_normal((2, 1, args.samples // 64, 32), dtype=torch.float64)
    if args.heun:
        print(f"# {platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        rows = heun_grids(noise)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "threads": torch.get_num_threads(), "seconds": time.time() - t0}, f, indent=2)
        return
    rows = []
    spacings = [("log_snr", None), ("linspace", None), ("trailing", None), ("karras", None)]
    spacings += [("log_snr", -4.0), ("log_snr", -3.0)]
    for data, mixture in MIXTURES.items():
        for sched_name, schedule in SCHEDULES.items():
            probe = DDIMScheduler(1000, schedule=schedule)
            abar_last = float(probe.marginal_coefficients(torch.tensor(999.0))[0] ** 2)
            base = {"data": data, "schedule": sched_name, "abar_999": abar_last}
            for nfe in (10, 20):
                for spacing in ("linspace", "leading"):
                    sched = DDIMScheduler(1000, schedule=schedule, timestep_spacing=spacing)
                    rows.append(
                        dict(base, sampler="DDIM", order=1, spacing=spacing, nfe=nfe, w1=w1(sched, nfe, noise, mixture))
                    )
                for name, cls in (("DPM-Solver++", DPMSolverMultistepScheduler), ("UniPC", UniPCMultistepScheduler)):
                    for spacing, lam in spacings:
                        for order in (2, 3):
                            sched = cls(
                                1000, schedule=schedule, solver_order=order, timestep_spacing=spacing, lambda_min=lam
                            )
                            label = spacing if lam is None else f"{spacing}, lambda_min={lam:g}"
                            rows.append(
                                dict(
                                    base,
                                    sampler=name,
                                    order=order,
                                    spacing=label,
                                    nfe=nfe,
                                    w1=w1(sched, nfe, noise, mixture),
                                )
                            )
    print(
        f"W1 to the data mixture under the exact score ({args.samples} stratified samples; "
        f"{platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads)"
    )
    print(
        f"{'data':<7} {'schedule':<8} {'abar(999)':>10} {'sampler':<13} {'order':>5} {'spacing':<26} "
        f"{'NFE 10':>8} {'NFE 20':>8}"
    )
    keys = {(r["data"], r["schedule"], r["sampler"], r["order"], r["spacing"]) for r in rows}
    data_order = list(MIXTURES)
    for key in sorted(keys, key=lambda k: (data_order.index(k[0]), k[1] != "cosine", k[2] != "DDIM", k[2:])):
        cells = {r["nfe"]: r for r in rows if (r["data"], r["schedule"], r["sampler"], r["order"], r["spacing"]) == key}
        print(
            f"{key[0]:<7} {key[1]:<8} {cells[10]['abar_999']:>10.2e} {key[2]:<13} {key[3]:>5d} {key[4]:<26} "
            f"{cells[10]['w1']:>8.4f} {cells[20]['w1']:>8.4f}"
        )
    result = {
        "rows": rows,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": time.time() - t0,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main(ARGS)
