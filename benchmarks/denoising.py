"""Choose the denoising bundle's settings on the validation split, and time the denoisers.

With the trained prior (``bundles/brain_prior``): for each Rician noise level, tunes the non-local-means ``h`` factor
and the total-variation weight factor (scikit-image, noise estimated from the image), and sweeps the diffusion
denoiser's step count, noise-estimate scale and sampler (DDIM vs ancestral, single sample vs mean of samples) on
the *validation* split (the test split is kept for the model card). Prints markdown tables; ``--json PATH`` saves.

    OMP_NUM_THREADS=1 python benchmarks/denoising.py            # 48 validation images
    OMP_NUM_THREADS=1 python benchmarks/denoising.py --quick    # 24 images, fewer settings
"""

from __future__ import annotations

import argparse
import json
import os
import time

SIGMAS = (0.02, 0.05, 0.10)
H_FACTORS = (0.6, 0.8, 1.0, 1.2, 1.5)
TV_FACTORS = (0.25, 0.5, 1.0, 2.0)
SCALES = (1.0, 1.15, 1.3)
STEPS = (2, 5, 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=12, help="validation source items (x4 contrasts)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="6 source items, fewer settings")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    args = parser.parse_args()

    import torch

    from monai_diffusion.apps.denoising import (
        DiffusionDenoiser,
        add_rician_noise,
        denoising_items,
        estimate_noise_sigma,
        nlm_denoise,
        tune_factor,
        tv_denoise,
    )
    from monai_diffusion.apps.denoising.evaluation import load_denoising_data
    from monai_diffusion.apps.generation import embedded_datalist
    from monai_diffusion.apps.prior import load_prior
    from monai_diffusion.metrics import masked_psnr

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    prior = load_prior("brain_prior")
    items = denoising_items(
        embedded_datalist("data", 2, 64), "validation", list(prior.contrasts), 800, 6 if args.quick else args.limit
    )
    data = load_denoising_data(items)
    clean, brain, contrast = data["clean"], data["brain"], data["contrast"]
    print(f"{len(clean)} validation images")
    out: dict = {"images": len(clean), "levels": {}}
    steps_list = (5, 10) if args.quick else STEPS
    scales = (1.0, 1.3) if args.quick else SCALES
    for level, sigma in enumerate(SIGMAS):
        noisy = add_rician_noise(clean, sigma, generator=torch.Generator().manual_seed(1000 + level))
        est = estimate_noise_sigma(noisy)
        res: dict = {
            "estimate_mean": float(est.mean()),
            "noisy_psnr": float(masked_psnr(noisy, clean, brain, 1.0).mean()),
        }
        h, h_table = tune_factor(nlm_denoise, noisy, clean, brain, H_FACTORS)
        w, w_table = tune_factor(tv_denoise, noisy, clean, brain, TV_FACTORS)
        res.update(nlm_h_factor=h, nlm=h_table, tv_weight_factor=w, tv=w_table, diffusion=[])
        print(
            f"\n### sigma {sigma}: noisy {res['noisy_psnr']:.2f} dB, estimate {res['estimate_mean']:.4f}; "
            f"NLM best h {h} ({h_table[h]:.2f} dB), TV best weight {w} ({w_table[w]:.2f} dB)"
        )
        print("| sampler | steps | samples | sigma scale | PSNR dB | wall s |")
        print("|---|---|---|---|---|---|")
        settings = [("DDIM", 0.0, s, 1, c) for s in steps_list for c in scales]
        settings += [("ancestral", 1.0, 10, 1, 1.0), ("ancestral", 1.0, 10, 4, 1.0)]
        for name, eta, steps, samples, scale in settings:
            den = DiffusionDenoiser(prior, steps, eta, samples, sigma_scale=scale)
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(0)
            parts = [
                den(noisy[i : i + 32], contrast[i : i + 32], sigma=est[i : i + 32], generator=g)
                for i in range(0, len(noisy), 32)
            ]
            wall = time.perf_counter() - t0
            psnr = float(masked_psnr(torch.cat(parts), clean, brain, 1.0).mean())
            res["diffusion"].append(
                {
                    "sampler": name,
                    "steps": steps,
                    "samples": samples,
                    "sigma_scale": scale,
                    "psnr": psnr,
                    "wall_s": wall,
                }
            )
            print(f"| {name} | {steps} | {samples} | {scale} | {psnr:.2f} | {wall:.1f} |", flush=True)
        out["levels"][str(sigma)] = res
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
