"""The diffusion inferer: the training forward, sampling (full or from a partially noised image) and DDIM inversion.

It drives any scheduler that follows MONAI's contract (``timesteps``, ``init_noise_sigma``, ``set_timesteps``,
``step(model_output, t, x, generator=...) -> (x_prev, x0_hat)``, ``add_noise``): MONAI's ``DDPMScheduler`` and
``DDIMScheduler`` as well as every sampler of :mod:`monai_diffusion.networks.schedulers`. Compared with MONAI's
``DiffusionInferer`` it passes class labels, combines concatenation with cross-attention, starts from a given
timestep (SDEdit, Meng et al., 2022; AnoDDPM partial diffusion, Wyatt et al., 2022), encodes images by
deterministic DDIM inversion (Song et al., 2021, Eq. 13 run forward; used by Wolleb et al., 2022), saves
intermediates by step index, forwards a generator and step keywords (e.g. ``eta``) to the scheduler, and does
not hard-code ``torch.no_grad`` so that guidance wrappers may differentiate a classifier.

Step hooks. A model (wrapper) given to :meth:`DiffusionInferer.sample` may define two methods, which the loop
calls; posterior samplers use them to add a measurement (:mod:`monai_diffusion.inferers.posterior`):

* ``begin_sampling(scheduler, timesteps, generator)``: once, before the first step, with the scheduler that runs,
  its full ``timesteps`` and the generator;
* ``after_step(i, t, x_prev, x0_hat) -> x_prev``: after ``scheduler.step`` at ``timesteps[i]``; its return value is
  the state the loop continues from (and what callbacks and intermediates see).

Plain networks and guidance wrappers define neither, and the loop is then MONAI's loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer

from monai_diffusion.inferers.conditioning import (
    NullCondition,
    as_condition_dict,
    drop_condition,
    is_spade,
    validate_condition,
)
from monai_diffusion.inferers.guidance import ClassifierFreeGuidance, call_model
from monai_diffusion.inferers.utils import timestep_batch
from monai_diffusion.networks.schedulers.process import (
    PredictionType,
    as_batch_coefficient,
    marginal_coefficients,
    prediction_type_of,
)
from monai_diffusion.utils.deprecation import renamed_keyword

__all__ = ["DiffusionInferer", "start_index", "monai_null_condition"]

StepCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def check_model_input(model: Any, x: torch.Tensor, name: str = "input_noise") -> None:
    """Refuse, before the first network call, what would fail deep inside it or silently give garbage.

    Checks that ``x`` is a finite floating tensor ``(B, C, *spatial)`` with ``B >= 1`` and, when ``model`` is (or
    wraps) an ``nn.Module`` with convolutions, that ``x`` has the network's number of spatial dimensions and its
    weights' dtype (outside autocast).

    Raises:
        ValueError: naming ``name`` and what was expected.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        kind = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {kind}")
    if x.ndim < 3 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (B, C, *spatial), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    if not isinstance(model, torch.nn.Module):
        return
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)), None)
    if conv is not None:
        dims = conv.weight.ndim - 2
        if x.ndim - 2 != dims:
            raise ValueError(
                f"{name} has {x.ndim - 2} spatial dimensions (shape {tuple(x.shape)}) but the network is {dims}D"
            )
    unet: Any = next((m for m in model.modules() if hasattr(m, "block_out_channels")), None)
    if unet is not None:  # MONAI's DiffusionModelUNet halves the grid once per level after the first
        levels = len(unet.block_out_channels)
        factor = 2 ** (levels - 1)
        if any(int(n) % factor for n in x.shape[2:]):
            raise ValueError(
                f"{name} has spatial size {tuple(x.shape[2:])}, but this UNet's {levels} levels "
                f"need every side divisible by {factor}"
            )
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    autocast = torch.is_autocast_enabled(x.device.type) if hasattr(torch, "is_autocast_enabled") else False
    if weight is not None and weight.dtype != x.dtype and not autocast:
        raise ValueError(
            f"{name} is {x.dtype} but the network's weights are {weight.dtype}: cast one of them "
            f"(e.g. {name}.to({weight.dtype}) or model.to({x.dtype}))"
        )


def _check_class_labels(model: Any, cond: Mapping[str, Any]) -> None:
    """Refuse class labels outside a MONAI UNet's class embedding (which fails later with a bare IndexError)."""
    labels = None
    if isinstance(cond, Mapping):
        labels = cond.get("class_label", cond.get("class_labels"))
    if labels is None or not isinstance(model, torch.nn.Module):
        return
    unet: Any = next((m for m in model.modules() if getattr(m, "num_class_embeds", None)), None)
    if unet is None:
        return
    n = int(unet.num_class_embeds)
    values = torch.as_tensor(labels)
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n):
        raise ValueError(f"class labels must lie in [0, {n - 1}] for this network, got {sorted(set(values.tolist()))}")


def _check_seg(model: Any, seg: torch.Tensor | None) -> None:
    """Refuse a label map for a network module that is not a SPADE network (it would fail with an unexpected
    keyword deep inside; MONAI's inferer drops it silently)."""
    if seg is not None and isinstance(model, torch.nn.Module) and not is_spade(model):
        raise ValueError(f"seg= is for MONAI's SPADE networks; {type(model).__name__} takes no label map")


def monai_null_condition(cond: Mapping[str, torch.Tensor], fill_value: float) -> NullCondition:
    """The null condition of MONAI's ``sample(cfg=..., cfg_fill_value=...)``: every conditioning tensor filled.

    A concatenated image and a cross-attention context become ``fill_value`` everywhere (MONAI's rule); class labels
    (which MONAI's inferer does not pass) take ``fill_value`` as the null class id.

    Raises:
        ValueError: no conditioning to guide, or class labels with a fill value that is not a class id.
    """
    kwargs: dict[str, Any] = {}
    if "concat" in cond:
        kwargs["fill_value"] = float(fill_value)
    if "crossattn" in cond:
        kwargs["context"] = torch.full(tuple(cond["crossattn"].shape[1:]), float(fill_value))
    if "class_label" in cond:
        if float(fill_value) < 0 or float(fill_value) != int(fill_value):
            raise ValueError(
                f"cfg with class labels needs the null class id the network was trained with as cfg_fill_value "
                f"(a non-negative integer), got {fill_value}"
            )
        kwargs["class_label"] = int(fill_value)
    if not kwargs:
        raise ValueError("cfg (classifier-free guidance) needs conditioning to guide; got none")
    return NullCondition(**kwargs)


def start_index(
    timesteps: torch.Tensor, start_timestep: float | int | None = None, strength: float | None = None
) -> int:
    """Index in a descending ``timesteps`` grid where partial-noising sampling starts.

    Args:
        timesteps: the scheduler's model-evaluation times, in order.
        start_timestep: begin at the first grid time ``<= start_timestep``.
        strength: in (0, 1]: run the last ``ceil(strength * N)`` of the ``N`` steps (1 = the full chain).

    Raises:
        ValueError: both or an out-of-range value given.
    """
    n = int(timesteps.numel())
    if start_timestep is not None and strength is not None:
        raise ValueError("give either start_timestep or strength, not both")
    if strength is not None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        steps = max(1, int(-(-strength * n // 1)))
        return n - steps
    if start_timestep is not None:
        below = (timesteps.to(torch.float64) <= float(start_timestep)).nonzero()
        if below.numel() == 0:
            raise ValueError(f"start_timestep {start_timestep} is below every timestep of the grid")
        return int(below[0, 0])
    return 0


class DiffusionInferer(Inferer):
    """Training forward and sampling for a diffusion network, in 2D and 3D.

    Args:
        scheduler: the training forward process and default sampler.
        condition_mode: how a bare conditioning tensor is used (see
            :class:`~monai_diffusion.inferers.conditioning.ConditionMode`); mappings need no mode.
        null_condition: the explicit null condition (needed for ``condition_dropout > 0``).
        condition_dropout: probability of replacing a training sample's condition by the null condition,
            for classifier-free guidance (Ho & Salimans, 2022, Alg. 1).

    Raises:
        ValueError: ``condition_dropout > 0`` without a null condition, or outside [0, 1].
    """

    def __init__(
        self,
        scheduler,
        condition_mode: str = "crossattn",
        null_condition: NullCondition | None = None,
        condition_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {condition_dropout}")
        if condition_dropout > 0 and null_condition is None:
            raise ValueError("condition_dropout > 0 needs a null_condition (the value that means 'no condition')")
        self.scheduler = scheduler
        self.condition_mode = condition_mode
        self.null_condition = null_condition
        self.condition_dropout = float(condition_dropout)
        if condition_mode not in ("crossattn", "concat", "class_label", "concat_crossattn"):
            raise ValueError(
                f"unknown condition_mode {condition_mode!r}; expected crossattn, concat, class_label or "
                "concat_crossattn"
            )

    # ------------------------------------------------------------------ training
    def _condition(
        self, conditioning, mode: str | None, x: torch.Tensor, seg: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        cond = as_condition_dict(conditioning, mode or self.condition_mode)
        if seg is not None:
            cond["seg"] = seg
        return validate_condition(cond, x)

    def training_target(self, inputs: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The regression target (noise, clean image or velocity) for the scheduler's prediction type."""
        alpha, sigma = marginal_coefficients(self.scheduler, timesteps)
        return prediction_type_of(self.scheduler).from_x0_eps(inputs, noise, alpha, sigma)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable,
        noise: torch.Tensor,
        timesteps: torch.Tensor,
        condition: Any = None,
        mode: str | None = None,
        output_scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        seg: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The training forward: noise ``inputs`` to ``timesteps`` and return the network's prediction.

        Args:
            inputs: clean images (B, C, *spatial).
            diffusion_model: the network (or a guidance wrapper).
            noise: noise of the shape of ``inputs``.
            timesteps: (B,) training timesteps.
            condition: conditioning (tensor with ``mode``, pair, or mapping).
            mode: overrides ``condition_mode``.
            output_scale: optional per-sample factor (B,) applied to the prediction, used with a target scaled the
                same way to weight an MSE loss (see :class:`monai_diffusion.engines.DiffusionPrepareBatch`).
            generator: for the condition-dropout draws.
            seg: a label map for MONAI's SPADE networks (passed as ``seg=``; the ``"seg"`` conditioning key).
        """
        if noise.shape != inputs.shape:
            raise ValueError(f"noise must have the shape of the inputs {tuple(inputs.shape)}, got {tuple(noise.shape)}")
        _check_seg(diffusion_model, seg)
        cond = self._condition(condition, mode, inputs, seg)
        if self.condition_dropout > 0 and cond:
            cond = drop_condition(cond, self.null_condition, self.condition_dropout, generator)  # type: ignore[arg-type]
        noisy = self.scheduler.add_noise(original_samples=inputs, noise=noise, timesteps=timesteps)
        prediction = call_model(diffusion_model, noisy, timesteps, cond)
        if output_scale is not None:
            prediction = prediction * as_batch_coefficient(output_scale, prediction)
        return prediction

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        input_noise: torch.Tensor,
        diffusion_model: Callable,
        scheduler=None,
        conditioning: Any = None,
        mode: str | None = None,
        num_inference_steps: int | None = None,
        start_image: torch.Tensor | None = None,
        start_timestep: float | int | None = None,
        strength: float | None = None,
        save_intermediates: bool = False,
        intermediate_steps: int | Sequence[int] | None = None,
        callback: StepCallback | None = None,
        progress: bool = False,
        generator: torch.Generator | None = None,
        step_kwargs: Mapping[str, Any] | None = None,
        enable_grad: bool = False,
        verbose: bool | None = None,
        seg: torch.Tensor | None = None,
        cfg: float | None = None,
        cfg_fill_value: float = -1.0,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the reverse process ``x = noise * init_noise_sigma; for t: x, x0 = step(model(x, t), t, x)``.

        Args:
            input_noise: (B, C, *spatial) standard noise; with ``start_image`` the noise added to it; with a
                start step but no image, the state at that step (e.g. from :meth:`ddim_invert`).
            diffusion_model: network or guidance wrapper, evaluated once per entry of ``scheduler.timesteps``.
            scheduler: defaults to the inferer's.
            conditioning: tensor with ``mode``, ``(concat, context)`` pair or mapping (see ``conditioning``).
            mode: overrides ``condition_mode``.
            num_inference_steps: if given, ``scheduler.set_timesteps(num_inference_steps, device)`` first.
            start_image: clean image to noise to the start step (SDEdit / AnoDDPM partial noising).
            start_timestep: start at the first grid time ``<= start_timestep``.
            strength: alternatively, the fraction of the chain to run, in (0, 1].
            save_intermediates: also return the states after the selected steps.
            intermediate_steps: an int ``n``: the steps whose timestep is a multiple of ``n`` (MONAI's rule); or
                explicit step indices into ``scheduler.timesteps``; default (``None``) every step run.
            callback: ``callback(step_index, t, x_prev, x0_hat)`` after every step (after the model's ``after_step``
                hook, see the module docs).
            progress: show a tqdm progress bar.
            generator: passed to ``scheduler.step`` for stochastic samplers.
            step_kwargs: extra keywords for ``scheduler.step`` (e.g. ``{"eta": 1.0}`` for MONAI's DDIM).
            enable_grad: run with gradients (e.g. to backpropagate through sampling); off by default, which
                does not prevent guidance wrappers from differentiating a classifier.
            verbose: deprecated name of ``progress`` (a ``DeprecationWarning``).
            seg: a label map for MONAI's SPADE networks (passed as ``seg=``; the ``"seg"`` conditioning key).
            cfg: MONAI's classifier-free guidance scale: the network is wrapped in
                :class:`~monai_diffusion.inferers.guidance.ClassifierFreeGuidance` with the null condition MONAI uses,
                the conditioning filled with ``cfg_fill_value`` (a null class id for class labels).
            cfg_fill_value: see ``cfg``.

        Returns:
            the final sample, and the list of intermediates when ``save_intermediates``.

        Raises:
            ValueError: bad shapes, conditioning or start options; ``cfg`` without conditioning.
        """
        progress = renamed_keyword("DiffusionInferer.sample", "verbose", verbose, "progress", progress, False)
        check_model_input(diffusion_model, input_noise, "input_noise")
        if start_image is not None:
            check_model_input(diffusion_model, start_image, "start_image")
        scheduler = scheduler if scheduler is not None else self.scheduler
        if num_inference_steps is not None:
            scheduler.set_timesteps(num_inference_steps, device=input_noise.device)
        timesteps = torch.as_tensor(scheduler.timesteps)
        first = start_index(timesteps, start_timestep, strength)
        if start_image is not None and start_timestep is None and strength is None:
            raise ValueError("start_image needs start_timestep or strength (how far to noise it)")
        if first > 0 and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)  # ours may move to an entry at the same time where a step can start
            first = int(getattr(scheduler, "begin_index", first))
        _check_seg(diffusion_model, seg)
        cond = self._condition(conditioning, mode, input_noise, seg)
        _check_class_labels(diffusion_model, cond)
        if cfg is not None:
            if hasattr(diffusion_model, "after_step"):
                raise ValueError(
                    "cfg cannot wrap a model with step hooks (a posterior method): wrap the network in "
                    "ClassifierFreeGuidance first, then bind it"
                )
            null = monai_null_condition(cond, cfg_fill_value)
            if null.class_label is not None:
                _check_class_labels(diffusion_model, {"class_label": torch.tensor([null.class_label])})
            diffusion_model = ClassifierFreeGuidance(diffusion_model, cfg, null)
        if start_image is not None:
            if start_image.shape != input_noise.shape:
                raise ValueError(
                    f"start_image {tuple(start_image.shape)} must have the shape of input_noise {tuple(input_noise.shape)}"
                )
            t0 = timestep_batch(timesteps[first], input_noise.shape[0], input_noise.device)
            x = scheduler.add_noise(original_samples=start_image, noise=input_noise, timesteps=t0)
        elif first > 0:
            x = input_noise
        else:
            x = input_noise * getattr(scheduler, "init_noise_sigma", 1.0)

        n = int(timesteps.numel())
        keep = self._intermediate_indices(intermediate_steps, first, n, timesteps) if save_intermediates else set()
        indices = range(first, n)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="sampling", total=n - first)
        kwargs = dict(step_kwargs or {})
        if generator is not None:
            kwargs["generator"] = generator
        intermediates: list[torch.Tensor] = []
        begin_sampling = getattr(diffusion_model, "begin_sampling", None)
        after_step = getattr(diffusion_model, "after_step", None)
        if begin_sampling is not None:
            begin_sampling(scheduler, timesteps, generator)
        with torch.set_grad_enabled(enable_grad):
            for i in indices:
                t = timesteps[i]
                output = call_model(diffusion_model, x, t, cond)
                x, x0 = scheduler.step(output, t, x, **kwargs)
                if after_step is not None:
                    x = after_step(i, t, x, x0)
                if callback is not None:
                    callback(i, t, x, x0)
                if i in keep:
                    intermediates.append(x)
        return (x, intermediates) if save_intermediates else x

    @staticmethod
    def _intermediate_indices(
        intermediate_steps: int | Sequence[int] | None, first: int, n: int, timesteps: torch.Tensor
    ) -> set[int]:
        if intermediate_steps is None:
            return set(range(first, n))
        if isinstance(intermediate_steps, int):
            if intermediate_steps < 1:
                raise ValueError(f"intermediate_steps must be >= 1, got {intermediate_steps}")
            t = timesteps.detach().to("cpu", torch.float64) / intermediate_steps
            picked = {i for i in range(first, n) if abs(float(t[i]) - round(float(t[i]))) < 1e-6}
            if not picked:
                raise ValueError(
                    f"intermediate_steps={intermediate_steps} keeps the steps whose timestep is a multiple of it "
                    "(MONAI's rule), and no step run here has one; pass explicit step indices instead"
                )
            return picked
        chosen = {int(i) for i in intermediate_steps}
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise ValueError(f"intermediate step indices {sorted(bad)} are outside [0, {n})")
        return chosen

    # ------------------------------------------------------------------ likelihood
    def get_likelihood(
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable,
        scheduler=None,
        save_intermediates: bool = False,
        conditioning: Any = None,
        mode: str | None = None,
        original_input_range: tuple[float, float] = (0, 255),
        scaled_input_range: tuple[float, float] = (0, 1),
        verbose: bool = False,
        seg: torch.Tensor | None = None,
        timesteps: Sequence[int] | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        decoder_variance: str = "clipped",
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """The DDPM variational bound on ``-log2 p(inputs)`` in **bits per dimension** (B,), in MONAI's argument order.

        See :func:`monai_diffusion.inferers.likelihood.variational_bound`. Unlike MONAI's ``get_likelihood`` (nats
        per dimension, no prior term, a near point-mass decoder for ``fixed_small``) this is a true bound: it includes
        the prior term ``KL(q(x_T | x0) || N(0, I))``; ``decoder_variance="scheduler"`` reproduces MONAI's decoder, and
        ``(bits - prior) * ln 2`` equals MONAI's value (tested).

        Args:
            inputs: images (B, C, *spatial) in ``scaled_input_range`` (e.g. 8-bit images scaled to [0, 1]).
            diffusion_model: the network (or a guidance wrapper).
            scheduler: a DDPM scheduler with an ``alphas_cumprod`` table (ours or MONAI's); defaults to the inferer's.
            save_intermediates: also return the per-element terms in bits (prior, each step, decoder).
            conditioning, mode, seg: as in :meth:`sample`.
            original_input_range, scaled_input_range: the discretisation of the data (bins of the original range).
            verbose: show a progress bar (MONAI's name; MONAI's default is on).
            timesteps: the chain to bound (default: every training step; ``scheduler.timesteps`` for a respaced one).
            generator: for the noise of each step.
            decoder_variance: ``"clipped"`` (default) or ``"scheduler"`` (MONAI's), see ``variational_bound``.
            noise: one noise tensor for every step (MONAI's way); default: fresh noise per step from ``generator``.
        """
        from monai_diffusion.inferers.likelihood import variational_bound

        check_model_input(diffusion_model, inputs, "inputs")
        _check_seg(diffusion_model, seg)
        scheduler = scheduler if scheduler is not None else self.scheduler
        cond = self._condition(conditioning, mode, inputs, seg)
        return variational_bound(
            inputs,
            diffusion_model,
            scheduler,
            cond,
            original_input_range,
            scaled_input_range,
            save_intermediates=save_intermediates,
            progress=verbose,
            timesteps=timesteps,
            generator=generator,
            decoder_variance=decoder_variance,
            noise=noise,
        )

    # ------------------------------------------------------------------ encoding
    def ddim_invert(
        self,
        inputs: torch.Tensor,
        diffusion_model: Callable,
        scheduler=None,
        conditioning: Any = None,
        mode: str | None = None,
        end_timestep: float | int | None = None,
        prediction_type: str | None = None,
        save_intermediates: bool = False,
        progress: bool = False,
        verbose: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Deterministic DDIM encoding of clean images to the noise level of ``end_timestep``.

        Runs the DDIM update (Song et al., 2021, Eq. 12 with ``eta = 0``) along the ascending grid of
        ``scheduler.timesteps``: ``x_{next} = alpha_next * x0_hat + sigma_next * eps_hat`` with the prediction taken
        at the current point, starting from ``x`` with ``(alpha, sigma) = (1, 0)``. Decode with
        ``sample(latent, ..., start_timestep=end_timestep)`` on the same grid (no ``start_image``). Only the
        coefficients of the scheduler are used, so it works for every forward process; it does not use MONAI's
        ``DDIMScheduler.reversed_step`` (which fails on the last step).

        Args:
            inputs: clean images (B, C, *spatial).
            diffusion_model: the network (or a guidance wrapper).
            scheduler: defaults to the inferer's; its current ``timesteps`` define the grid.
            conditioning, mode: as in :meth:`sample`.
            end_timestep: last grid time to reach (default: the largest).
            prediction_type: defaults to ``scheduler.prediction_type``.
            save_intermediates: also return the states at each grid time.
            progress: show a tqdm progress bar.
            verbose: deprecated name of ``progress`` (a ``DeprecationWarning``).

        Returns:
            the encoded state at the end time (and the intermediates).
        """
        progress = renamed_keyword("DiffusionInferer.ddim_invert", "verbose", verbose, "progress", progress, False)
        check_model_input(diffusion_model, inputs, "inputs")
        scheduler = scheduler if scheduler is not None else self.scheduler
        ptype = prediction_type_of(scheduler) if prediction_type is None else PredictionType.of(prediction_type)
        grid = torch.unique(torch.as_tensor(scheduler.timesteps))  # ascending, duplicates (multi-eval) removed
        if end_timestep is not None:
            grid = grid[grid.to(torch.float64) <= float(end_timestep)]
            if grid.numel() == 0:
                raise ValueError(f"end_timestep {end_timestep} is below every timestep of the grid")
        cond = self._condition(conditioning, mode, inputs)
        x = inputs
        alpha_cur = torch.ones((), dtype=torch.float64)
        sigma_cur = torch.zeros((), dtype=torch.float64)
        intermediates: list[torch.Tensor] = []
        steps = range(grid.numel())
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc="DDIM inversion")
        with torch.no_grad():
            for i in steps:
                t_eval = grid[max(i - 1, 0)]
                output = call_model(diffusion_model, x, t_eval, cond)
                x0, eps = ptype.to_x0_eps(output, x, alpha_cur, sigma_cur) if i > 0 else (x, None)
                if eps is None:
                    # at the clean start the eps estimate comes from the network at the first grid time
                    a0, s0 = marginal_coefficients(scheduler, grid[0])
                    _, eps = ptype.to_x0_eps(output, x, a0, s0)
                alpha_next, sigma_next = marginal_coefficients(scheduler, grid[i])
                x = as_batch_coefficient(alpha_next, x) * x0 + as_batch_coefficient(sigma_next, x) * eps
                alpha_cur, sigma_cur = alpha_next, sigma_next
                if save_intermediates:
                    intermediates.append(x)
        return (x, intermediates) if save_intermediates else x
