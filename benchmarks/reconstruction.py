"""Reconstruction benchmark: accelerated MRI (single/multi-coil) and sparse-view CT on the embedded data set.

Data: the embedded synthetic brain data set (``monai_diffusion.data``; simulated from the MNI152 template, not a
clinical data set), 2D 64x64 axial slices, T1w and T2w. The stationary Gaussian prior is fitted per contrast on
the **training** split; metrics are on slices of the **test** split (evenly spaced through the split, whole
held-out subjects).

MRI: real magnitude images, k-space from the centred orthonormal FFT (multi-coil: 4 synthetic normalised coil
maps), circular complex noise of std 0.005 per sample, 1D random and equispaced masks (MONAI's) at R=4 and R=8
with 8% centre lines, single- and multi-coil (multi-coil CG data consistency: 6 iterations per step; ``--quick``
runs multi-coil on T1w random masks only). Methods:

* ``zero-filled``: magnitude (single coil) or root-sum-of-squares (multi-coil) of the zero-filled inverse FFT;
* ``L1-wavelet CS``: FISTA with db4 wavelets, lambda tuned per configuration (coils, mask type, R) on the two most
  brain-filled T1w training slices (log grid 1e-6..1e-2, best PSNR);
* ``Gaussian MMSE``: the posterior mean of the fitted Gaussian prior (exact closed form single-coil, 50 CG
  iterations multi-coil);
* posterior samplers driven by the same Gaussian prior's exact score (``GaussianPriorDenoiser``) with
  DPM-Solver++ 2M: ``score-MRI`` (hard DC on x), ``DDNM`` (x0 projection), ``DPS``, ``MCG`` (DPS step size tuned
  per configuration on the same training slices); PSNR/SSIM of the mean of ``K`` samples, time per slice for all ``K`` samples.

A learned prior comes with the reconstruction bundle; with a Gaussian prior the best any posterior method can do
is the Gaussian MMSE, so this benchmark measures the samplers' machinery against classical baselines, not the value
of a deep prior.

CT: 64x64 slices (T1w intensities as attenuation, zero outside the inscribed circle), parallel beam with 30 views
over 180 degrees, Gaussian noise of std 0.05 on the sinogram; FBP vs Gaussian MMSE (CG) vs DDNM (CG pseudo-inverse)
and DPS with the Gaussian prior.

Metrics: MONAI ``PSNRMetric``/``SSIMMetric`` (data range 1) on reconstructions clipped to [0, 1]; time per slice
(wall clock / slices, batched, min of ``--repeats``). The machine is shared (2 CPU cores, other jobs running):
times are indicative only.

Also reported ("exact" section): each posterior sampler's gap to the analytic posterior (mean gap in units of the
posterior std, variance ratio) for a synthetic 16x16 Gaussian prior, noiseless (hard) and noisy (soft).

Usage::

    python benchmarks/reconstruction.py --quick            # < 5 minutes
    python benchmarks/reconstruction.py --json out.json    # full
"""

from __future__ import annotations

# ruff: noqa: E402 (the heavy imports follow the argument parsing)
import argparse
import json
import math
import platform
import time
import warnings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer slices, steps and configurations (< 5 min)")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    return ap.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()  # --help and usage errors answer here, before torch and MONAI are imported (seconds)

import torch
from monai.metrics import PSNRMetric, SSIMMetric

from monai_diffusion.apps.reconstruction import GaussianPriorDenoiser, StationaryGaussianPrior
from monai_diffusion.apps.reconstruction.baselines import filtered_back_projection, l1_wavelet_cs, zero_filled
from monai_diffusion.inferers.posterior import DataConsistencySampler, DPSSampler, MCGSampler, NullSpaceSampler
from monai_diffusion.networks.schedulers import DPMSolverMultistepScheduler
from monai_diffusion.operators import MRIOperator, ParallelBeamCT, synthetic_coil_maps
from monai_diffusion.transforms.kspace.masks import acceleration_of, equispaced_mask, random_mask

warnings.filterwarnings("ignore")

NOISE_MRI = 0.005
NOISE_CT = 0.05
CENTER = 0.08


def metrics(rec: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    r = rec.detach().real.float().clamp(0, 1)
    psnr = float(PSNRMetric(max_val=1.0, reduction="mean")(r, ref).mean())
    ssim = float(SSIMMetric(spatial_dims=2, data_range=1.0, reduction="mean")(r, ref).mean())
    return psnr, ssim


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def load_data(quick: bool, slices: int):
    from monai_diffusion.data import load_arrays, prepare_dataset

    path = prepare_dataset("/tmp/monai_diffusion_recon_bench", dim=2, subjects=10, seed=0, contrasts=("t1w", "t2w"))
    train = load_arrays(path, "training", keys=("t1w", "t2w"))
    test = load_arrays(path, "test", keys=("t1w", "t2w"))
    n = test["t1w"].shape[0]
    idx = torch.linspace(n * 0.2, n * 0.8, slices).round().long()
    return {c: train[c].double() for c in ("t1w", "t2w")}, {c: test[c][idx].double() for c in ("t1w", "t2w")}


def add_noise(y: torch.Tensor, std: float, g: torch.Generator, mask: torch.Tensor | None = None) -> torch.Tensor:
    if y.is_complex():
        n = torch.complex(
            torch.randn(y.shape, generator=g, dtype=torch.float64),
            torch.randn(y.shape, generator=g, dtype=torch.float64),
        )
        n = n * (std / math.sqrt(2))
        return y + (n * mask if mask is not None else n)
    return y + std * torch.randn(y.shape, generator=g, dtype=y.dtype)


def tuning_slices(train: torch.Tensor, k: int = 2) -> torch.Tensor:
    """The ``k`` training slices with the most brain (pixels above 5% of the maximum), for tuning parameters.

    Slices at the edge of the brain are nearly empty, and a parameter tuned on them does not transfer.
    """
    fraction = (train > 0.05 * train.amax()).flatten(1).double().mean(1)
    return train[torch.sort(torch.topk(fraction, k).indices).values]


def tune_lambda(op, x: torch.Tensor, mask, iters: int) -> float:
    """CS weight with the best PSNR on ``x`` (training slices) for this operator, from a log grid."""
    y = add_noise(op.A(x), NOISE_MRI, torch.Generator().manual_seed(5), mask)
    best = None
    for lam in (1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2):
        p, _ = metrics(l1_wavelet_cs(op, y, lam, iters, lipschitz=1.0), x.float())
        if best is None or p > best[1]:
            best = (lam, p)
    return best[0]


def tune_dps(op, prior, y, x, steps) -> float:
    """DPS step size with the best PSNR of one sample on the given (training) slices, from a small grid."""
    sched = DPMSolverMultistepScheduler(1000)
    model = GaussianPriorDenoiser(prior, sched)
    best = None
    for step in (0.03, 0.1, 0.3, 1.0, 3.0, 10.0):
        gen = torch.Generator().manual_seed(0)
        noise = torch.randn(x.shape, generator=gen, dtype=torch.float64)
        out = DPSSampler(op, sched, step_size=step).sample(model, y, noise, steps, gen)
        p = metrics(out, x.float())[0] if torch.isfinite(out).all() else -1.0
        if best is None or p > best[1]:
            best = (step, p)
    return best[0]


def run_samplers(op, prior, y, x, steps, k, dps_step, tag, rows, repeats, extra):
    sched = DPMSolverMultistepScheduler(1000)
    model = GaussianPriorDenoiser(prior, sched)
    samplers = {
        "score-MRI (hard DC)": DataConsistencySampler(op, sched, mode="hard"),
        "DDNM": NullSpaceSampler(op, sched, mode="hard"),
        "DPS": DPSSampler(op, sched, step_size=dps_step),
        "MCG": MCGSampler(op, sched, step_size=dps_step, mode="hard"),
    }
    names = {"score-MRI (hard DC)": "score-MRI (hard DC)", "DDNM": "DDNM", "DPS": "DPS", "MCG": "MCG"}
    if tag == "ct":
        samplers.pop("MCG")
        samplers.pop("score-MRI (hard DC)")
    for name, s in samplers.items():
        gen = torch.Generator().manual_seed(0)
        (mean, _), sec = timed(
            lambda s=s, gen=gen: s.sample_moments(model, y, k, tuple(x.shape[1:]), steps, gen, dtype=torch.float64),
            repeats,
        )
        # one sample = the first draw: re-run a single sample for its metric would double the cost, so the mean of
        # K draws is the reported estimate and the per-slice time is for all K draws
        p, q = metrics(mean, x.float())
        rows.append(
            dict(extra, method=f"{names.get(name, name)} (mean of {k})", psnr=p, ssim=q, sec_per_slice=sec / x.shape[0])
        )


def mri_section(train, test, quick, args):
    rows = []
    shape = tuple(test["t1w"].shape[2:])
    cs_iters = 40 if quick else 100
    priors = {c: StationaryGaussianPrior.fit(train[c]) for c in train}
    maps = synthetic_coil_maps(shape, 4).to(torch.complex128)
    rs = (4, 8)
    coil_settings = ("single", "multi")
    # CS weight and DPS step: tuned per configuration (coils, mask type, R) on T1w training slices, with a mask
    # drawn from its own seed; the same values serve both contrasts
    xt = tuning_slices(train["t1w"])
    lam, args.dps_step = {}, {}
    for coils in coil_settings:
        for mtype in ("random", "equispaced"):
            for r in rs:
                tmask = (random_mask if mtype == "random" else equispaced_mask)(shape, r, CENTER, seed=123)
                top = MRIOperator(tmask, maps if coils == "multi" else None, real_image=True, cg_iters=6)
                key = f"{coils}/{mtype}/R{r}"
                lam[key] = tune_lambda(top, xt, tmask, cs_iters)
                yt = add_noise(top.A(xt), NOISE_MRI, torch.Generator().manual_seed(5), tmask)
                args.dps_step[key] = tune_dps(top, priors["t1w"], yt, xt, args.steps)
    print(f"tuned on training slices: CS lambda {lam}, DPS step {args.dps_step}", flush=True)
    for contrast in ("t1w", "t2w"):
        x = test[contrast]
        for coils in coil_settings:
            for mtype in ("random", "equispaced"):
                for r in rs:
                    if quick and coils == "multi" and (contrast == "t2w" or mtype == "equispaced"):
                        continue
                    fn = random_mask if mtype == "random" else equispaced_mask
                    mask = fn(shape, r, CENTER, seed=7)
                    op = MRIOperator(mask, maps if coils == "multi" else None, real_image=True, cg_iters=6)
                    g = torch.Generator().manual_seed(11)
                    y = add_noise(op.A(x), NOISE_MRI, g, mask)
                    extra = dict(
                        task="mri",
                        contrast=contrast,
                        coils=coils,
                        mask=mtype,
                        R=r,
                        R_achieved=round(acceleration_of(mask), 2),
                    )
                    rec, sec = timed(lambda op=op, y=y: zero_filled(op, y), args.repeats)
                    rows.append(
                        dict(
                            extra,
                            method="zero-filled",
                            **dict(zip(("psnr", "ssim"), metrics(rec, x.float()))),
                            sec_per_slice=sec / x.shape[0],
                        )
                    )
                    key = f"{coils}/{mtype}/R{r}"  # the tuned CS lambda and DPS step of this configuration
                    rec, sec = timed(lambda op=op, y=y, k=key: l1_wavelet_cs(op, y, lam[k], cs_iters, lipschitz=1.0), 1)
                    rows.append(
                        dict(
                            extra,
                            method=f"L1-wavelet CS ({cs_iters} it)",
                            **dict(zip(("psnr", "ssim"), metrics(rec, x.float()))),
                            sec_per_slice=sec / x.shape[0],
                        )
                    )
                    prior = priors[contrast]
                    if coils == "single":
                        rec, sec = timed(
                            lambda prior=prior, y=y, mask=mask: prior.mri_posterior(y, mask, NOISE_MRI)[0], args.repeats
                        )
                    else:
                        rec, sec = timed(lambda prior=prior, op=op, y=y: prior.map_estimate(op, y, NOISE_MRI, 50), 1)
                    rows.append(
                        dict(
                            extra,
                            method="Gaussian MMSE",
                            **dict(zip(("psnr", "ssim"), metrics(rec, x.float()))),
                            sec_per_slice=sec / x.shape[0],
                        )
                    )
                    run_samplers(op, prior, y, x, args.steps, args.samples, args.dps_step[key], "mri", rows, 1, extra)
                    print(f"  done {contrast} {coils} {mtype} R={r}", flush=True)
    return rows, lam


def ct_section(train, test, args):
    rows = []
    n = test["t1w"].shape[-1]
    c = torch.arange(n) - n // 2
    circle = ((c[:, None] ** 2 + c[None, :] ** 2) <= (n // 2 - 1) ** 2).double()
    x = test["t1w"] * circle
    op = ParallelBeamCT(n, args.views, cg_iters=10)
    y = add_noise(op.A(x), NOISE_CT, torch.Generator().manual_seed(3))
    extra = dict(task="ct", contrast="t1w", views=args.views)
    rec, sec = timed(lambda: filtered_back_projection(op, y), args.repeats)
    rows.append(
        dict(
            extra, method="FBP", **dict(zip(("psnr", "ssim"), metrics(rec, x.float()))), sec_per_slice=sec / x.shape[0]
        )
    )
    prior = StationaryGaussianPrior.fit(train["t1w"] * circle)
    xt = tuning_slices(train["t1w"]) * circle
    args.dps_step_ct = tune_dps(
        op, prior, add_noise(op.A(xt), NOISE_CT, torch.Generator().manual_seed(4)), xt, args.steps
    )
    rec, sec = timed(lambda: prior.map_estimate(op, y, NOISE_CT, 50), 1)
    rows.append(
        dict(
            extra,
            method="Gaussian MMSE (CG)",
            **dict(zip(("psnr", "ssim"), metrics(rec, x.float()))),
            sec_per_slice=sec / x.shape[0],
        )
    )
    run_samplers(op, prior, y, x, args.steps, args.samples, args.dps_step_ct, "ct", rows, 1, extra)
    return rows


def exact_section(args):
    """Posterior samplers vs the analytic Gaussian posterior (16x16, synthetic power-law prior)."""
    n = 16
    freqs = torch.meshgrid(torch.fft.fftfreq(n), torch.fft.fftfreq(n), indexing="ij")
    f2 = torch.fft.fftshift(freqs[0] ** 2 + freqs[1] ** 2)
    power = (1.0 / (0.02 + f2)).double()[None]
    prior = StationaryGaussianPrior(torch.full((1, n, n), 0.3, dtype=torch.float64), 0.05 * power / power.mean())
    mask = torch.zeros(n, n)
    mask[:, [0, 3, 6, 7, 8, 9, 12, 13]] = 1
    op = MRIOperator(mask, real_image=True)
    x = prior.sample(1, torch.Generator().manual_seed(0))
    rows = []
    k = 128 if args.quick else 512
    for noise in (0.0, 0.05):
        y = op.A(x)
        if noise > 0:
            y = add_noise(y, noise, torch.Generator().manual_seed(2), mask)
        mean_t, _, std_t = prior.mri_posterior(y, mask, noise)
        sched = DPMSolverMultistepScheduler(1000)
        model = GaussianPriorDenoiser(prior, sched)
        mode = "hard" if noise == 0 else "soft"
        w = 1.0 / noise**2 if noise > 0 else 1.0
        samplers = {
            f"score-MRI ({mode} DC)": DataConsistencySampler(op, sched, mode=mode, weight=w),
            f"DDNM ({mode})": NullSpaceSampler(op, sched, mode=mode, weight=w),
            "DPS (step 1)": DPSSampler(op, sched, 1.0),
            f"MCG ({mode})": MCGSampler(op, sched, 1.0, mode=mode, weight=w),
        }
        for name, s in samplers.items():
            m, sd = s.sample_moments(model, y, k, (1, n, n), 50, torch.Generator().manual_seed(1), dtype=torch.float64)
            rows.append(
                dict(
                    noise_std=noise,
                    sampler=name,
                    samples=k,
                    mean_gap=float(((m - mean_t) ** 2).mean().sqrt() / std_t.mean()),
                    mc_floor=1 / math.sqrt(k),
                    var_ratio=float((sd**2).mean() / std_t.mean() ** 2),
                )
            )
    return rows


def print_table(rows, keys):
    widths = {k: max(len(k), *(len(fmt(r.get(k))) for r in rows)) for k in keys}
    print(" | ".join(k.ljust(widths[k]) for k in keys))
    print("-|-".join("-" * widths[k] for k in keys))
    for r in rows:
        print(" | ".join(fmt(r.get(k)).ljust(widths[k]) for k in keys))


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return "" if v is None else str(v)


def main(args: argparse.Namespace | None = None):
    args = parse_args() if args is None else args
    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}", flush=True)
    args.slices = 2 if args.quick else 4
    args.steps = 20 if args.quick else 30
    args.samples = 2 if args.quick else 4
    args.dps_step = {}
    args.dps_step_ct = 0.05
    args.views = 30
    t0 = time.time()
    train, test = load_data(args.quick, args.slices)
    print(f"data: {train['t1w'].shape[0]} training slices, {test['t1w'].shape[0]} test slices per contrast", flush=True)
    mri, lam = mri_section(train, test, args.quick, args)
    ct = ct_section(train, test, args)
    exact = exact_section(args)
    print(
        f"\nMRI (noise {NOISE_MRI}, centre {CENTER}, CS lambda {lam}, DPS step {args.dps_step}, tuned on training slices)"
    )
    print_table(mri, ["contrast", "coils", "mask", "R", "R_achieved", "method", "psnr", "ssim", "sec_per_slice"])
    print(
        f"\nSparse-view CT ({args.views} views, noise {NOISE_CT}, DPS step {args.dps_step_ct} tuned on training slices)"
    )
    print_table(ct, ["views", "method", "psnr", "ssim", "sec_per_slice"])
    print("\nExact Gaussian posterior gap (16x16, DPM-Solver++ 50 steps)")
    print_table(exact, ["noise_std", "sampler", "samples", "mean_gap", "mc_floor", "var_ratio"])
    total = time.time() - t0
    print(
        f"\ntotal {total:.0f} s on {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                dict(
                    mri=mri,
                    ct=ct,
                    exact=exact,
                    cs_lambda=lam,
                    dps_step=args.dps_step,
                    dps_step_ct=args.dps_step_ct,
                    quick=args.quick,
                    seconds=total,
                    torch=torch.__version__,
                    threads=torch.get_num_threads(),
                ),
                f,
                indent=1,
            )


if __name__ == "__main__":
    main(ARGS)
