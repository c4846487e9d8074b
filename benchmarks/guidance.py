"""Guided sampling: accuracy against the analytic target, and the cost of guidance per step.

Accuracy. Data: the labelled mixture of ``tests/inferers/test_guidance.py``,
``p(x) = 0.4 N(-1, 0.4^2) [y=0] + 0.3 N(0.5, 0.3^2) + 0.3 N(1.5, 0.3^2) [y=1]``, guided towards ``y = 1``. With the
exact noised classifier and exact scores, classifier guidance (CG) and classifier-free guidance (CFG) at scale ``s``
are the same field, ``grad log p_t(x) + s grad log p_t(y | x)``. Its probability-flow ODE output (the "guided
target") is computed independently by RK4 (800 steps) on prior quantiles (``monai_diffusion.exact.guided_ode_quantiles``);
at ``s = 1`` it is ``p(x | y)`` exactly. The initial noise is the same normal quantiles, so for deterministic samplers
the W1 distance (mean |sorted difference|) is pure discretisation error, with no Monte-Carlo floor. The last column
is the distance of the guided target to the tilted distribution ``p(x) p(y|x)^s``, which guidance does *not* sample
for ``s != 1``. The tilt is sampled by classifier guidance at scale 1 with the exact classifier of the auxiliary event
``e``, ``P(e | x0) = p(y | x0)^s`` (``monai_diffusion.exact.TemperedLabelClassifier``; rows "CG-e"): for it the reported
error is the W1 distance to the tilt itself. Stochastic DDPM sampling of the same guided field (a reverse SDE whose drift is not a score) has no
such ODE target; for it only the distance to the tilted distribution is reported (Monte-Carlo floor ~0.005).

Cost. A small MONAI ``DiffusionModelUNet`` (2D, 32x32, batch 4, channels (32, 64, 64), cross-attention at the last
level) and a ``DiffusionModelEncoder`` classifier of the same widths; per-step wall time (network + wrapper +
scheduler step, min over repeats) of unguided sampling, CFG (one batched call of 2B, or two calls), CG (classifier
forward + backward), and MONAI 1.6.1 ``DiffusionInferer.sample(cfg=...)`` as the baseline for CFG, all with the same
DDIM scheduler, in one process; reported as ratios to unguided.

Usage::

    python benchmarks/guidance.py            # full run
    python benchmarks/guidance.py --quick    # fewer NFE/scales, fewer repeats
    python benchmarks/guidance.py --json results.json
"""

from __future__ import annotations

# ruff: noqa: E402 (the heavy imports follow the argument parsing)
import argparse
import json
import platform
import time
import warnings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer NFE, scales and repeats")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--skip-accuracy", action="store_true", help="only measure the cost per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and usage errors answer here, before torch and MONAI are imported (seconds)

import torch

from monai_diffusion.exact import (
    ExactClassifier,
    ExactConditionalModel,
    ExactModel,
    GaussianMixture,
    TemperedLabelClassifier,
    guided_ode_quantiles,
    stratified_normal,
    tilted_density,
    wasserstein1_density,
)
from monai_diffusion.inferers import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    DiffusionInferer,
    NullCondition,
    marginal_coefficients,
)
from monai_diffusion.networks.schedulers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

warnings.filterwarnings("ignore")

MIX = GaussianMixture(
    torch.tensor([0.4, 0.3, 0.3]),
    torch.tensor([-1.0, 0.5, 1.5]).reshape(3, 1, 1, 1),
    torch.tensor([0.4, 0.3, 0.3]).reshape(3, 1, 1, 1),
    elementwise=False,
    labels=torch.tensor([0, 1, 1]),
)
LABEL, NULL = 1, 2


def sorted_w1(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((torch.sort(x.flatten())[0] - ref).abs().mean())


def accuracy(nfes: list[int], scales: list[float], n: int) -> list[dict]:
    rows = []
    grid = torch.linspace(-4.0, 5.0, 40001, dtype=torch.float64)
    samplers = {
        "DDIM": lambda: DDIMScheduler(1000),
        "DPM-Solver++(2M)": lambda: DPMSolverMultistepScheduler(1000, solver_order=2),
        "DDPM (stochastic)": lambda: DDPMScheduler(1000),
    }
    for scale in scales:
        probe = DDIMScheduler(1000)
        refs = {}
        for nfe in nfes:
            probe.set_timesteps(nfe)
            a, s = marginal_coefficients(probe, probe.timesteps[0])
            key = round(float(s / a), 6)
            if key not in refs:  # the reference starts where the sampler starts
                refs[key] = guided_ode_quantiles(MIX, LABEL, scale, float(a), float(s), num_points=n, num_steps=800)
        ref_any = next(iter(refs.values()))
        tilt_pdf = tilted_density(MIX, LABEL, scale, grid)  # once per scale, for every row below
        tilt = wasserstein1_density(ref_any, grid, tilt_pdf)
        for name, make in samplers.items():
            for nfe in nfes:
                for kind in ("CG", "CFG", "CG-e"):
                    sched = make()
                    sched.set_timesteps(nfe)
                    a, s = marginal_coefficients(sched, sched.timesteps[0])
                    ref = refs.get(round(float(s / a), 6))
                    if ref is None:
                        ref = guided_ode_quantiles(MIX, LABEL, scale, float(a), float(s), num_points=n, num_steps=800)
                    if kind == "CG":
                        model = ClassifierGuidance(ExactModel(MIX, sched), ExactClassifier(MIX, sched), scale, sched)
                    elif kind == "CG-e":  # column 1 of the event classifier is "e happened"
                        event = TemperedLabelClassifier(MIX, sched, LABEL, scale)
                        model = ClassifierGuidance(ExactModel(MIX, sched), event, 1.0, sched, label=1)
                    else:
                        model = ClassifierFreeGuidance(
                            ExactConditionalModel(MIX, sched, NULL), scale, NullCondition(class_label=NULL)
                        )
                    conditioned = kind != "CG-e"
                    x = DiffusionInferer(sched, "class_label").sample(
                        stratified_normal((n, 1, 1, 1), seed=None, dtype=torch.float64),
                        model,
                        conditioning=torch.tensor(LABEL) if conditioned else None,
                        generator=torch.Generator().manual_seed(0),
                    )
                    # a stochastic sampler with a guided field that is not a score has no ODE target; CG-e's
                    # target is the tilt itself (reported in w1_tilted)
                    no_ode_target = name.startswith("DDPM") or kind == "CG-e"
                    rows.append(
                        {
                            "sampler": name,
                            "guidance": kind,
                            "scale": scale,
                            "nfe": nfe,
                            "w1_guided_target": float("nan") if no_ode_target else sorted_w1(x, ref),
                            "w1_tilted": wasserstein1_density(x, grid, tilt_pdf),
                            "target_vs_tilted": tilt,
                        }
                    )
            print(f"  done: scale {scale:g}, {name}", flush=True)  # progress: the full run takes about 25 min
    return rows


def cost(repeats: int, steps: int) -> dict:
    from monai.inferers import DiffusionInferer as MonaiInferer
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.nets.diffusion_model_unet import DiffusionModelEncoder

    torch.manual_seed(0)
    unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(32, 64, 64),
        attention_levels=(False, False, True),
        num_res_blocks=1,
        num_head_channels=32,
        with_conditioning=True,
        cross_attention_dim=8,
    ).eval()
    classifier = DiffusionModelEncoder(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        input_shape=(32, 32),
        channels=(32, 64, 64),
        attention_levels=(False, False, False),
        num_res_blocks=1,
    ).eval()
    sched = DDIMScheduler(1000)
    sched.set_timesteps(steps)
    noise = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    context = torch.randn(4, 1, 8, generator=torch.Generator().manual_seed(1))
    null = NullCondition(context=torch.full((1, 8), -1.0))  # MONAI's cfg_fill_value default
    ours = DiffusionInferer(sched, "crossattn")
    runs = {
        "unguided": lambda: ours.sample(noise, unet, conditioning=context),
        "CFG (batched 2B)": lambda: ours.sample(noise, ClassifierFreeGuidance(unet, 3.0, null), conditioning=context),
        "CFG (two calls)": lambda: ours.sample(
            noise, ClassifierFreeGuidance(unet, 3.0, null, batched=False), conditioning=context
        ),
        "CG (classifier grad)": lambda: ours.sample(
            noise, ClassifierGuidance(unet, classifier, 3.0, sched, label=1), conditioning=context
        ),
        "CFG + CG": lambda: ours.sample(
            noise,
            ClassifierGuidance(ClassifierFreeGuidance(unet, 3.0, null), classifier, 3.0, sched, label=1),
            conditioning=context,
        ),
        "MONAI DiffusionInferer unguided": lambda: MonaiInferer(sched).sample(
            noise, unet, sched, conditioning=context, verbose=False
        ),
        "MONAI DiffusionInferer cfg": lambda: MonaiInferer(sched).sample(
            noise, unet, sched, conditioning=context, verbose=False, cfg=3.0
        ),
    }
    # round-robin repeats, so that load drifting during the run affects every configuration alike
    best = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    times = {name: t / steps for name, t in best.items()}
    base = times["unguided"]
    return {name: {"ms_per_step": 1000 * t, "ratio_to_unguided": t / base} for name, t in times.items()}


def main(args: argparse.Namespace | None = None) -> None:
    args = parse_args() if args is None else args
    torch.set_num_threads(args.threads)
    print(f"# {platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    nfes = [10, 50] if args.quick else [10, 20, 50, 100]
    scales = [1.0, 3.0] if args.quick else [1.0, 2.0, 4.0]
    n = 4000 if args.quick else 20000
    t0 = time.time()
    rows = [] if args.skip_accuracy else accuracy(nfes, scales, n)
    print(f"Guided sampling error (W1, {n} quantile samples), target = guided probability-flow ODE (RK4, 800 steps)")
    print(
        f"{'sampler':<18} {'guid.':<5} {'scale':>5} {'NFE':>4} {'W1 target':>10} {'W1 tilted':>10} {'target-tilt':>11}"
    )
    for r in rows:
        print(
            f"{r['sampler']:<18} {r['guidance']:<5} {r['scale']:>5.1f} {r['nfe']:>4d} {r['w1_guided_target']:>10.4f} "
            f"{r['w1_tilted']:>10.4f} {r['target_vs_tilted']:>11.4f}"
        )
    timing = cost(repeats=3 if args.quick else 10, steps=5 if args.quick else 10)
    print("\nCost per sampling step (min of repeats), ratio to unguided sampling with the same inferer")
    for name, v in timing.items():
        print(f"{name:<34} {v['ms_per_step']:>9.2f} ms {v['ratio_to_unguided']:>6.2f}x")
    result = {
        "accuracy": rows,
        "cost": timing,
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
