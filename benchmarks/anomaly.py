"""Choose the anomaly-detection bundle's settings on the validation split, and time the detectors.

With the trained prior (``bundles/brain_prior``) and the autoencoder baseline (``bundles/brain_anomaly``), computes
every detector's maps on the *validation* split (the test split is kept for the model card) and prints pixel AUPRC,
best Dice, image AUROC and wall time: AnoDDPM partial noising over start times and noise types (Gaussian,
simplex), DDIM encode/decode over encoding depths, the autoencoder and intensity baselines. Also the median filter
size. Prints markdown tables; ``--json PATH`` saves everything.

    OMP_NUM_THREADS=1 python benchmarks/anomaly.py            # full validation split, FLAIR, T2w, T1w
    OMP_NUM_THREADS=1 python benchmarks/anomaly.py --quick    # 48 images, FLAIR only
"""

from __future__ import annotations

import argparse
import json
import os
import time

START_TIMES = (100, 250, 400, 600)
DDIM_DEPTHS = (250, 500)
MEDIAN = (1, 3, 5, 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contrasts", nargs="+", default=["flair", "t2w", "t1w"])
    parser.add_argument("--steps", type=int, default=10, help="reverse-process evaluations")
    parser.add_argument("--limit", type=int, default=None, help="validation images per contrast")
    parser.add_argument("--json", default=None)
    parser.add_argument("--quick", action="store_true", help="48 images, FLAIR, two start times")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    args = parser.parse_args()

    import torch
    from monai.bundle import ConfigParser

    from monai_diffusion.apps.anomaly import (
        AutoencoderDetector,
        DDIMEncodeDecodeDetector,
        IntensityDetector,
        PartialNoisingDetector,
        anomaly_items,
        load_anomaly_data,
        score_maps,
    )
    from monai_diffusion.apps.anomaly.detectors import postprocess_map
    from monai_diffusion.apps.anomaly.evaluation import compute_maps
    from monai_diffusion.apps.prior import load_prior
    from monai_diffusion.bundle import find_root

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    contrasts = ["flair"] if args.quick else args.contrasts
    limit = 48 if args.quick else args.limit
    starts = (100, 250) if args.quick else START_TIMES
    prior = load_prior("brain_prior")
    root = find_root("brain_anomaly")
    cfg = ConfigParser()
    cfg.read_config([f"{root}/configs/inference.json", f"{root}/configs/evaluate.json"])
    cfg.update({"bundle_root": root, "device": "$torch.device('cpu')", "progress": False, "prior": prior})
    datalist = cfg.get_parsed_content("datalist")
    detectors = {}
    for t in starts:
        for noise in ("gaussian", "simplex"):
            detectors[f"AnoDDPM {noise} t*={t}"] = PartialNoisingDetector(prior, t, args.steps, noise)
    for depth in () if args.quick else DDIM_DEPTHS:
        detectors[f"DDIM encode/decode L={depth}"] = DDIMEncodeDecodeDetector(prior, depth, args.steps)
    detectors["autoencoder"] = AutoencoderDetector(cfg.get_parsed_content("autoencoder"))
    detectors["intensity"] = IntensityDetector()
    rows = []
    print("| contrast | detector | median | AUPRC | best Dice | image AUROC | wall s |")
    print("|---|---|---|---|---|---|---|")
    for contrast in contrasts:
        data = load_anomaly_data(anomaly_items(datalist, "validation", contrast, 800, limit))
        for name, det in detectors.items():
            if name == "intensity" and contrast == "t1w":
                continue  # T1w lesions are dark: intensity thresholding does not apply
            t0 = time.perf_counter()
            det.median_kernel = 1
            raw = compute_maps(det, data, seed=0)["map"]
            wall = time.perf_counter() - t0
            for k in MEDIAN if not args.quick else (1, 5):
                maps = raw if k == 1 else postprocess_map(raw, data["brain"] > 0, k)
                m = score_maps(maps, data)
                rows.append({"contrast": contrast, "detector": name, "median": k, "wall_s": wall, **m})
                print(
                    f"| {contrast} | {name} | {k} | {m.get('auprc', float('nan')):.3f} | "
                    f"{m.get('best_dice', float('nan')):.3f} | {m.get('image_auroc', float('nan')):.3f} | {wall:.1f} |",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
