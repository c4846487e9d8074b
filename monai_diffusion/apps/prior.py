"""A trained diffusion prior of healthy images, shared by bundles: loading, checks and the partial reverse process.

The ``brain_prior`` bundle trains a pixel-space DDPM of healthy brain slices with the contrast as class label.
The anomaly-detection and denoising bundles do not copy its weights: their configs call
:func:`load_prior` on the prior bundle's folder, which builds the network and the sampler from that bundle's own
``configs/inference.json`` (ids ``network_def`` and ``sampler``) and loads ``models/model.pt`` after checking its
sha256 against that bundle's metadata.

Both uses start the reverse process part-way: from a partially noised image (AnoDDPM), from a DDIM encoding
(Wolleb et al.) or from the noisy image itself at the matching noise level (denoising). :meth:`DiffusionPrior.reverse`
runs DDIM (``eta`` 0: deterministic, 1: ancestral) on an evenly spaced grid from the start time to 0 through
:meth:`monai_diffusion.inferers.DiffusionInferer.sample`; :meth:`DiffusionPrior.encode` is the matching DDIM inversion.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from monai_diffusion.inferers.diffusion import DiffusionInferer
from monai_diffusion.networks.schedulers.process import marginal_coefficients

__all__ = ["DiffusionPrior", "load_prior", "prior_network_def", "noise_to_signal", "sample_prior", "prior_report"]


def noise_to_signal(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """``sqrt((1 - abar_t) / abar_t)`` per training timestep: the standard deviation of the noise in
    ``x_t / sqrt(abar_t) = x_0 + noise``, i.e. the Gaussian noise level (in the model's intensity units) that time
    ``t`` corresponds to."""
    abar = alphas_cumprod.double()
    return ((1.0 - abar) / abar).sqrt()


@dataclass
class DiffusionPrior:
    """A diffusion network trained on healthy images, with its sampler and the contrasts it knows.

    Attributes:
        network: epsilon-prediction network called as ``network(x, t, class_labels=...)``.
        sampler: a :class:`~monai_diffusion.networks.schedulers.DDIMScheduler` with the training schedule.
        contrasts: contrast names in class-id order (empty: an unconditional network).
        spatial_shape: the spatial size the network was trained on (inputs of another size are refused).
    """

    network: nn.Module
    sampler: object
    contrasts: tuple[str, ...]
    spatial_shape: tuple[int, ...]

    @property
    def dim(self) -> int:
        return len(self.spatial_shape)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.sampler.num_train_timesteps)  # type: ignore[attr-defined]

    def class_labels(self, contrast: str | int | Sequence[str | int] | torch.Tensor, batch: int) -> torch.Tensor | None:
        """Class ids for a batch: one contrast (name or id) for every item, or one per item.

        Raises:
            ValueError: a contrast the prior was not trained on, or a wrong number of labels.
        """
        if not self.contrasts:
            return None
        device = next(self.network.parameters()).device
        if isinstance(contrast, torch.Tensor):
            values: list = contrast.reshape(-1).tolist()
        elif isinstance(contrast, (str, int)):
            values = [contrast] * batch
        else:
            values = list(contrast)
        if len(values) != batch:
            raise ValueError(f"got {len(values)} contrast labels for a batch of {batch}")
        ids = []
        for v in values:
            if isinstance(v, str):
                if v not in self.contrasts:
                    raise ValueError(f"the prior was trained on the contrasts {list(self.contrasts)}, not {v!r}")
                ids.append(self.contrasts.index(v))
            else:
                if not 0 <= int(v) < len(self.contrasts):
                    raise ValueError(
                        f"contrast id {int(v)} is outside the prior's classes 0..{len(self.contrasts) - 1} "
                        f"({list(self.contrasts)})"
                    )
                ids.append(int(v))
        return torch.tensor(ids, dtype=torch.long, device=device)

    def check_image(self, image: torch.Tensor, name: str = "image") -> torch.Tensor:
        """Refuse inputs the network cannot take: wrong rank or size, one channel expected, non-finite values.

        Raises:
            ValueError: naming ``name`` and what was expected.
        """
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
        expected = (1, *self.spatial_shape)
        if image.ndim != self.dim + 2 or tuple(image.shape[1:]) != expected:
            raise ValueError(
                f"{name} must have shape (B, {', '.join(map(str, expected))}) for this {self.dim}D prior, "
                f"got {tuple(image.shape)}"
            )
        if image.shape[0] == 0:
            raise ValueError(f"{name} is an empty batch")
        if not torch.isfinite(image).all():
            raise ValueError(f"{name} holds NaN or infinite values")
        return image

    def timestep_for_noise(self, noise_std: torch.Tensor | float) -> torch.Tensor:
        """The training timestep whose noise level (:func:`noise_to_signal`) is nearest to ``noise_std``.

        Raises:
            ValueError: a level below the schedule's first step or above its last (the schedule does not cover it).
        """
        nts = noise_to_signal(self.sampler.alphas_cumprod.cpu())  # type: ignore[attr-defined]
        std = torch.as_tensor(noise_std, dtype=torch.float64).reshape(-1).cpu()
        if not torch.isfinite(std).all():
            raise ValueError(f"noise levels must be finite, got {std.tolist()}")
        low, high = float(nts[0]), float(nts[-1])
        bad = [round(float(s), 5) for s in std if not low / 2 <= float(s) <= high]
        if bad:
            raise ValueError(
                f"noise level(s) {bad} (in the model's units) are outside what the schedule covers "
                f"[{low / 2:.4g}, {high:.4g}]"
            )
        return (nts[None, :] - std[:, None]).abs().argmin(1)

    def _grid(self, start: int, num_steps: int) -> torch.Tensor:
        if not 0 < int(start) < self.num_train_timesteps:
            raise ValueError(f"start timestep must be in [1, {self.num_train_timesteps - 1}], got {start}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        grid = torch.linspace(float(start), 0.0, min(int(num_steps), int(start)) + 1)[:-1].round()
        return torch.unique(grid).flip(0)

    def reverse(
        self,
        x_start: torch.Tensor,
        start_timestep: int,
        num_steps: int,
        contrast: str | int | Sequence[str | int] | torch.Tensor = 0,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Run DDIM from the state ``x_start`` at ``start_timestep`` down to a clean image in ``num_steps`` steps.

        The grid is ``start, ..., > 0`` evenly spaced (integer times); the last step goes to ``abar = 1``.

        Args:
            x_start: the state at ``start_timestep`` (model units, ``(B, 1, *spatial)``).
            start_timestep: the training time of ``x_start``.
            num_steps: network evaluations.
            contrast: the class label(s).
            eta: 0 deterministic DDIM, 1 ancestral (DDPM-like) sampling.
            generator: randomness of ``eta > 0``.
            progress: show a progress bar.
        """
        self.check_image(x_start, "x_start")
        self.sampler.set_timesteps(timesteps=self._grid(start_timestep, num_steps), device=x_start.device)  # type: ignore[attr-defined]
        labels = self.class_labels(contrast, x_start.shape[0])
        inferer = DiffusionInferer(self.sampler, condition_mode="class_label")
        return inferer.sample(  # type: ignore[return-value]
            x_start,
            self.network,
            conditioning=labels,
            progress=progress,
            generator=generator,
            step_kwargs={"eta": float(eta)},
        )

    def posterior(
        self,
        bind_batch: Callable[[slice], tuple[Any, torch.Tensor]],
        num_images: int,
        num_samples: int,
        num_steps: int,
        scheduler,
        contrast: str | int | Sequence[str | int] | torch.Tensor = 0,
        batch_size: int = 16,
        generator: torch.Generator | None = None,
        step_kwargs: dict | None = None,
        progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``num_samples`` posterior samples per image of an inverse problem, through the one sampling loop.

        Rows are sample-index major (row ``k * num_images + i`` is sample ``k`` of image ``i``) and run in batches of
        ``batch_size`` rows; ``bind_batch(rows)`` returns the posterior method (e.g. an ``MCGSampler``) and the
        measurement of those rows in model units. Each batch starts from fresh noise drawn from ``generator`` and runs
        ``DiffusionInferer.sample(noise, method.bind(network, y), scheduler, ...)``.

        Returns:
            the mean and (for ``num_samples >= 2``, else ``None``) the per-pixel standard deviation of the samples,
            on the [0, 1] scale, unclipped, on the CPU.
        """
        from tqdm.auto import tqdm

        labels = self.class_labels(contrast, num_images)
        labels = labels.repeat(num_samples) if labels is not None else None
        device = next(self.network.parameters()).device
        inferer = DiffusionInferer(scheduler, condition_mode="class_label")
        total = num_images * num_samples
        outs = []
        for start in tqdm(range(0, total, batch_size), desc="posterior", disable=not progress):
            rows = slice(start, start + batch_size)
            method, y = bind_batch(rows)
            noise = torch.randn((y.shape[0], 1, *self.spatial_shape), generator=generator).to(device)
            out = inferer.sample(
                noise,
                method.bind(self.network, y),
                scheduler,
                conditioning=labels[rows] if labels is not None else None,
                num_inference_steps=num_steps,
                generator=generator,
                step_kwargs=step_kwargs,
            )
            outs.append(out.detach().float().cpu())  # type: ignore[union-attr]
        samples = ((torch.cat(outs) + 1.0) / 2.0).reshape(num_samples, num_images, *outs[0].shape[1:])
        return samples.mean(0), (samples.std(0) if num_samples > 1 else None)

    def encode(
        self,
        image: torch.Tensor,
        end_timestep: int,
        num_steps: int,
        contrast: str | int | Sequence[str | int] | torch.Tensor = 0,
        progress: bool = False,
    ) -> torch.Tensor:
        """Deterministic DDIM encoding of clean images up to ``end_timestep`` on the grid :meth:`reverse` uses."""
        self.check_image(image)
        self.sampler.set_timesteps(timesteps=self._grid(end_timestep, num_steps), device=image.device)  # type: ignore[attr-defined]
        labels = self.class_labels(contrast, image.shape[0])
        inferer = DiffusionInferer(self.sampler, condition_mode="class_label")
        return inferer.ddim_invert(image, self.network, conditioning=labels, progress=progress)  # type: ignore[return-value]

    def add_noise(self, image: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """``alpha_t x + sigma_t noise`` (``sqrt(abar_t)``, ``sqrt(1 - abar_t)``) at one training time."""
        alpha, sigma = marginal_coefficients(self.sampler, int(timestep))
        return (alpha * image.double() + sigma * noise.double()).to(image.dtype)


def _prior_config(bundle: str | os.PathLike, config: str | Sequence[str]):
    from monai.bundle import ConfigParser

    from monai_diffusion.bundle.weights import find_root

    root = Path(bundle) if Path(bundle).is_dir() else Path(find_root(str(bundle)))
    parser = ConfigParser()
    files = [config] if isinstance(config, str) else list(config)
    parser.read_config([str(root / f) for f in files])
    parser["bundle_root"] = str(root)
    return root, parser


def prior_network_def(
    bundle: str | os.PathLike = "brain_prior", config: str | Sequence[str] = "configs/inference.json"
) -> nn.Module:
    """The prior bundle's network, built from its config without weights (for ``verify_net_in_out`` in the bundles
    that use the prior)."""
    return _prior_config(bundle, config)[1].get_parsed_content("network_def", instantiate=True)


def load_prior(
    bundle: str | os.PathLike = "brain_prior",
    device: str | torch.device = "cpu",
    weights: str = "models/model.pt",
    config: str | Sequence[str] = "configs/inference.json",
) -> DiffusionPrior:
    """Build a prior bundle's network and sampler from its config and load its hash-checked weights.

    Args:
        bundle: the prior bundle's folder, or its name (found with :func:`monai_diffusion.bundle.find_root`).
        device: where the network goes.
        weights: the weights file, relative to the bundle.
        config: the config holding ``network_def``, ``sampler``, ``contrasts``, ``dim`` and ``size`` (or a list of
            configs read in order, e.g. ``["configs/inference.json", "configs/inference_3d.json"]``).

    Raises:
        FileNotFoundError: no such bundle, config or weights file (train the prior bundle first).
        monai_diffusion.bundle.WeightsHashError: the weights do not match the recorded hash.
    """
    from monai_diffusion.bundle.weights import load_weights

    root, parser = _prior_config(bundle, config)
    network = parser.get_parsed_content("network_def", instantiate=True)
    sampler = parser.get_parsed_content("sampler", instantiate=True)
    contrasts = tuple(parser.get_parsed_content("contrasts")) if "contrasts" in parser else ()
    dim, size = int(parser.get_parsed_content("dim")), int(parser.get_parsed_content("size"))
    load_weights(network, root / weights, bundle_root=root)
    network = network.to(torch.device(device)).eval()
    for p in network.parameters():
        p.requires_grad_(False)
    return DiffusionPrior(network=network, sampler=sampler, contrasts=contrasts, spatial_shape=(size,) * dim)


def sample_prior(
    prior: DiffusionPrior,
    per_contrast: int = 8,
    num_steps: int = 50,
    output_dir: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = False,
) -> torch.Tensor:
    """Draw ``per_contrast`` images of every contrast from pure noise (DDIM, ``num_steps`` evaluations); with
    ``output_dir``, write them as NIfTI ([0, 1]) and a PNG montage (one row per contrast).

    Returns:
        ``(n_contrasts * per_contrast, 1, *spatial)`` samples in [-1, 1].
    """
    if int(per_contrast) < 1:
        raise ValueError(f"per_contrast must be >= 1, got {per_contrast}")
    n_classes = max(1, len(prior.contrasts))
    labels = torch.arange(n_classes).repeat_interleave(int(per_contrast))
    device = next(prior.network.parameters()).device
    generator = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((len(labels), 1, *prior.spatial_shape), generator=generator).to(device)
    top = prior.num_train_timesteps - 1
    samples = prior.reverse(noise, top, num_steps, labels.to(device), eta=0.0, progress=progress).cpu()
    if output_dir is not None:
        from monai_diffusion.apps.generation.pipeline import save_samples

        names = list(prior.contrasts) or ["image"]
        files = save_samples(samples, labels, output_dir, names, prefix="prior")
        print(f"wrote {len(files['nifti'])} samples and {files['montage']}")
    return samples


def prior_report(
    prior: DiffusionPrior,
    datalist: str | os.PathLike | Sequence[dict],
    output_dir: str | os.PathLike,
    per_contrast: int = 8,
    num_steps: int = 50,
    timesteps: Sequence[int] = (50, 150, 300, 500),
    section: str = "test",
    source: str = "{contrast}_clean",
    min_brain_voxels: int = 800,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Samples of every contrast plus a held-out check of the prior: the noise-prediction error
    ``mean((eps_hat - eps)^2)`` at several times on images of healthy subjects and on lesion images of the same
    split (the prior was trained on healthy subjects only, so lesion images should score worse). Writes
    ``metrics.json`` (``table``, ``notes``, ``figures``) and the montage to ``output_dir``.
    """
    import json

    from monai_diffusion.apps.generation.data import contrast_items
    from monai_diffusion.apps.generation.pipeline import format_table, load_reference

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sample_prior(prior, per_contrast, num_steps, out, seed=seed, progress=progress)
    device = next(prior.network.parameters()).device
    contrasts = list(prior.contrasts) or ["t1w"]

    def _items(healthy_only: bool) -> list[dict]:
        try:
            return contrast_items(
                datalist, section, contrasts, min_brain_voxels, healthy_only=healthy_only, limit=limit, source=source
            )
        except ValueError:  # e.g. a split without healthy subjects
            return []

    groups = {
        "healthy subjects": _items(True),
        "lesion images": [it for it in _items(False) if not it.get("healthy", True) and it.get("lesion") is not None],
    }
    rows, results = [], {}
    generator = torch.Generator().manual_seed(seed)
    for name, items in groups.items():
        if not items:
            continue
        images, labels = load_reference(items)
        if name == "lesion images":  # keep only the images that hold lesion pixels
            from monai.transforms import LoadImage

            keep = [bool(LoadImage(image_only=True)(it["lesion"]).sum() > 0) for it in items]
            images, labels = images[torch.tensor(keep)], labels[torch.tensor(keep)]
            if not len(images):
                continue
        errors = []
        for t in timesteps:
            noise = torch.randn(images.shape, generator=generator)
            total = 0.0
            for start in range(0, len(images), 64):
                x = images[start : start + 64].to(device)
                n = noise[start : start + 64].to(device)
                x_t = prior.add_noise(x, n, int(t))
                tt = torch.full((len(x),), int(t), device=device, dtype=torch.long)
                lab = labels[start : start + 64].to(device) if prior.contrasts else None
                with torch.no_grad():
                    eps = prior.network(x_t, tt, class_labels=lab)
                total += float(((eps.float() - n) ** 2).mean(dim=tuple(range(1, x.ndim))).sum())
            errors.append(total / len(images))
        results[name] = {"images": len(images), "eps_mse": dict(zip(map(str, timesteps), errors))}
        rows.append([name, len(images), *[round(e, 5) for e in errors]])
    columns = ["images", "n", *[f"eps MSE t={t}" for t in timesteps]]
    metrics = {
        "table": {"columns": columns, "rows": rows},
        "notes": f"{section} split; noise-prediction error of the prior (lower is better) on noiseless renderings.",
        "figures": [
            {"title": f"prior samples (rows {contrasts}), DDIM {num_steps} steps", "path": "prior_montage.png"}
        ],
        "groups": results,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(format_table(columns, rows))
    return metrics
