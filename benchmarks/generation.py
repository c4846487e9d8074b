"""Choose the generation bundle's sampler settings on the validation split, and time sampling.

For the trained bundle (``bundles/<bundle>``), samples ``--per-contrast`` images per contrast for every guidance
scale and sampler/step setting below, and measures them against the *validation* split (the test split is kept for
the final evaluation in the model card): FID/KID with the project's feature network, contrast accuracy, MS-SSIM
diversity, tissue-fraction difference. Also times the diffusion sampler against the baseline (decoding a Gaussian
latent) in the same process. Prints markdown tables; ``--json PATH`` saves everything.

    OMP_NUM_THREADS=1 python benchmarks/generation.py --per-contrast 64
"""

from __future__ import annotations

import argparse
import json
import os
import time

SCALES = (1.0, 1.5, 2.0, 3.0, 5.0)
SAMPLERS = (
    ("DPM-Solver++ 2M", "DPMSolverMultistepScheduler", {}, (10, 25, 50)),
    ("DDIM", "DDIMScheduler", {}, (25, 50)),
    ("UniPC", "UniPCMultistepScheduler", {}, (10, 25)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="brain_generation")
    parser.add_argument("--per-contrast", type=int, default=64)
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="8 samples per contrast, two scales, one sampler")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    args = parser.parse_args()

    import torch
    from monai.bundle import ConfigParser

    from monai_diffusion.apps.generation import contrast_items
    from monai_diffusion.apps.generation.pipeline import (
        contrast_labels,
        evaluate_samples,
        load_reference,
        reference_statistics,
    )
    from monai_diffusion.bundle import find_root
    from monai_diffusion.networks import schedulers

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    per = 8 if args.quick else args.per_contrast
    scales = (1.0, 3.0) if args.quick else SCALES
    samplers = SAMPLERS[:1] if args.quick else SAMPLERS
    root = find_root(args.bundle)
    cfg = ConfigParser()
    cfg.read_config(f"{root}/configs/inference.json")
    cfg.update({"bundle_root": root, "device": "$torch.device('cpu')", "progress": False})
    gen = cfg.get_parsed_content("generator")
    contrasts = cfg["contrasts"]
    items = contrast_items(cfg.get_parsed_content("datalist"), "validation", contrasts, cfg["min_brain_voxels"])
    reference = reference_statistics(*load_reference(items))  # the real side once for every row
    labels = contrast_labels(contrasts, per, contrasts)
    base_kwargs = {k: cfg["scheduler"][k] for k in ("num_train_timesteps", "schedule", "beta_start", "beta_end")}
    rows: list[dict] = []

    def measure(name: str, steps: int, scale: float) -> None:
        gen.guidance_scale, gen.num_inference_steps = scale, steps
        t0 = time.perf_counter()
        samples = gen(labels, generator=torch.Generator().manual_seed(0))
        wall = time.perf_counter() - t0
        m = evaluate_samples(samples, labels, reference, contrasts=contrasts, pairs=100)
        rows.append({"sampler": name, "steps": steps, "scale": scale, "nfe": gen.nfe(), "wall_s": wall, **m})
        print(
            f"| {name} | {steps} | {scale:g} | {gen.nfe()} | {m['fid']:.3f} | {1e3 * m['kid_mean']:.2f} | "
            f"{m['contrast_accuracy']:.3f} | {sum(m['ms_ssim'].values()) / len(m['ms_ssim']):.3f} | "
            f"{sum(m['tissue_fractions']['abs_difference']) / 3:.4f} | {wall:.1f} |",
            flush=True,
        )

    print(f"\n{len(labels)} samples per row against {len(reference['images'])} validation images")
    print("| sampler | steps | guidance | NFE | FID | KID x1e3 | contrast acc. | MS-SSIM | tissue diff | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scale in scales:  # guidance sweep at the default sampler and step count
        measure("DPM-Solver++ 2M", 25, scale)
    best = min((r for r in rows), key=lambda r: r["fid"])["scale"]
    for name, cls, kw, steps_list in samplers:  # sampler sweep at the best scale
        gen.scheduler = getattr(schedulers, cls)(**base_kwargs, **kw)
        gen.inferer.scheduler = gen.scheduler
        for steps in steps_list:
            if name.startswith("DPM") and steps == 25:
                continue
            measure(name, steps, best)
    real_ms = sum(rows[0]["ms_ssim_real"].values()) / len(rows[0]["ms_ssim_real"])
    print(
        f"\nbest guidance scale on validation (FID, 25 DPM-Solver++ steps): {best:g}; MS-SSIM of real pairs {real_ms:.3f}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"per_contrast": per, "rows": rows, "best_scale": best}, f, indent=2)


if __name__ == "__main__":
    main()
