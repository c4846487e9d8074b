"""Sampler accuracy and cost under the exact score, side by side with MONAI 1.6.1 and diffusers.

For data from a 1D Gaussian mixture (every pixel an independent draw), the optimal network output is closed-form
(``monai_diffusion.exact``), so each sampler's distribution error is its own discretisation error. For every
sampler family and NFE budget the script reports the 1-Wasserstein distance to the true mixture and the largest
mixture-weight error, and each sampler's own cost per step as a fraction of one forward pass of a 64x64 MONAI
``DiffusionModelUNet`` (batch 8, channels (32, 64, 64), no attention, one residual block).

Fairness: all samplers share the same forward process (linear betas 1e-4..0.02, 1000 steps), the same exact model
(fractional times are handled by interpolating ``log sigma``, the convention of both our Karras samplers and
diffusers), and the same initial noise. The noise is stratified (normal quantiles at ``(i + 0.5) / n``, shuffled
with a fixed seed) so the Monte-Carlo floor of W1 for deterministic samplers is far below the solver errors being
compared. Each family is run over a small grid of configurations (spacing, order) and the best configuration per
NFE is reported, for ours and for the baselines alike. Stochastic samplers use a seeded generator.

Usage::

    python benchmarks/samplers.py            # full run
    python benchmarks/samplers.py --quick    # NFE 10 and 20, smaller sample, fewer timing repeats
    python benchmarks/samplers.py --json results.json --plot w1.png
    python benchmarks/samplers.py --replot results.json --plot w1.png   # redraw the figure only
    python benchmarks/samplers.py --heun     # Heun on each grid against diffusers' Heun at equal NFE, and why
"""

from __future__ import annotations

# ruff: noqa: E402 (the heavy imports follow the argument parsing)
import argparse
import inspect
import json
import platform
import time
import warnings
from collections.abc import Callable
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="NFE 10 and 20 only, smaller sample, fewer repeats")
    parser.add_argument("--json", type=str, default=None, help="write the results to this JSON file")
    parser.add_argument("--size", type=int, default=None, help="image side of the (8, 1, size, size) sample batch")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as markdown (for the docs)")
    parser.add_argument("--plot", type=str, default=None, help="also write a W1-versus-NFE figure (PNG) to this path")
    parser.add_argument(
        "--replot", type=str, default=None, metavar="JSON", help="only draw --plot from the rows of a --json file"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    parser.add_argument("--heun", action="store_true", help="only the Heun comparison at equal NFE (and its cause)")
    args = parser.parse_args(argv)
    if args.replot and not args.plot:
        parser.error("--replot needs --plot PATH")
    return args


if __name__ == "__main__":
    ARGS = parse_args()  # --help and usage errors answer here, before torch and MONAI are imported (seconds)

import torch

import monai_diffusion.networks.schedulers as ours
from monai_diffusion.exact import ExactModel, GaussianMixture, mixture_weight_error, stratified_normal, wasserstein1

warnings.filterwarnings("ignore")

MIXTURE = GaussianMixture(
    torch.tensor([0.25, 0.45, 0.30]), torch.tensor([-1.0, 0.1, 1.1]), torch.tensor([0.12, 0.25, 0.15])
)
BETA_START, BETA_END, T = 1e-4, 0.02, 1000


# ------------------------------------------------------------------------------------------------ helpers
def _accepts(fn: Callable, name: str) -> bool:
    return name in inspect.signature(fn).parameters


def run_monai_loop(scheduler: Any, model: Any, noise: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """MONAI's loop (``x = noise * init_noise_sigma``; ``x, _ = step(model(x, t), t, x)``)."""
    gen = torch.Generator().manual_seed(seed)
    use_gen = _accepts(scheduler.step, "generator")
    x = noise * float(getattr(scheduler, "init_noise_sigma", 1.0))
    for t in scheduler.timesteps:
        out = model(x, t)
        x, _ = scheduler.step(out, t, x, generator=gen) if use_gen else scheduler.step(out, t, x)
    return x


def run_diffusers_loop(scheduler: Any, model: Any, noise: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """The diffusers loop (with ``scale_model_input``)."""
    gen = torch.Generator().manual_seed(seed)
    use_gen = _accepts(scheduler.step, "generator")
    x = noise * float(scheduler.init_noise_sigma)
    for t in scheduler.timesteps:
        out = model(scheduler.scale_model_input(x, t), t)
        res = (
            scheduler.step(out, t, x, generator=gen, return_dict=False)
            if use_gen
            else scheduler.step(out, t, x, return_dict=False)
        )
        x = res[0]
    return x


def fit_steps(scheduler: Any, nfe: int) -> int | None:
    """Largest ``num_inference_steps`` whose timestep list (= model evaluations) fits in ``nfe``."""
    for n in range(nfe, 0, -1):
        try:
            scheduler.set_timesteps(n)
        except (ValueError, IndexError, RuntimeError):
            continue
        if len(scheduler.timesteps) <= nfe:
            return n
    return None


# ------------------------------------------------------------------------------------------------ families
def our_families() -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    fam: dict[str, list[tuple[str, Callable[[], Any]]]] = {
        "ours DDPM": [
            (f"spacing={sp}", lambda sp=sp: ours.DDPMScheduler(timestep_spacing=sp))
            for sp in ("linspace", "leading", "trailing")
        ],
        "ours DDIM": [
            (f"spacing={sp}", lambda sp=sp: ours.DDIMScheduler(timestep_spacing=sp))
            for sp in ("linspace", "leading", "trailing", "log_snr")
        ],
        "ours DPM-Solver++": [
            (
                f"order={o},spacing={sp}",
                lambda o=o, sp=sp: ours.DPMSolverMultistepScheduler(solver_order=o, timestep_spacing=sp),
            )
            for o in (2, 3)
            for sp in ("log_snr", "karras", "linspace")
        ],
        "ours Euler (Karras)": [
            (f"spacing={sp}", lambda sp=sp: ours.EulerKarrasScheduler(timestep_spacing=sp))
            for sp in ("karras", "log_snr")
        ],
        "ours Heun (Karras)": [
            (f"spacing={sp}", lambda sp=sp: ours.HeunKarrasScheduler(timestep_spacing=sp))
            for sp in ("karras", "log_snr", "linspace")
        ],
    }
    if hasattr(ours, "UniPCMultistepScheduler"):
        fam["ours UniPC"] = [
            (
                f"order={o},spacing={sp}",
                lambda o=o, sp=sp: ours.UniPCMultistepScheduler(solver_order=o, timestep_spacing=sp),
            )
            for o in (2, 3)
            for sp in ("log_snr", "karras")
        ]
    # score-based samplers (part B), with their defaults, when exported
    for name in ("NCSNScheduler", "EulerMaruyamaScheduler", "PredictorCorrectorScheduler", "ProbabilityFlowScheduler"):
        cls = getattr(ours, name, None)
        if cls is not None:
            fam[f"ours {name.replace('Scheduler', '')}"] = [("defaults", cls)]
    return fam


def monai_families() -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    from monai.networks import schedulers as ms

    return {
        "MONAI DDPM": [("clip_sample=False", lambda: ms.DDPMScheduler(clip_sample=False))],
        "MONAI DDIM": [("clip_sample=False", lambda: ms.DDIMScheduler(clip_sample=False))],
        "MONAI PNDM": [(f"skip_prk_steps={s}", lambda s=s: ms.PNDMScheduler(skip_prk_steps=s)) for s in (True, False)],
    }


def diffusers_families() -> dict[str, list[tuple[str, Callable[[], Any]]]]:
    try:
        import diffusers
    except ImportError:
        return {}
    common = {"num_train_timesteps": T, "beta_start": BETA_START, "beta_end": BETA_END, "beta_schedule": "linear"}
    dpm = []
    for order in (2, 3):
        for label, extra in (
            ("linspace", {}),
            ("karras", {"use_karras_sigmas": True}),
            ("lu", {"use_lu_lambdas": True}),
        ):
            dpm.append(
                (
                    f"order={order},{label}",
                    lambda order=order, extra=extra: diffusers.DPMSolverMultistepScheduler(
                        solver_order=order, **common, **extra
                    ),
                )
            )
    unipc = []
    for order in (2, 3):
        for label, extra in (("linspace", {}), ("karras", {"use_karras_sigmas": True})):
            unipc.append(
                (
                    f"order={order},{label}",
                    lambda order=order, extra=extra: diffusers.UniPCMultistepScheduler(
                        solver_order=order, **common, **extra
                    ),
                )
            )
    heun = [
        (label, lambda extra=extra: diffusers.HeunDiscreteScheduler(**common, **extra))
        for label, extra in (("linspace", {}), ("karras", {"use_karras_sigmas": True}))
    ]
    return {"diffusers DPMSolverMultistep": dpm, "diffusers UniPC": unipc, "diffusers Heun": heun}


# ------------------------------------------------------------------------------------------------ measurement
def evaluate(make: Callable[[], Any], kind: str, nfe: int, noise: torch.Tensor) -> dict[str, Any] | None:
    sched = make()
    steps = fit_steps(sched, nfe)
    if steps is None:
        return None
    sched.set_timesteps(steps)
    if kind == "ours":
        model = ExactModel(MIXTURE, sched)
        x = run_monai_loop(sched, model, noise)
    elif kind == "monai":
        model = ExactModel(MIXTURE, sched, prediction_type="epsilon")
        x = run_monai_loop(sched, model, noise)
    else:
        model = ExactModel(MIXTURE, sched, prediction_type="epsilon")
        x = run_diffusers_loop(sched, model, noise)
    return {
        "steps": steps,
        "nfe": model.calls,
        "w1": wasserstein1(x, MIXTURE),
        "weight_error": mixture_weight_error(x, MIXTURE),
    }


def unet_forward_seconds(repeats: int) -> float:
    from monai.networks.nets import DiffusionModelUNet

    net = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(32, 64, 64),
        attention_levels=(False, False, False),
        num_res_blocks=1,
        num_head_channels=32,
    ).eval()
    x = torch.randn(8, 1, 64, 64)
    t = torch.full((8,), 500.0)
    best = float("inf")
    with torch.no_grad():
        net(x, t)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x, t)
            best = min(best, time.perf_counter() - start)
    return best


def step_seconds(make: Callable[[], Any], kind: str, repeats: int, steps: int = 20) -> float:
    """Min over repeats of the sampler's own time per model evaluation on a (8, 1, 64, 64) batch."""
    sched = make()
    x0 = torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    out = torch.randn(8, 1, 64, 64, generator=torch.Generator().manual_seed(1)) * 0.5
    best = float("inf")
    for _ in range(repeats):
        sched.set_timesteps(steps)
        ts = list(sched.timesteps)
        gen = torch.Generator().manual_seed(2)
        x = x0.clone()
        start = time.perf_counter()
        for t in ts:
            if kind == "diffusers":
                x = sched.step(out, t, x, return_dict=False)[0]
            elif _accepts(sched.step, "generator"):
                x, _ = sched.step(out, t, x, generator=gen)
            else:
                x, _ = sched.step(out, t, x)
        best = min(best, (time.perf_counter() - start) / len(ts))
    return best


def heun_rows(noise: torch.Tensor, steps: tuple[int, ...] = (5, 10, 20)) -> list[dict[str, Any]]:
    """Heun at equal NFE (``2 n - 1`` for ``n`` steps): ours on each grid against diffusers' ``HeunDiscreteScheduler``
    (its default linspace grid and its Karras sigmas)."""
    configs: list[tuple[str, str, Callable[[], Any]]] = [
        (f"ours, timestep_spacing={sp!r}", "ours", lambda sp=sp: ours.HeunKarrasScheduler(timestep_spacing=sp))
        for sp in ("linspace", "karras", "log_snr")
    ]
    for label, make in diffusers_families().get("diffusers Heun", []):
        configs.append((f"diffusers, {label}", "diffusers", make))
    rows = []
    for n in steps:
        for label, kind, make in configs:
            res = evaluate(make, kind, 2 * n - 1, noise)
            if res is not None:
                rows.append({"config": label, "steps": n, **res})
    return rows


def heun_step_errors(levels: list[float], noise: torch.Tensor, fine: int = 200) -> list[float]:
    """Each Heun step's share of the final error on the grid ``levels`` (VE noise levels ``s``, decreasing,
    ending at the schedule's smallest, then an Euler step to 0 as in ``HeunKarrasScheduler``).

    In VE coordinates ``y = x / alpha`` the ODE is ``dy/ds = (y - D(y, s)) / s`` with the exact denoiser ``D`` of the
    mixture (Karras et al. 2022, Eq. 3; the scheduler integrates the same equation). Step ``i`` is started from the
    exact state at ``s_i`` (a fine solve: ``fine`` Heun steps, geometric in ``s``), taken once, and the rest of the
    way is solved finely again; the mean absolute difference of the end points to the exact end points is that
    step's contribution.
    """

    def heun(y: torch.Tensor, a: float, b: float) -> torch.Tensor:
        d = (y - MIXTURE.posterior_mean(y, 1.0, a)) / a
        y_euler = y + (b - a) * d
        return y + (b - a) * 0.5 * (d + (y_euler - MIXTURE.posterior_mean(y_euler, 1.0, b)) / b)

    def solve(y: torch.Tensor, a: float, b: float) -> torch.Tensor:
        grid = torch.logspace(torch.log10(torch.tensor(a)), torch.log10(torch.tensor(b)), fine + 1, dtype=torch.float64)
        for u, v in zip(grid[:-1].tolist(), grid[1:].tolist()):
            y = heun(y, u, v)
        return y

    def finish(y: torch.Tensor, s: float) -> torch.Tensor:  # fine solve to the last level, then Euler to 0
        return MIXTURE.posterior_mean(solve(y, s, levels[-1]) if s > levels[-1] else y, 1.0, levels[-1])

    states = [noise.flatten().double() * (1.0 + levels[0] ** 2) ** 0.5]
    for a, b in zip(levels[:-1], levels[1:]):
        states.append(solve(states[-1], a, b))
    exact_end = MIXTURE.posterior_mean(states[-1], 1.0, levels[-1])
    return [
        float((finish(heun(y, a, b), b) - exact_end).abs().mean())
        for y, a, b in zip(states[:-1], levels[:-1], levels[1:])
    ]


def heun_report(noise: torch.Tensor) -> None:
    """Print the Heun comparison at equal NFE and, for 10 steps, each step's share of the error per grid."""
    rows = heun_rows(noise)
    steps = sorted({r["steps"] for r in rows})
    print(f"\n# Heun at equal NFE: W1 / largest weight error ({noise.numel()} stratified samples)")
    print("| Heun grid | " + " | ".join(f"{n} steps (NFE {2 * n - 1})" for n in steps) + " |")
    print("|---" * (len(steps) + 1) + "|")
    for config in dict.fromkeys(r["config"] for r in rows):
        cells = []
        for n in steps:
            r = [r for r in rows if r["config"] == config and r["steps"] == n][0]
            cells.append(f"{r['w1']:.4f} / {r['weight_error']:.4f}")
        print(f"| {config} | " + " | ".join(cells) + " |")
    print("\n# each step's share of the error at 10 steps: mean |end point - exact end point| from that step alone")
    for sp in ("linspace", "karras"):
        sched = ours.HeunKarrasScheduler(timestep_spacing=sp)
        sched.set_timesteps(10)
        t = torch.unique_consecutive(sched.timesteps.double())
        alpha, sigma = sched.marginal_coefficients(t)
        levels = (sigma / alpha).tolist()
        errors = heun_step_errors(levels, noise)
        cells = ", ".join(f"{a:.3g}->{b:.3g}: {e:.4f}" for a, b, e in zip(levels[:-1], levels[1:], errors))
        print(f"{sp}: {cells}")


def markdown_tables(rows: list[dict[str, Any]], costs: list[dict[str, Any]], families: list[str]) -> str:
    """Accuracy pivot (best configuration per family and budget: ``W1 / weight error (NFE)``) and cost table."""
    budgets = sorted({r["budget"] for r in rows})
    lines = ["| sampler | " + " | ".join(f"NFE {b}" for b in budgets) + " | best config at NFE 10 / 20 |"]
    lines.append("|---" * (len(budgets) + 2) + "|")
    for family in families:
        cells, configs = [], []
        for b in budgets:
            cands = [r for r in rows if r["family"] == family and r["budget"] == b]
            if not cands:
                cells.append("")
                continue
            r = min(cands, key=lambda r: r["w1"])
            nfe = "" if r["nfe"] == b else f" ({r['nfe']})"
            cells.append(f"{r['w1']:.4f} / {r['weight_error']:.4f}{nfe}")
            if b in (10, 20):
                configs.append(r["config"])
        lines.append(f"| {family} | " + " | ".join(cells) + f" | {' / '.join(configs)} |")
    lines.append("")
    lines.append("| sampler | own time per model evaluation | fraction of one UNet forward |")
    lines.append("|---|---|---|")
    for c in costs:
        lines.append(f"| {c['family']} | {c['seconds'] * 1e6:.0f} us | {100 * c['fraction_of_unet']:.3f} % |")
    return "\n".join(lines)


def plot_results(rows: list[dict[str, Any]], path: str) -> None:
    """W1 of the best configuration per NFE, per sampler family, on log-log axes (ours solid, baselines dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    stochastic = ("DDPM", "NCSN", "EulerMaruyama", "PredictorCorrector")
    all_families = list(dict.fromkeys(r["family"] for r in rows))
    panels = {
        "deterministic samplers (ODE solvers, DDIM, PNDM)": [
            f for f in all_families if not any(k in f for k in stochastic)
        ],
        "stochastic samplers": [f for f in all_families if any(k in f for k in stochastic)],
    }
    colors = plt.get_cmap("tab20").colors
    for ax, (title, families) in zip(axes, panels.items()):
        for i, family in enumerate(families):
            best: dict[int, dict[str, Any]] = {}
            for r in rows:
                if r["family"] == family and (r["budget"] not in best or r["w1"] < best[r["budget"]]["w1"]):
                    best[r["budget"]] = r
            pts = sorted((r["nfe"], r["w1"]) for r in best.values())
            ours = family.startswith("ours")
            style = {"marker": "o" if ours else "x", "ls": "-" if ours else "--", "lw": 1.8 if ours else 1.0}
            ax.plot(*zip(*pts), color=colors[i % len(colors)], label=family, **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("model evaluations (NFE)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("W1 to the true mixture (best configuration)")
    fig.suptitle("Sampler error under the exact score (benchmarks/samplers.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace | None = None) -> None:
    args = parse_args() if args is None else args
    if args.replot:
        with open(args.replot) as f:
            plot_results(json.load(f)["rows"], args.plot)
        return
    torch.set_num_threads(args.threads)

    nfes = [10, 20] if args.quick else [5, 10, 20, 50, 100]
    size = args.size or (32 if args.quick else 64)
    repeats = 3 if args.quick else 7
    noise = stratified_normal((8, 1, size, size))
    if args.heun:
        print(f"# {platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
        heun_report(noise)
        return
    groups = [("ours", our_families()), ("monai", monai_families()), ("diffusers", diffusers_families())]

    rows: list[dict[str, Any]] = []
    for kind, fams in groups:
        for family, configs in fams.items():
            budgets = list(nfes)
            if family.endswith("DDPM") and not args.quick:
                budgets.append(1000)
            for nfe in budgets:
                for label, make in configs if nfe < 1000 else configs[:1]:
                    res = evaluate(make, kind, nfe, noise)
                    if res is not None:
                        rows.append({"family": family, "kind": kind, "config": label, "budget": nfe, **res})

    def best(family: str, budget: int) -> dict[str, Any] | None:
        cands = [r for r in rows if r["family"] == family and r["budget"] == budget]
        return min(cands, key=lambda r: r["w1"]) if cands else None

    families = [f for _, fams in groups for f in fams]
    print(f"# exact-score sampling of a 3-component 1D mixture, {noise.numel()} samples (stratified noise)")
    print(f"# {platform.platform()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'sampler':32s} {'best config':24s} {'NFE':>5s} {'W1':>9s} {'weight err':>10s}")
    for family in families:
        for budget in sorted({r["budget"] for r in rows if r["family"] == family}):
            r = best(family, budget)
            if r is not None:
                print(f"{family:32s} {r['config']:24s} {r['nfe']:5d} {r['w1']:9.4f} {r['weight_error']:10.4f}")

    summary = {}
    print("\n# best of ours vs best of diffusers (lower W1 is better)")
    for budget in nfes:
        mine = [best(f, budget) for f in families if f.startswith("ours")]
        theirs = [best(f, budget) for f in families if f.startswith("diffusers")]
        mine = [r for r in mine if r is not None]
        theirs = [r for r in theirs if r is not None]
        if not mine or not theirs:
            continue
        a, b = min(mine, key=lambda r: r["w1"]), min(theirs, key=lambda r: r["w1"])
        summary[budget] = {"ours": a, "diffusers": b, "ours_at_least_as_accurate": a["w1"] <= b["w1"]}
        print(
            f"NFE {budget:4d}: ours {a['family']} ({a['config']}) W1={a['w1']:.4f} | "
            f"diffusers {b['family']} ({b['config']}) W1={b['w1']:.4f} | ratio ours/diffusers={a['w1'] / b['w1']:.3f}"
        )

    unet = unet_forward_seconds(repeats)
    print(f"\n# own cost per model evaluation, fraction of one UNet forward ({unet * 1e3:.1f} ms, min of {repeats})")
    costs = []
    for kind, fams in groups:
        for family, configs in fams.items():
            label, make = configs[0]
            try:
                sec = step_seconds(make, kind, repeats)
            except Exception as err:  # a baseline that cannot run this loop is reported, not fatal
                print(f"{family:32s} failed: {err}")
                continue
            costs.append({"family": family, "config": label, "seconds": sec, "fraction_of_unet": sec / unet})
            print(f"{family:32s} {sec * 1e6:9.1f} us  {100 * sec / unet:6.3f} %")

    if args.markdown:
        print()
        print(markdown_tables(rows, costs, families))
    if args.plot:
        plot_results(rows, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "platform": platform.platform(),
                    "torch": torch.__version__,
                    "threads": torch.get_num_threads(),
                    "samples": noise.numel(),
                    "unet_forward_seconds": unet,
                    "rows": rows,
                    "summary": summary,
                    "costs": costs,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main(ARGS)
