"""Does bfloat16 autocast train the generation bundle's latent diffusion model as well as float32, and how much faster?

Builds the bundle's own components from ``bundles/<bundle>/configs/train.json`` (data, trained first stage, latent
UNet, scheduler), then trains the latent UNet twice from the same initial weights on the same batches, noise and
timesteps: once in float32, once under bfloat16 autocast (``diffusion_trainer(amp_dtype="bfloat16")``). Every
``--eval-every`` iterations both networks (raw weights, evaluated in float32) are scored on a fixed held-out set:
validation latents with fixed timesteps and noise, so the two columns are directly comparable. Prints the
validation-loss table and the time per iteration of each (ratio of medians over the run).

    OMP_NUM_THREADS=1 python benchmarks/mixed_precision.py --iterations 1200 --eval-every 200
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time


def _attach_timing(trainer, net, name: str, times: list, curve: list, val_loss, every: int) -> None:
    """Time every iteration and score the network on the held-out set every ``every`` iterations."""
    from ignite.engine import Events

    @trainer.on(Events.ITERATION_STARTED)
    def _t0(engine):
        engine.state._t0 = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _t1(engine):
        times.append(time.perf_counter() - engine.state._t0)
        if engine.state.iteration % every == 0:
            curve.append((engine.state.iteration, val_loss(net)))
            print(f"{name}: iteration {engine.state.iteration}, validation loss {curve[-1][1]:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="brain_generation")
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--autoencoder", default=None, help="first-stage weights (default: the bundle's models/)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="40 iterations, for checking the script")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a loaded 2-core machine)")
    args = parser.parse_args()
    if args.quick:
        args.iterations, args.eval_every = 40, 20

    import torch
    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset

    from monai_diffusion.bundle import find_root, load_weights
    from monai_diffusion.engines import diffusion_trainer

    torch.set_num_threads(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    root = find_root(args.bundle)
    cfg = ConfigParser()
    cfg.read_config(f"{root}/configs/train.json")
    cfg["bundle_root"] = root
    cfg["progress"] = False
    autoencoder = cfg.get_parsed_content("autoencoder_def")
    path = args.autoencoder or f"{root}/models/autoencoder.pt"
    if path.endswith("model_info.json") or "checkpoint" in os.path.basename(path):
        autoencoder.load_state_dict(torch.load(path, weights_only=True)["network"])
    else:
        load_weights(autoencoder, path)
    encoder = cfg.get_parsed_content("latent_encoder", instantiate=True)
    encoder.autoencoder.load_state_dict(autoencoder.state_dict())
    print("scale factor", encoder.calibrate(cfg.get_parsed_content("calibration_loader")))

    from monai_diffusion.apps.generation import contrast_items, generation_transforms
    from monai_diffusion.inferers.utils import marginal_coefficients, training_target

    val_items = contrast_items(
        cfg.get_parsed_content("datalist"), "validation", cfg["contrasts"], cfg["min_brain_voxels"]
    )
    val_loader = DataLoader(Dataset(val_items, generation_transforms()), batch_size=64)
    g = torch.Generator().manual_seed(123)
    val = []
    scheduler = cfg.get_parsed_content("scheduler")
    for batch in val_loader:
        z = encoder(batch["image"].float())
        t = torch.randint(0, 1000, (z.shape[0],), generator=g)
        n = torch.randn(z.shape, generator=g)
        a, s = marginal_coefficients(scheduler, t)
        val.append((scheduler.add_noise(z, n, t), t, batch["contrast"].long(), training_target(z, n, a, s, "epsilon")))

    @torch.no_grad()
    def val_loss(net) -> float:
        net.eval()
        total, count = 0.0, 0
        for x, t, c, target in val:
            total += float(((net(x, t, class_labels=c) - target) ** 2).sum())
            count += target.numel()
        net.train()
        return total / count

    torch.manual_seed(0)
    template = copy.deepcopy(cfg.get_parsed_content("network_def"))  # the config caches one instance: copy it
    init = {k: v.detach().clone() for k, v in template.state_dict().items()}
    results: dict = {"iterations": args.iterations, "threads": torch.get_num_threads(), "runs": {}}
    for name, amp in (("float32", None), ("bfloat16", "bfloat16")):
        net = copy.deepcopy(template)
        net.load_state_dict(init)
        loader = DataLoader(
            cfg.get_parsed_content("train_dataset"),
            batch_size=cfg["diffusion_batch_size"],
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )
        null = cfg.get_parsed_content("null_condition", instantiate=True)
        trainer, _ = diffusion_trainer(
            net,
            scheduler,
            loader,
            max_epochs=1,
            epoch_length=args.iterations,
            lr=2e-4,
            condition={"class_label": "contrast"},
            condition_mode="class_label",
            null_condition=null,
            condition_dropout=0.15,
            encoder=encoder,
            ema_decay=None,
            seed=0,
            amp_dtype=amp,
            grad_clip_norm=cfg["grad_clip_norm"],
        )
        times: list[float] = []
        curve: list[tuple[int, float]] = [(0, val_loss(net))]
        _attach_timing(trainer, net, name, times, curve, val_loss, args.eval_every)
        trainer.run()
        results["runs"][name] = {"median_iteration_s": statistics.median(times), "validation_loss": curve}
    f32, bf = results["runs"]["float32"], results["runs"]["bfloat16"]
    print("\n| iteration | val. loss float32 | val. loss bfloat16 |\n|---|---|---|")
    for (it, a), (_, b) in zip(f32["validation_loss"], bf["validation_loss"]):
        print(f"| {it} | {a:.4f} | {b:.4f} |")
    ratio = f32["median_iteration_s"] / bf["median_iteration_s"]
    print(
        f"\nmedian s/iteration: float32 {f32['median_iteration_s']:.3f}, bfloat16 {bf['median_iteration_s']:.3f} "
        f"(bfloat16 {ratio:.2f}x faster), {torch.get_num_threads()} thread(s)"
    )
    results["speedup"] = ratio
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
