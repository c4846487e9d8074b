"""Accelerated single-coil MRI reconstruction with the trained healthy-brain prior, on the validation split.

Ground truth: the noiseless renderings (``<contrast>_clean``, [0, 1]) of validation slices of the embedded data set.
Data: noiseless (or, with ``--noise``, noisy) single-coil Cartesian k-space of the real image,
``MRIOperator(masks, real_image=True)``, one seeded line mask per slice (variable-density Gaussian lines with a fully
sampled centre by default; a mask per slice because with 8-16 lines of 64 the draw alone moves PSNR by dB). Methods,
at equal data:

* zero-filled (``apps.reconstruction.baselines.zero_filled``);
* L1-wavelet CS (``l1_wavelet_cs``, 100 FISTA iterations), wavelet and ``lambda`` tuned on separate validation
  slices;
* posterior sampling with the prior (``load_prior("bundles/brain_prior")``, contrast as class label) through
  ``DiffusionInferer.sample(noise, method.bind(network, y), sampler, num_inference_steps, conditioning=labels)``:
  DDNM (``NullSpaceSampler``, hard), Score-MRI (``DataConsistencySampler``, hard, noise-matched), DPS and MCG
  (step sizes tuned on the tuning slices), with our ``DDIMScheduler`` built on the prior's training schedule
  (checked with ``trained_with``), ``eta`` tuned on the tuning slices, and the mean of several samples of the best
  single-sample method.

The prior works in ``2 x - 1`` units, so the methods get the measurement of the model-unit image,
``y_m = A(2 x - 1) = 2 y - A(1)`` (exact: ``A`` is linear and the constant image's spectrum is the DC sample, which
every mask here measures); reconstructions are mapped back with ``(x_m + 1) / 2``. PSNR/SSIM (``monai_diffusion
.metrics``, data range 1) on images clipped to [0, 1], inside the brain mask and on the whole 64 x 64 image; the
k-space residual ``||A x - y|| / ||y||`` on the unclipped reconstruction; wall time per slice on this machine.

    OMP_NUM_THREADS=1 python benchmarks/mri_reconstruction.py                 # R = 4 and 8, 32 + 8 slices
    OMP_NUM_THREADS=1 python benchmarks/mri_reconstruction.py --quick         # R = 4, 8 + 4 slices, small grids
    OMP_NUM_THREADS=1 python benchmarks/mri_reconstruction.py --out mri.png --json mri.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

CENTER_FRACTION = 0.08
CS_LAMBDAS = (1e-5, 1e-4, 1e-3, 3e-3, 1e-2)
CS_WAVELETS = ("db4", "haar")
ETAS = (0.0, 1.0)
DPS_STEPS = (2.0, 3.0, 5.0)
MCG_STEPS = (0.5, 1.0)
MASKS = ("gaussian", "equispaced", "random", "poisson")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="R = 4 only, 8 + 4 slices, one setting per method")
    parser.add_argument("--accelerations", type=float, nargs="+", default=None, help="default 4 8 (quick: 4)")
    parser.add_argument("--mask", choices=MASKS, default="gaussian", help="line mask (default variable density)")
    parser.add_argument("--eval-per-contrast", type=int, default=None, help="evaluation slices per contrast (8)")
    parser.add_argument("--tune-per-contrast", type=int, default=None, help="tuning slices per contrast (2)")
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (network evaluations) per sample")
    parser.add_argument("--samples", type=int, default=None, help="samples averaged for the best method (4)")
    parser.add_argument("--noise", type=float, default=0.0, help="complex k-space noise std per sample (0: none)")
    parser.add_argument("--batch", type=int, default=8, help="images per network batch")
    parser.add_argument("--seed", type=int, default=0, help="mask, noise and sampler seed")
    parser.add_argument("--bundle", default="bundles/brain_prior", help="the prior bundle's folder")
    parser.add_argument("--data", default="data", help="folder of the prepared embedded data set")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    parser.add_argument("--out", default=None, help="save a PNG figure of examples here")
    parser.add_argument("--json", default=None, help="save all results as JSON here")
    args = parser.parse_args(argv)
    args.accelerations = args.accelerations or ([4.0] if args.quick else [4.0, 8.0])
    args.eval_per_contrast = args.eval_per_contrast or (2 if args.quick else 8)
    args.tune_per_contrast = args.tune_per_contrast or (1 if args.quick else 2)
    args.samples = args.samples or (2 if args.quick else 4)
    if min(args.accelerations) < 1 or args.steps < 1 or args.samples < 1 or args.batch < 1 or args.noise < 0:
        parser.error("accelerations >= 1, steps/samples/batch >= 1 and noise >= 0 are required")
    return args


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def select_slices(items: list[dict], n_contrasts: int, n_eval: int, n_tune: int) -> tuple[list[int], list[int]]:
    """Evenly spaced positions in each contrast's list of slices (shifted per contrast, so that the contrasts show
    other anatomy); tuning positions are spread among them, so both sets span the validation subjects."""
    eval_idx, tune_idx = [], []
    total = n_eval + n_tune
    tune_positions = {int((k + 0.5) * total / n_tune) for k in range(n_tune)} if n_tune else set()
    for c in range(n_contrasts):
        own = [i for i, it in enumerate(items) if int(it["contrast"]) == c]
        for j in range(total):
            index = own[int((j + 0.5 + c / n_contrasts) * len(own) / total) % len(own)]
            (tune_idx if j in tune_positions else eval_idx).append(index)
    return eval_idx, tune_idx


def main(argv=None) -> None:
    args = parse_args(argv)

    import torch
    from monai.bundle import ConfigParser
    from monai.transforms import LoadImage

    from monai_diffusion.apps.denoising.evaluation import load_denoising_data
    from monai_diffusion.apps.generation import embedded_datalist
    from monai_diffusion.apps.generation.data import contrast_items
    from monai_diffusion.apps.prior import load_prior
    from monai_diffusion.apps.reconstruction.baselines import l1_wavelet_cs, zero_filled
    from monai_diffusion.inferers import (
        DataConsistencySampler,
        DiffusionInferer,
        DPSSampler,
        MCGSampler,
        NullSpaceSampler,
    )
    from monai_diffusion.metrics import masked_psnr, masked_ssim
    from monai_diffusion.networks.schedulers import DDIMScheduler
    from monai_diffusion.networks.schedulers.process import check_forward_process
    from monai_diffusion.operators import MRIOperator
    from monai_diffusion.transforms.kspace.masks import acceleration_of, make_mask

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    start_all = time.perf_counter()

    # ---------------------------------------------------------------- prior and its sampler
    prior = load_prior(args.bundle)
    train_cfg = ConfigParser()
    train_cfg.read_config(os.path.join(args.bundle, "configs", "train.json"))
    training_scheduler = train_cfg.get_parsed_content("scheduler", instantiate=True)
    schedule_args = {k: v for k, v in train_cfg.get("scheduler").items() if k != "_target_"}

    def make_sampler(eta: float) -> DDIMScheduler:
        # clip_sample off: a clipped x0 would undo the hard data consistency of the last step
        return DDIMScheduler(**schedule_args, eta=eta, clip_sample=False, trained_with=training_scheduler)

    deviation = max(
        check_forward_process(training_scheduler, make_sampler(0.0)),
        check_forward_process(training_scheduler, prior.sampler),
    )
    print(f"sampler: DDIM on {schedule_args} (forward-process deviation from training: {deviation:.1e})")

    # ---------------------------------------------------------------- data
    contrasts = list(prior.contrasts)
    items = contrast_items(embedded_datalist(args.data, 2, 64), "validation", contrasts, 800, source="{contrast}_clean")
    eval_idx, tune_idx = select_slices(items, len(contrasts), args.eval_per_contrast, args.tune_per_contrast)

    def load(idx: list[int]) -> dict:
        chosen = [items[i] for i in idx]
        data = load_denoising_data(
            [{"clean": it["image"], "brain": it["label"], "contrast": it["contrast"]} for it in chosen]
        )
        lesion = [LoadImage(image_only=True)(it["lesion"]) > 0 if "lesion" in it else None for it in chosen]
        data["lesion_mask"] = torch.stack(
            [torch.zeros(prior.spatial_shape, dtype=torch.bool) if m is None else torch.as_tensor(m) for m in lesion]
        )[:, None]
        data["lesion"] = data["lesion_mask"].flatten(1).any(1)
        data["labels"] = prior.class_labels(data["contrast"], len(chosen))
        return data

    ev, tu = load(eval_idx), load(tune_idx)
    n_eval = len(eval_idx)
    subjects = sorted({items[i]["subject"] for i in eval_idx + tune_idx})
    print(
        f"validation slices: {n_eval} evaluated ({args.eval_per_contrast} per contrast, {int(ev['lesion'].sum())} "
        f"with lesion voxels), {len(tune_idx)} for tuning; subjects {', '.join(subjects)}"
    )

    # ---------------------------------------------------------------- helpers
    def batches(n: int):
        for s in range(0, n, args.batch):
            yield slice(s, s + args.batch)

    def posterior(make_method, data: dict, eta: float, steps: int, repeats: int = 1, seed: int = 0) -> torch.Tensor:
        """Reconstructions in [0, 1] units (unclipped), the mean of ``repeats`` samples per slice: the method built by
        ``make_method(operator)`` for each batch (its slices' masks), bound to the prior and driven by the inferer."""
        sampler = make_sampler(eta)
        inferer = DiffusionInferer(sampler, condition_mode="class_label")
        g = torch.Generator().manual_seed(args.seed * 1000 + seed)
        n = data["ym"].shape[0]
        ys, masks, labels = (
            v.repeat(repeats, *([1] * (v.ndim - 1))) for v in (data["ym"], data["masks"], data["labels"])
        )
        outs = []
        for sl in batches(ys.shape[0]):
            noise = torch.randn((ys[sl].shape[0], 1, *prior.spatial_shape), generator=g)
            method = make_method(MRIOperator(masks[sl], real_image=True))
            out = inferer.sample(
                noise,
                method.bind(prior.network, ys[sl]),
                sampler,
                num_inference_steps=steps,
                conditioning=labels[sl],
                generator=g,
            )
            outs.append(out.float())
        x = torch.cat(outs).reshape(repeats, n, *outs[0].shape[1:]).mean(0)
        return (x + 1.0) / 2.0

    def score(rec: torch.Tensor, data: dict) -> dict:
        clipped, clean, brain = rec.clamp(0, 1), data["clean"], data["brain"]
        ones = torch.ones_like(brain)
        psnr_b = masked_psnr(clipped, clean, brain, 1.0)
        les = data["lesion"]
        y = data["y"]
        resid = (data["op"].A(rec.float()) - y).abs().flatten(1).norm(dim=1) / y.abs().flatten(1).norm(dim=1)
        return {
            "psnr_brain": float(psnr_b.mean()),
            "psnr_brain_sd": float(psnr_b.std()) if len(psnr_b) > 1 else 0.0,
            "ssim_brain": float(masked_ssim(clipped, clean, brain, 1.0).mean()),
            "psnr_image": float(masked_psnr(clipped, clean, ones, 1.0).mean()),
            "ssim_image": float(masked_ssim(clipped, clean, ones, 1.0).mean()),
            "residual": float(resid.mean()),
            "psnr_brain_lesion": float(psnr_b[les].mean()) if les.any() else None,
            "psnr_brain_no_lesion": float(psnr_b[~les].mean()) if (~les).any() else None,
            "psnr_lesion": float(masked_psnr(clipped[les], clean[les], data["lesion_mask"][les], 1.0).mean())
            if les.any()
            else None,
        }

    def tune_psnr(rec: torch.Tensor) -> float:
        return float(masked_psnr(rec.clamp(0, 1), tu["clean"], tu["brain"], 1.0).mean())

    quick = args.quick
    lambdas = (1e-4, 1e-3) if quick else CS_LAMBDAS
    wavelets = ("haar",) if quick else CS_WAVELETS
    etas = (1.0,) if quick else ETAS
    dps_steps = (3.0,) if quick else DPS_STEPS
    mcg_steps = (1.0,) if quick else MCG_STEPS

    results: dict = {
        "settings": {
            "mask": args.mask,
            "center_fraction": CENTER_FRACTION,
            "noise": args.noise,
            "steps": args.steps,
            "samples": args.samples,
            "eval_slices": n_eval,
            "tune_slices": len(tune_idx),
            "threads": torch.get_num_threads(),
        },
        "accelerations": {},
    }
    examples: dict = {}
    pick = torch.tensor([0, n_eval - 1]) if n_eval > 1 else torch.tensor([0])
    ex_slices = [eval_idx[int(i)] for i in pick]

    def one_acceleration(R: float) -> None:
        g_noise = torch.Generator().manual_seed(10_000 + args.seed)

        def measure(data: dict, first_seed: int) -> None:
            """Per-slice masks (seeds ``first_seed + i``), the operator, k-space ``y`` and the model-unit ``ym``."""
            n = data["clean"].shape[0]
            data["masks"] = torch.stack(
                [make_mask(args.mask, prior.spatial_shape, R, CENTER_FRACTION, seed=first_seed + i) for i in range(n)]
            )[:, None]
            op = data["op"] = MRIOperator(data["masks"], real_image=True)
            y = op.A(data["clean"])
            if args.noise > 0:
                eps = torch.complex(torch.randn(y.shape, generator=g_noise), torch.randn(y.shape, generator=g_noise))
                y = y + op.mask * eps * (args.noise / 2**0.5)
            data["y"], data["ym"] = y, 2.0 * y - op.A(torch.ones_like(data["clean"]))

        measure(ev, 100_000 * args.seed)
        measure(tu, 100_000 * args.seed + 50_000)
        achieved = sum(acceleration_of(m) for m in ev["masks"]) / n_eval
        key = f"{R:g}"
        res: dict = {"achieved": achieved, "tuning": {}, "methods": {}}
        _log(f"\n== R = {R:g} (achieved {achieved:.2f}), {args.mask} lines")

        # ---------------- tuning (separate slices, other masks)
        tuning = res["tuning"]
        tuning["cs (wavelet, lambda)"] = {
            (w, lam): tune_psnr(l1_wavelet_cs(tu["op"], tu["y"], lam, wavelet=w)) for w in wavelets for lam in lambdas
        }
        wavelet, lam = max(tuning["cs (wavelet, lambda)"], key=tuning["cs (wavelet, lambda)"].get)
        ddnm, dc = NullSpaceSampler, lambda op: DataConsistencySampler(op, mode="hard")
        tuning["ddnm eta"] = {eta: tune_psnr(posterior(ddnm, tu, eta, args.steps)) for eta in etas}
        eta = max(tuning["ddnm eta"], key=tuning["ddnm eta"].get)
        _log(f"tuned CS {wavelet} lambda {lam:g}, eta {eta:g}")
        tuning["dps step"] = {
            s: tune_psnr(posterior(lambda op, s=s: DPSSampler(op, step_size=s), tu, eta, args.steps)) for s in dps_steps
        }
        dps_step = max(tuning["dps step"], key=tuning["dps step"].get)
        tuning["mcg step"] = {
            s: tune_psnr(posterior(lambda op, s=s: MCGSampler(op, step_size=s), tu, eta, args.steps)) for s in mcg_steps
        }
        mcg_step = max(tuning["mcg step"], key=tuning["mcg step"].get)
        if not quick:  # does doubling the steps pay? (reported, not used)
            tuning["ddnm steps"] = {
                args.steps: tuning["ddnm eta"][eta],
                2 * args.steps: tune_psnr(posterior(ddnm, tu, eta, 2 * args.steps)),
            }
        res["chosen"] = {
            "cs_wavelet": wavelet,
            "cs_lambda": lam,
            "eta": eta,
            "dps_step": dps_step,
            "mcg_step": mcg_step,
        }
        _log(f"tuning: {tuning}")

        # ---------------- evaluation
        recs: dict = {}

        def evaluate(name: str, settings: str, fn) -> None:
            t0 = time.perf_counter()
            rec = fn()
            wall = time.perf_counter() - t0
            entry = score(rec, ev)
            entry.update(settings=settings, s_per_slice=wall / n_eval, wall_s=wall)
            res["methods"][name] = entry
            recs[name] = rec
            _log(f"{name}: {entry['psnr_brain']:.2f} dB brain, {wall:.1f} s")

        evaluate("zero-filled", "", lambda: zero_filled(ev["op"], ev["y"]))
        evaluate(
            "L1-wavelet CS",
            f"{wavelet}, lambda {lam:g}, 100 it",
            lambda: l1_wavelet_cs(ev["op"], ev["y"], lam, wavelet=wavelet),
        )
        diffusion = {
            "DDNM (hard)": (ddnm, ""),
            "Score-MRI DC (hard)": (dc, ""),
            "DPS": (lambda op: DPSSampler(op, step_size=dps_step), f"step {dps_step:g}, "),
            "MCG (hard)": (lambda op: MCGSampler(op, step_size=mcg_step), f"step {mcg_step:g}, "),
        }
        for name, (make_method, extra) in diffusion.items():
            evaluate(
                name,
                f"{extra}DDIM {args.steps}, eta {eta:g}",
                lambda m=make_method: posterior(m, ev, eta, args.steps),
            )
        best = max(diffusion, key=lambda n: res["methods"][n]["psnr_brain"])
        make_method, extra = diffusion[best]
        mean_name = f"{best}, mean of {args.samples}"
        evaluate(
            mean_name,
            f"{extra}DDIM {args.steps}, eta {eta:g}",
            lambda: posterior(make_method, ev, eta, args.steps, repeats=args.samples, seed=1),
        )
        res["best_diffusion"] = mean_name
        results["accelerations"][key] = res
        examples[key] = {
            "ground truth": ev["clean"][pick],
            "zero-filled": recs["zero-filled"][pick],
            "L1-wavelet CS": recs["L1-wavelet CS"][pick],
            mean_name: recs[mean_name][pick],
        }

    for R in args.accelerations:
        one_acceleration(R)

    # ---------------------------------------------------------------- report
    total = time.perf_counter() - start_all
    s = results["settings"]
    print(
        f"\n## Single-coil MRI reconstruction, validation split ({s['eval_slices']} slices: "
        f"{args.eval_per_contrast} per contrast; tuning on {s['tune_slices']} other slices)\n"
    )
    print(
        f"{args.mask} line mask, centre fraction {CENTER_FRACTION}, k-space noise std {args.noise:g}; "
        f"PSNR dB / SSIM on [0, 1]-clipped images; residual ||A x - y|| / ||y||; torch threads "
        f"{s['threads']}\n"
    )
    print(
        "| R (achieved) | method | settings | PSNR brain (sd) | SSIM brain | PSNR image | SSIM image | residual | s / slice |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for key, res in results["accelerations"].items():
        for name, e in res["methods"].items():
            print(
                f"| {key} ({res['achieved']:.2f}) | {name} | {e['settings']} | {e['psnr_brain']:.2f} "
                f"({e['psnr_brain_sd']:.2f}) | {e['ssim_brain']:.3f} | {e['psnr_image']:.2f} | {e['ssim_image']:.3f} "
                f"| {e['residual']:.1e} | {e['s_per_slice']:.3g} |"
            )
    n_les = int(ev["lesion"].sum())
    if 0 < n_les < n_eval:
        print(
            f"\nPSNR in the brain on the {n_les} slices with lesion voxels and the {n_eval - n_les} without, and inside "
            "the lesions (the prior was trained on healthy subjects only):\n"
        )
        print("| R | method | brain, lesion slices | brain, other slices | inside lesions |")
        print("|---|---|---|---|---|")
        for key, res in results["accelerations"].items():
            for name, e in res["methods"].items():
                print(
                    f"| {key} | {name} | {e['psnr_brain_lesion']:.2f} | {e['psnr_brain_no_lesion']:.2f} "
                    f"| {e['psnr_lesion']:.2f} |"
                )
    print("\nTuning (PSNR brain on the tuning slices):\n")
    print("| R | setting | values -> PSNR |")
    print("|---|---|---|")
    for key, res in results["accelerations"].items():
        for what, table in res["tuning"].items():
            values = ", ".join(f"{_fmt(k)}: {v:.2f}" for k, v in table.items())
            print(f"| {key} | {what} | {values} |")
    print(f"\ntotal wall time {total:.0f} s")
    results["total_wall_s"] = total

    if args.out:
        _figure(examples, ex_slices, items, contrasts, args.out)
        print(f"figure: {args.out}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(results), f, indent=2)


def _jsonable(value):
    """Tuning tables keyed by tuples and floats -> string keys."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else _fmt(k): _jsonable(v) for k, v in value.items()}
    return value


def _fmt(key) -> str:
    return " ".join(_fmt(k) for k in key) if isinstance(key, tuple) else key if isinstance(key, str) else f"{key:g}"


def _figure(examples: dict, ex_slices: list[int], items: list[dict], contrasts: list[str], path: str) -> None:
    """One row per (acceleration, example slice): ground truth, zero-filled, CS, best diffusion, then the absolute
    error maps of the three reconstructions (0 to 0.2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(key, j) for key in examples for j in range(len(ex_slices))]
    cols = 7
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.7 * cols, 1.85 * len(rows)), squeeze=False)
    for r, (key, j) in enumerate(rows):
        names = list(examples[key])  # ground truth, zero-filled, CS, the best diffusion method
        gt = examples[key]["ground truth"][j, 0].numpy()
        it = items[ex_slices[j]]
        for c, name in enumerate(names):
            image = examples[key][name][j, 0].clamp(0, 1).numpy()
            title = f"R={key} {contrasts[int(it['contrast'])]} {it['subject']}" if c == 0 else name
            axes[r, c].imshow(image, cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_title(title, fontsize=5)
            if c:
                axes[r, 3 + c].imshow(abs(image - gt), cmap="magma", vmin=0, vmax=0.2)
                axes[r, 3 + c].set_title(f"|error| {name}", fontsize=5)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
