"""Which timestep grid suits which noise schedule: fast solvers under the exact score, per spacing.

The uniform log-SNR grid (the default of our DPM-Solver++ and UniPC) is best for the linear schedule of
``benchmarks/samplers.py``, but the cosine schedule drives ``abar`` to about 2e-9 at ``t = 999`` (log-SNR near -20),
and a log-SNR grid then spends several evaluations where the data are already destroyed. This script measures it:
for each schedule, spacing and order, the 1-Wasserstein distance to the mixture
``0.4 N(-0.8, 0.2^2) + 0.6 N(0.6, 0.3^2)`` of samples drawn with the exact noise prediction from stratified initial
noise (normal quantiles in a seeded random order; deterministic samplers, so no Monte-Carlo floor to speak of),
with DDIM as the reference.

Usage::

    python benchmarks/spacing.py                 # cosine and linear schedules, NFE 10 and 20
    python benchmarks/spacing.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from monai_diffusion.inferers import DiffusionInferer
from monai_diffusion.networks.schedulers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from monai_diffusion.utils.exact import ExactModel, GaussianMixture, wasserstein1

MIXTURE = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([-0.8, 0.6]), torch.tensor([0.2, 0.3]))
SCHEDULES = {"linear": "linear_beta", "cosine": "cosine"}


def stratified_noise(n: int, seed: int = 0) -> torch.Tensor:
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    z = torch.special.ndtri(u)[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    return z.reshape(2, 1, -1, 32)


def w1(scheduler, nfe: int, noise: torch.Tensor) -> float:
    scheduler.set_timesteps(nfe)
    model = ExactModel(MIXTURE, scheduler)
    x = DiffusionInferer(scheduler).sample(noise.clone(), model, generator=torch.Generator().manual_seed(0))
    return wasserstein1(x, MIXTURE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    parser.add_argument("--samples", type=int, default=2048, help="number of scalar samples (a multiple of 64)")
    args = parser.parse_args()
    t0 = time.time()
    noise = stratified_noise(args.samples)
    rows = []
    for sched_name, schedule in SCHEDULES.items():
        probe = DDIMScheduler(1000, schedule=schedule)
        abar_last = float(probe.marginal_coefficients(torch.tensor(999.0))[0] ** 2)
        for nfe in (10, 20):
            for spacing in ("linspace", "leading"):
                rows.append(
                    {
                        "schedule": sched_name,
                        "abar_999": abar_last,
                        "sampler": "DDIM",
                        "order": 1,
                        "spacing": spacing,
                        "nfe": nfe,
                        "w1": w1(DDIMScheduler(1000, schedule=schedule, timestep_spacing=spacing), nfe, noise),
                    }
                )
            for name, cls in (("DPM-Solver++", DPMSolverMultistepScheduler), ("UniPC", UniPCMultistepScheduler)):
                for spacing in ("log_snr", "linspace", "trailing", "karras"):
                    for order in (2, 3):
                        sched = cls(1000, schedule=schedule, solver_order=order, timestep_spacing=spacing)
                        rows.append(
                            {
                                "schedule": sched_name,
                                "abar_999": abar_last,
                                "sampler": name,
                                "order": order,
                                "spacing": spacing,
                                "nfe": nfe,
                                "w1": w1(sched, nfe, noise),
                            }
                        )
    print(f"W1 to the mixture under the exact score ({args.samples} stratified samples)")
    print(f"{'schedule':<8} {'abar(999)':>10} {'sampler':<13} {'order':>5} {'spacing':<9} {'NFE 10':>8} {'NFE 20':>8}")
    keys = {(r["schedule"], r["sampler"], r["order"], r["spacing"]) for r in rows}
    for key in sorted(keys, key=lambda k: (k[0] != "cosine", k[1] != "DDIM", k[1], k[2], k[3])):
        cells = {r["nfe"]: r for r in rows if (r["schedule"], r["sampler"], r["order"], r["spacing"]) == key}
        abar = cells[10]["abar_999"]
        print(
            f"{key[0]:<8} {abar:>10.2e} {key[1]:<13} {key[2]:>5d} {key[3]:<9} {cells[10]['w1']:>8.4f} "
            f"{cells[20]['w1']:>8.4f}"
        )
    result = {"rows": rows, "platform": platform.platform(), "torch": torch.__version__, "seconds": time.time() - t0}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
