"""Training recipes on MONAI engines: (a) a diffusion model, (b) a first-stage autoencoder for latent diffusion.

Both return a configured ``monai.engines.SupervisedTrainer``; call ``trainer.run()``. With ``checkpoint_dir`` they
save network, optimiser(s), EMA and engine state every ``save_interval`` iterations and at the end of the run
(MONAI ``CheckpointSaver``, as :class:`~monai_diffusion.engines.checkpoints.ResumableCheckpointSaver`: no final
checkpoint of an iteration cut off mid-step or of a run that trained nothing, and no more than ``n_saved`` files in
the folder across resumed runs), and resume from the newest checkpoint there (MONAI ``CheckpointLoader``), so an
interrupted run continues where it stopped. With ``config`` every checkpoint also records how to rebuild the network
(and scheduler), which ``monai-diffusion sample`` reads. They run on CPU and CUDA (``device``) and on the embedded data
set (:func:`brainsim_loader`), a MONAI datalist of NIfTI/DICOM files (:func:`datalist_loader`) or any MONAI
``DataLoader`` of dicts; a loader that yields no batch, and a batch with no items, are refused with a ``ValueError``.

* Diffusion: the loss of Ho et al. (2020, Eq. 14) for the scheduler's prediction type, with optional condition
  dropout for classifier-free guidance, Min-SNR weighting and an EMA of the weights.
* Regression (:func:`regression_trainer`): a network mapping one key of the batch to another with an L1 or MSE
  loss, for the supervised baselines of the bundles (a denoising UNet trained on noisy/clean pairs, a plain
  autoencoder trained to reconstruct its input).
* Autoencoder (``AutoencoderKL`` or ``VQVAE``; Rombach et al., 2022, Sec. 3 and App. G; Esser et al., 2021):
  L1 + KL (or the VQ codebook loss) + a spectral loss + a patch-adversarial loss with MONAI's
  ``PatchDiscriminator`` and ``PatchAdversarialLoss`` (least squares), the discriminator switched on after
  ``adversarial_start`` iterations. A perceptual loss can be passed in; MONAI's ``PerceptualLoss`` downloads
  weights at run time, so none is used by default.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.transforms import MapTransform
from monai.utils import CommonKeys as Keys
from torch import nn

from monai_diffusion.engines.checkpoints import (
    RecordedConfig,
    ResumableCheckpointSaver,
    check_resume_config,
    latest_checkpoint,
    readable_checkpoint,
)
from monai_diffusion.engines.ema import ExponentialMovingAverage
from monai_diffusion.engines.prepare_batch import DiffusionPrepareBatch, PairPrepareBatch
from monai_diffusion.inferers.conditioning import NullCondition
from monai_diffusion.inferers.diffusion import DiffusionInferer
from monai_diffusion.losses.spectral import SpectralLoss

__all__ = [
    "brainsim_loader",
    "datalist_loader",
    "SpatialDimsd",
    "latest_checkpoint",
    "readable_checkpoint",
    "diffusion_trainer",
    "AutoencoderStep",
    "AutocastInferer",
    "attach_grad_clipping",
    "autoencoder_trainer",
    "regression_trainer",
]


def brainsim_loader(
    root_dir: str | Path,
    keys: Sequence[str] = ("t1w",),
    dim: int = 2,
    size: int | None = None,
    subjects: int | None = None,
    section: str = "training",
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    progress: bool = False,
):
    """A ``DataLoader`` over the embedded data set (built on first use), images scaled to [-1, 1] per item.

    Items keep ``keys`` and ``"healthy"`` (bool, usable as a class label); the data are a simulation from a real
    template, see ``docs/data.md``.
    """
    from monai.data import DataLoader
    from monai.transforms import ScaleIntensityd, SelectItemsd

    from monai_diffusion.data import BrainSimDataset, load_transforms

    keys = list(keys)
    contrasts = [k for k in keys if k not in ("label", "lesion")]
    transform = load_transforms(
        keys=keys,
        extra=[ScaleIntensityd(keys=contrasts, minv=-1.0, maxv=1.0), SelectItemsd(keys=[*keys, "healthy"])],
    )
    ds = BrainSimDataset(
        root_dir,
        section,
        transform=transform,
        dim=dim,
        size=size,
        subjects=subjects,
        seed=seed,
        contrasts=tuple(contrasts) or ("t1w",),
        progress=progress,
    )
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def _first_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (MONAI wraps transform errors in ``RuntimeError("applying transform")``)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return err


class SpatialDimsd(MapTransform):
    """Make images ``(C, *spatial)`` with ``spatial_dims`` spatial axes: a trailing axis of length 1 is dropped (2D
    slices stored as ``H x W x 1`` volumes); any other mismatch is a ``ValueError`` naming the shape.

    Args:
        keys: item keys of the images.
        spatial_dims: 2 or 3.
    """

    def __init__(self, keys: Sequence[str], spatial_dims: int) -> None:
        super().__init__(keys)
        self.spatial_dims = int(spatial_dims)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            img = out[key]
            spatial = tuple(img.shape[1:])
            if len(spatial) == self.spatial_dims + 1 and spatial[-1] == 1:
                img = img[..., 0]
            elif len(spatial) != self.spatial_dims:
                raise ValueError(
                    f"{key!r} has spatial shape {spatial} (channel first): expected a {self.spatial_dims}D image; "
                    f"train with {len(spatial)}D (--dim {len(spatial)}) or give {self.spatial_dims}D images"
                )
            out[key] = img
        return out


def datalist_loader(
    datalist: str | Path,
    keys: Sequence[str] = ("image",),
    dim: int = 2,
    size: int | None = None,
    section: str = "training",
    batch_size: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    reader: str | None = None,
    extra_keys: Sequence[str] = ("healthy",),
    progress: bool = False,
):
    """A ``DataLoader`` over a MONAI datalist of NIfTI or DICOM images, read as the embedded data are read.

    ``datalist`` is a JSON file in MONAI's (Decathlon) datalist format, ``{"training": [{"image": "a.nii.gz"}, ...]}``
    with paths relative to the file's folder (or absolute); a prepared folder of the embedded data set holds one
    (``datalist.json``, keys ``t1w``, ``t2w``, ...). The loading chain is the embedded data's,
    :func:`monai_diffusion.data.load_transforms` (MONAI ``LoadImaged`` + ``EnsureChannelFirstd``), then
    :class:`SpatialDimsd`, MONAI ``Resized`` to ``size`` voxels per side (when given), ``ScaleIntensityd`` to [-1, 1]
    per image and ``EnsureTyped`` to plain tensors (file headers need not agree), cached in memory (MONAI
    ``CacheDataset``).

    Args:
        datalist: the datalist JSON.
        keys: item keys of the images to load (the first one is what the recipes train on).
        dim: spatial dimensions of the images, 2 or 3.
        size: resample every image to ``size`` voxels per side (``None``: keep the files' size, which must then
            agree between items).
        section: the datalist section.
        batch_size, shuffle, seed, num_workers: of the ``DataLoader`` (``seed`` drives the shuffling).
        reader: force a MONAI reader, e.g. ``"PydicomReader"`` (default: MONAI's choice for each file).
        extra_keys: other item keys kept when present (``"healthy"``: a class label for conditional training).
        progress: a progress bar while caching.

    Raises:
        FileNotFoundError: no such datalist.
        ValueError: a bad ``dim``/``size``, an empty section, items without ``keys``, or a first item that cannot be
            loaded (the message names it and the reason).
    """
    from monai.data import CacheDataset, DataLoader
    from monai.transforms import EnsureTyped, Resized, ScaleIntensityd, SelectItemsd

    from monai_diffusion.data import load_datalist, load_transforms

    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    if size is not None and size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    keys = list(keys)
    try:
        items = load_datalist(datalist, section)
    except (KeyError, ValueError) as err:
        raise ValueError(f"datalist {str(datalist)!r} has no usable section {section!r}: {err}") from None
    if not items:
        raise ValueError(f"datalist {str(datalist)!r}: section {section!r} holds no items")
    for index, item in enumerate(items):
        if not isinstance(item, Mapping) or any(k not in item for k in keys):
            have = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise ValueError(
                f"datalist {str(datalist)!r}: item {index} of {section!r} needs the key(s) {keys} (image paths); "
                f"it has {have}"
            )
    extra: list = [SpatialDimsd(keys, dim)]
    if size is not None:
        extra.append(Resized(keys=keys, spatial_size=[size] * dim))
    extra += [
        ScaleIntensityd(keys=keys, minv=-1.0, maxv=1.0),
        # plain tensors: headers of users' files differ (2D and 3D NIfTI, DICOM) and their metadata would not collate
        EnsureTyped(keys=keys, data_type="tensor", track_meta=False),
        SelectItemsd(keys=[*keys, *extra_keys], allow_missing_keys=True),
    ]
    transform = load_transforms(keys=keys, extra=extra, reader=reader)
    try:
        transform(dict(items[0]))
    except Exception as err:
        cause = _first_cause(err)
        raise ValueError(
            f"datalist {str(datalist)!r}: cannot load item 0 ({ {k: items[0][k] for k in keys} }): "
            f"{type(cause).__name__}: {cause}"
        ) from err
    ds = CacheDataset(items, transform=transform, num_workers=1, progress=progress)
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def _unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (or the network itself)."""
    return network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network


def _check_loader(train_loader, epoch_length: int | None) -> None:
    """Refuse a loader that yields no batch, before ignite fails on it with a message about ``epoch_length``."""
    try:
        batches = len(train_loader)
    except TypeError:  # an iterable without a length: checked batch by batch by the prepare_batch
        return
    if batches == 0:
        try:
            held = f" (its data set holds {len(train_loader.dataset)} item(s))"
        except (AttributeError, TypeError):
            held = ""
        raise ValueError(
            f"the training data loader yields 0 batches{held}; give a data set with items, or a batch size no "
            "larger than the data set when drop_last is set"
        )


def _checkpoint_handlers(
    objects: Mapping[str, Any],
    checkpoint_dir: str | Path | None,
    save_interval: int,
    resume: bool,
    device,
    config: Mapping[str, Any] | None = None,
    n_saved: int | None = 1,
) -> list:
    if checkpoint_dir is None:
        return []
    from monai.handlers import CheckpointLoader

    handlers: list = []
    last = latest_checkpoint(checkpoint_dir) if resume else None
    if last is not None:
        if config is not None:
            check_resume_config(last, config)
        handlers.append(CheckpointLoader(load_path=str(last), load_dict=dict(objects), map_location=device))
    save_dict = dict(objects)
    if config is not None:
        save_dict["config"] = RecordedConfig(config)
    handlers.append(ResumableCheckpointSaver(checkpoint_dir, save_dict, save_interval=save_interval, n_saved=n_saved))
    return handlers


def diffusion_trainer(
    network: nn.Module,
    scheduler,
    train_loader,
    max_epochs: int,
    device: str | torch.device = "cpu",
    lr: float = 1e-4,
    epoch_length: int | None = None,
    image_key: str = "image",
    condition: str | Mapping[str, str] | None = None,
    condition_mode: str = "crossattn",
    null_condition: NullCondition | None = None,
    condition_dropout: float = 0.0,
    loss_weighting: Callable | None = None,
    encoder: Callable | None = None,
    ema_decay: float | None = 0.999,
    checkpoint_dir: str | Path | None = None,
    save_interval: int = 100,
    resume: bool = True,
    n_saved: int | None = 1,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    train_handlers: Sequence | None = None,
    amp_dtype: str | torch.dtype | None = None,
    grad_clip_norm: float | None = None,
) -> tuple[SupervisedTrainer, ExponentialMovingAverage | None]:
    """A ``SupervisedTrainer`` for a diffusion network (2D or 3D, pixel or latent space).

    Args:
        network: the denoiser, e.g. MONAI's ``DiffusionModelUNet``.
        scheduler: the forward process (our schedulers or MONAI's).
        train_loader: batches of dicts holding ``image_key`` (and the condition keys).
        max_epochs, epoch_length: as for ``SupervisedTrainer``.
        device: ``"cpu"`` or ``"cuda"``.
        lr: AdamW learning rate.
        image_key, condition, encoder, loss_weighting: see :class:`DiffusionPrepareBatch`.
        condition_mode, null_condition, condition_dropout: see :class:`DiffusionInferer`; a learned null
            embedding is optimised with the network.
        ema_decay: decay of the weight EMA (``None``: no EMA).
        checkpoint_dir, save_interval, resume: checkpointing (see module docs).
        n_saved: checkpoints kept in ``checkpoint_dir``, counting those of earlier runs (``None``: all).
        config: a JSON-like dict recorded in every checkpoint as ``config`` (see
            :mod:`~monai_diffusion.engines.checkpoints`), e.g. the ``network`` and ``scheduler`` arguments that
            ``monai-diffusion sample`` rebuilds; resuming from a checkpoint that records another ``kind``,
            ``network`` or ``scheduler`` is refused.
        seed: seeds the noise/timestep generator.
        train_handlers: extra handlers.
        amp_dtype: run the network's forward under ``torch.autocast`` with this dtype (``"bfloat16"`` on CPU or
            CUDA, ``"float16"`` on CUDA); the loss is computed in float32. MONAI's ``amp=True`` autocasts on CUDA
            only, hence this option. ``None``: float32.
        grad_clip_norm: clip the gradients' global norm to this value before each optimiser step (MONAI's
            ``IterationEvents.BACKWARD_COMPLETED``); ``None``: no clipping. Latent-diffusion training on CPU hit a
            gradient of 7e21 and NaN weights after ~200 iterations without it (see ``docs/bundles.md``).

    Returns:
        ``(trainer, ema)``; sample with ``ema.averaged`` (or the network when ``ema_decay`` is None).
    """
    _check_loader(train_loader, epoch_length)
    device = torch.device(device)
    network = network.to(device)
    base = _unwrap(network)  # EMA and checkpoints hold the plain module under DistributedDataParallel
    params = list(base.parameters())
    if null_condition is not None:
        null_condition = null_condition.to(device)
        params += list(null_condition.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr)
    inferer: Any = DiffusionInferer(scheduler, condition_mode, null_condition, condition_dropout)
    if amp_dtype is not None:
        inferer = AutocastInferer(inferer, device.type, amp_dtype)
    prepare = DiffusionPrepareBatch(
        scheduler,
        image_key=image_key,
        condition=condition,
        encoder=encoder,
        loss_weighting=loss_weighting,
        generator=torch.Generator().manual_seed(seed),
    )
    ema = ExponentialMovingAverage(base, ema_decay) if ema_decay is not None else None
    objects: dict[str, Any] = {"network": base, "optimizer": optimizer}
    if ema is not None:
        objects["ema"] = ema
    if null_condition is not None and len(list(null_condition.parameters())) > 0:
        objects["null_condition"] = null_condition
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=optimizer,
        loss_function=nn.MSELoss(),
        inferer=inferer,
        prepare_batch=prepare,
        epoch_length=epoch_length,
        train_handlers=list(train_handlers or []),
        decollate=False,
    )
    objects["trainer"] = trainer
    if grad_clip_norm is not None:
        attach_grad_clipping(trainer, params, grad_clip_norm)
    if ema is not None:  # before the checkpoint saver, so a checkpoint holds the EMA of the same iteration
        ema.attach(trainer, base)
    for handler in _checkpoint_handlers(objects, checkpoint_dir, save_interval, resume, device, config, n_saved):
        handler.attach(trainer)
    return trainer, ema


def regression_trainer(
    network: nn.Module,
    train_loader,
    max_epochs: int,
    input_key: str = "image",
    target_key: str = "target",
    loss: str = "mse",
    device: str | torch.device = "cpu",
    lr: float = 2e-4,
    epoch_length: int | None = None,
    checkpoint_dir: str | Path | None = None,
    save_interval: int = 100,
    resume: bool = True,
    n_saved: int | None = 1,
    config: Mapping[str, Any] | None = None,
    train_handlers: Sequence | None = None,
    amp_dtype: str | torch.dtype | None = None,
    grad_clip_norm: float | None = None,
) -> SupervisedTrainer:
    """A ``SupervisedTrainer`` that fits ``network(batch[input_key])`` to ``batch[target_key]`` (2D or 3D).

    Args:
        network: any image-to-image network (MONAI ``BasicUNet``, ``AutoEncoder``, ...).
        train_loader: batches of dicts holding both keys.
        max_epochs, epoch_length: as for ``SupervisedTrainer``.
        input_key, target_key: the batch keys (equal keys train an autoencoder).
        loss: ``"mse"`` or ``"l1"``.
        device, lr: device and AdamW learning rate.
        checkpoint_dir, save_interval, resume: checkpointing (see module docs).
        n_saved: checkpoints kept in ``checkpoint_dir``, counting those of earlier runs (``None``: all).
        config: a JSON-like dict recorded in every checkpoint as ``config`` (see
            :mod:`~monai_diffusion.engines.checkpoints`), e.g. the ``network`` and ``scheduler`` arguments that
            ``monai-diffusion sample`` rebuilds; resuming from a checkpoint that records another ``kind``,
            ``network`` or ``scheduler`` is refused.
        train_handlers: extra handlers.
        amp_dtype, grad_clip_norm: as for :func:`diffusion_trainer`.

    Raises:
        ValueError: an unknown ``loss``.
    """
    losses = {"mse": nn.MSELoss, "l1": nn.L1Loss}
    if loss not in losses:
        raise ValueError(f"loss must be one of {sorted(losses)}, got {loss!r}")
    from monai.inferers import SimpleInferer

    _check_loader(train_loader, epoch_length)
    device = torch.device(device)
    network = network.to(device)
    base = _unwrap(network)
    optimizer = torch.optim.AdamW(base.parameters(), lr=lr)
    inferer: Any = SimpleInferer()
    if amp_dtype is not None:
        inferer = AutocastInferer(inferer, device.type, amp_dtype)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=network,
        optimizer=optimizer,
        loss_function=losses[loss](),
        inferer=inferer,
        prepare_batch=PairPrepareBatch(input_key, target_key),
        epoch_length=epoch_length,
        train_handlers=list(train_handlers or []),
        decollate=False,
    )
    if grad_clip_norm is not None:
        attach_grad_clipping(trainer, list(base.parameters()), grad_clip_norm)
    objects: dict[str, Any] = {"network": base, "optimizer": optimizer, "trainer": trainer}
    for handler in _checkpoint_handlers(objects, checkpoint_dir, save_interval, resume, device, config, n_saved):
        handler.attach(trainer)
    return trainer


class AutocastInferer:
    """Call an inferer under ``torch.autocast(device_type, dtype)`` and return float32 outputs.

    Args:
        inferer: e.g. :class:`DiffusionInferer` (its training ``__call__`` is wrapped).
        device_type: ``"cpu"`` or ``"cuda"``.
        dtype: ``"bfloat16"``, ``"float16"`` or a torch dtype.

    Raises:
        ValueError: a dtype other than bfloat16/float16, or float16 on CPU.
    """

    def __init__(self, inferer: Callable, device_type: str, dtype: str | torch.dtype) -> None:
        dt = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if dt not in (torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be bfloat16 or float16, got {dtype!r}")
        if dt == torch.float16 and device_type == "cpu":
            raise ValueError("float16 autocast is for CUDA; use bfloat16 on CPU")
        self.inferer = inferer
        self.device_type = device_type
        self.dtype = dt

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.inferer(*args, **kwargs)
        return out.float()


def attach_grad_clipping(engine, parameters: Sequence, max_norm: float) -> None:
    """Clip the global gradient norm of ``parameters`` after every backward pass of a MONAI trainer.

    Raises:
        ValueError: a non-positive ``max_norm``.
    """
    from monai.engines.utils import IterationEvents

    if not max_norm > 0:
        raise ValueError(f"grad_clip_norm must be positive, got {max_norm}")
    params = [p for p in parameters if p.requires_grad]

    def _clip(_engine) -> None:
        torch.nn.utils.clip_grad_norm_(params, max_norm)

    engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, _clip)


def _kl_loss(z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) summed over latent elements, averaged over the batch (Kingma & Welling, 2014)."""
    kl = 0.5 * (z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1)
    return kl.flatten(1).sum(1).mean()


class AutoencoderStep:
    """One iteration of autoencoder training, as a ``SupervisedTrainer`` ``iteration_update``.

    Generator: ``loss_fn(recon, x) + kl_weight * KL`` (``AutoencoderKL``) or ``+ vq_weight * codebook loss``
    (``VQVAE``) ``+ spectral_weight * spectral + perceptual_weight * perceptual + adversarial_weight * LSGAN``;
    then one discriminator step on real vs detached reconstructions (once ``adversarial_start`` is reached).

    Args:
        discriminator: e.g. MONAI ``PatchDiscriminator`` (its last output is used as logits), or ``None``.
        d_optimizer: the discriminator's optimiser.
        image_key: batch key of the images.
        kl_weight, vq_weight, spectral_weight, adversarial_weight, perceptual_weight: loss weights.
        adversarial_start: first iteration (1-based) with adversarial terms.
        perceptual_loss: optional callable ``(recon, x) -> loss`` (not used by default: MONAI's needs downloads).
    """

    def __init__(
        self,
        discriminator: nn.Module | None = None,
        d_optimizer: torch.optim.Optimizer | None = None,
        image_key: str = "image",
        kl_weight: float = 1e-6,
        vq_weight: float = 1.0,
        spectral_weight: float = 0.1,
        adversarial_weight: float = 0.01,
        adversarial_start: int = 1,
        perceptual_loss: Callable | None = None,
        perceptual_weight: float = 0.0,
    ) -> None:
        from monai.losses import PatchAdversarialLoss

        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("give both a discriminator and its optimiser, or neither")
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.image_key = image_key
        self.kl_weight = float(kl_weight)
        self.vq_weight = float(vq_weight)
        self.spectral_weight = float(spectral_weight)
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_start = int(adversarial_start)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.spectral = SpectralLoss()
        self.adversarial = PatchAdversarialLoss(criterion="least_squares")

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.discriminator(x.contiguous().float())  # type: ignore[misc]
        return out[-1] if isinstance(out, (list, tuple)) else out

    def __call__(self, engine, batchdata: Mapping[str, Any]) -> dict:
        if self.image_key not in batchdata:
            raise ValueError(f"batch has no key {self.image_key!r}; keys are {sorted(batchdata)}")
        x = torch.as_tensor(batchdata[self.image_key]).to(engine.state.device).float()
        if x.ndim == 0 or x.shape[0] == 0:
            raise ValueError(
                f"empty batch: {self.image_key!r} has shape {tuple(x.shape)}; expected (B, C, *spatial) with B >= 1 "
                "(the data loader yielded a batch without items)"
            )
        ae = engine.network
        ae.train()
        engine.optimizer.zero_grad(set_to_none=True)
        out = ae(x)
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError("expected an AutoencoderKL (recon, z_mu, z_sigma) or VQVAE (recon, vq_loss) output")
        recon = out[0]
        reg = self.kl_weight * _kl_loss(out[1], out[2]) if len(out) == 3 else self.vq_weight * out[1].mean()
        l1 = engine.loss_function(recon, x)
        spectral = self.spectral(recon, x)
        loss = l1 + reg + self.spectral_weight * spectral
        if self.perceptual_loss is not None and self.perceptual_weight > 0:
            loss = loss + self.perceptual_weight * self.perceptual_loss(recon, x)
        adversarial_on = self.discriminator is not None and engine.state.iteration >= self.adversarial_start
        g_adv = torch.zeros((), device=x.device)
        if adversarial_on:
            g_adv = self.adversarial(self._logits(recon), target_is_real=True, for_discriminator=False)
            loss = loss + self.adversarial_weight * g_adv
        loss.backward()
        engine.optimizer.step()
        d_loss = torch.zeros((), device=x.device)
        if adversarial_on:
            self.discriminator.train()  # type: ignore[union-attr]
            self.d_optimizer.zero_grad(set_to_none=True)  # type: ignore[union-attr]
            fake = self.adversarial(self._logits(recon.detach()), target_is_real=False, for_discriminator=True)
            real = self.adversarial(self._logits(x), target_is_real=True, for_discriminator=True)
            d_loss = 0.5 * (fake + real)
            (self.adversarial_weight * d_loss).backward()
            self.d_optimizer.step()  # type: ignore[union-attr]
        return {
            Keys.IMAGE: x,
            Keys.LABEL: x,
            Keys.PRED: recon.detach(),
            Keys.LOSS: loss.detach(),
            "l1": l1.detach(),
            "regulariser": reg.detach(),
            "spectral": spectral.detach(),
            "generator_adversarial": g_adv.detach(),
            "discriminator": d_loss.detach(),
        }


def autoencoder_trainer(
    autoencoder: nn.Module,
    train_loader,
    max_epochs: int,
    discriminator: nn.Module | None = None,
    device: str | torch.device = "cpu",
    lr: float = 1e-4,
    d_lr: float = 5e-4,
    epoch_length: int | None = None,
    image_key: str = "image",
    checkpoint_dir: str | Path | None = None,
    save_interval: int = 100,
    resume: bool = True,
    n_saved: int | None = 1,
    config: Mapping[str, Any] | None = None,
    train_handlers: Sequence | None = None,
    **step_kwargs: Any,
) -> SupervisedTrainer:
    """A ``SupervisedTrainer`` for ``AutoencoderKL`` / ``VQVAE`` with L1 + spectral + patch-adversarial losses.

    Args:
        autoencoder: MONAI ``AutoencoderKL`` or ``VQVAE`` (2D or 3D).
        train_loader: batches of dicts holding ``image_key``.
        max_epochs, epoch_length: as for ``SupervisedTrainer``.
        discriminator: e.g. ``PatchDiscriminator(spatial_dims, channels=32, in_channels=1, num_layers_d=3)``;
            ``None`` trains without the adversarial term.
        device: ``"cpu"`` or ``"cuda"``.
        lr, d_lr: Adam learning rates of the autoencoder and the discriminator.
        checkpoint_dir, save_interval, resume: checkpointing (see module docs).
        n_saved: checkpoints kept in ``checkpoint_dir``, counting those of earlier runs (``None``: all).
        config: a JSON-like dict recorded in every checkpoint as ``config`` (see
            :mod:`~monai_diffusion.engines.checkpoints`), e.g. the ``network`` and ``scheduler`` arguments that
            ``monai-diffusion sample`` rebuilds; resuming from a checkpoint that records another ``kind``,
            ``network`` or ``scheduler`` is refused.
        train_handlers: extra handlers.
        **step_kwargs: loss weights and options of :class:`AutoencoderStep`.
    """
    _check_loader(train_loader, epoch_length)
    device = torch.device(device)
    autoencoder = autoencoder.to(device)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=lr)
    d_optimizer = None
    if discriminator is not None:
        discriminator = discriminator.to(device)
        d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=d_lr)
    step = AutoencoderStep(discriminator, d_optimizer, image_key=image_key, **step_kwargs)
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=max_epochs,
        train_data_loader=train_loader,
        network=autoencoder,
        optimizer=optimizer,
        loss_function=nn.L1Loss(),
        iteration_update=step,
        epoch_length=epoch_length,
        train_handlers=list(train_handlers or []),
        decollate=False,
    )
    objects: dict[str, Any] = {"network": _unwrap(autoencoder), "optimizer": optimizer, "trainer": trainer}
    if discriminator is not None:
        objects["discriminator"] = _unwrap(discriminator)
        objects["d_optimizer"] = d_optimizer
    for handler in _checkpoint_handlers(objects, checkpoint_dir, save_interval, resume, device, config, n_saved):
        handler.attach(trainer)
    return trainer
