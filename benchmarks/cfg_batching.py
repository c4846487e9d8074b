"""Classifier-free guidance: one call on a doubled batch (``batched=True``) or two calls, against an unguided step.

Uses the 2D generation bundle's trained latent UNet (3 x 16 x 16 latents) and, for a pixel-space case, a
``DiffusionModelUNet`` of the size in ``../shared/TRAINING_NOTES.md`` (channels 32-64-64, 64 x 64 images, random
weights: timing does not depend on them). For each batch size and thread count it times an unguided network call,
a batched guided call and a two-call guided call, interleaved, several repeats, and prints the median cost of each
guided variant relative to the unguided call.

    python benchmarks/cfg_batching.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64])
    args = parser.parse_args()

    import torch
    from monai.bundle import ConfigParser
    from monai.networks.nets import DiffusionModelUNet

    from monai_diffusion.bundle import find_root
    from monai_diffusion.inferers import ClassifierFreeGuidance, NullCondition

    root = find_root("brain_generation")
    cfg = ConfigParser()
    cfg.read_config(f"{root}/configs/inference.json")
    cfg.update({"bundle_root": root, "device": "$torch.device('cpu')"})
    nets = {
        "latent UNet 3x16x16 (bundle)": (cfg.get_parsed_content("network"), (3, 16, 16), 5),
        "pixel UNet 1x64x64": (
            DiffusionModelUNet(
                spatial_dims=2,
                in_channels=1,
                out_channels=1,
                channels=(32, 64, 64),
                attention_levels=(False, False, True),
                num_res_blocks=1,
                num_head_channels=32,
                num_class_embeds=3,
            ).eval(),
            (1, 64, 64),
            3,
        ),
    }
    print("| network | batch | threads | batched CFG / unguided | two-call CFG / unguided | faster |")
    print("|---|---|---|---|---|---|")
    for name, (net, shape, classes) in nets.items():
        null = NullCondition(class_label=classes - 1)
        guided = {b: ClassifierFreeGuidance(net, 3.0, null, batched=b) for b in (True, False)}
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                x = torch.randn(batch, *shape)
                t = torch.full((batch,), 500)
                labels = torch.zeros(batch, dtype=torch.long)
                cond = {"class_label": labels}
                calls = {
                    "plain": lambda net=net, x=x, t=t, labels=labels: net(x, t, class_labels=labels),
                    "batched": lambda g=guided[True], x=x, t=t, cond=cond: g(x, t, cond),
                    "two": lambda g=guided[False], x=x, t=t, cond=cond: g(x, t, cond),
                }
                times: dict[str, list[float]] = {k: [] for k in calls}
                with torch.no_grad():
                    for f in calls.values():
                        f()  # warm-up
                    for _ in range(args.repeats):
                        for k, f in calls.items():
                            t0 = time.perf_counter()
                            f()
                            times[k].append(time.perf_counter() - t0)
                med = {k: statistics.median(v) for k, v in times.items()}
                rb, rt = med["batched"] / med["plain"], med["two"] / med["plain"]
                print(
                    f"| {name} | {batch} | {torch.get_num_threads()} | {rb:.2f}x | {rt:.2f}x | {'batched' if rb < rt else 'two calls'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
