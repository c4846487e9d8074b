"""Guidance by composition: wrappers around a diffusion network that return a guided output.

A wrapper returns its output in the scheduler's prediction type, so every sampler (MONAI's or ours) runs it
unchanged: there are no guidance flags inside samplers. Wrappers compose, e.g.
``ClassifierGuidance(ClassifierFreeGuidance(unet, 3.0, null), classifier, 1.0, scheduler)``.

* :class:`ClassifierFreeGuidance` (Ho & Salimans, 2022, Eq. 6): ``out = out(null) + s * (out(c) - out(null))``.
  With scale ``s`` this is the score ``grad log p_t(x) + s * grad log p_t(c | x)`` when the network is exact;
  ``s = 1`` is plain conditional sampling, ``s = 0`` unconditional. (The paper's ``w`` is ``s - 1``.)
* :class:`ClassifierGuidance` (Dhariwal & Nichol, 2021, "Diffusion Models Beat GANs", Alg. 2):
  ``eps_hat = eps - s * sigma_t * grad_x log p_phi(y | x_t, t)`` with a time-conditioned classifier, e.g. MONAI's
  ``DiffusionModelEncoder``. Gradients are enabled only around the classifier, so sampling itself stays under
  ``torch.no_grad``.

Neither reproduces the tilted distribution ``p(x) p(y|x)^s`` exactly for ``s != 1`` (the guided field is not the
score of a diffused distribution); at ``s = 1`` with exact components both sample ``p(x | y)`` exactly. The tilt is
``p(x | e)`` for an event with ``P(e | x0) = p(y | x0)^s``, so classifier guidance at scale 1 with a classifier of
``P(e | x_t)`` samples it (exact reference: ``exact_guidance.TemperedLabelClassifier``). See ``docs/inferers.md``
for the measured gap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from monai_diffusion.inferers.conditioning import NETWORK_KEYS, NullCondition, network_inputs, validate_condition
from monai_diffusion.inferers.utils import timestep_batch
from monai_diffusion.networks.schedulers.process import (
    PredictionType,
    as_batch_coefficient,
    marginal_coefficients,
    prediction_type_of,
)

__all__ = ["GuidedModel", "call_model", "ClassifierFreeGuidance", "ClassifierGuidance"]


class GuidedModel(nn.Module):
    """Base of models that take conditioning as a mapping: ``forward(x, timesteps, conditioning)``.

    The inferers call a :class:`GuidedModel` with the (validated) conditioning mapping and a plain network
    through :func:`network_inputs` (concatenation, ``context=``, ``class_labels=``).
    """

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


def call_model(
    model: Callable, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None = None
) -> torch.Tensor:
    """Evaluate a network or a :class:`GuidedModel` at ``(x_t, t)`` with validated conditioning."""
    cond = dict(conditioning or {})
    t = timestep_batch(timesteps, x.shape[0], x.device)
    if isinstance(model, GuidedModel):
        return model(x, t, cond)
    x_in, kwargs = network_inputs(x, cond)
    return model(x_in, timesteps=t, **kwargs)


def _cat_conditions(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([a[k], b[k]], dim=0) for k in a}


#: on CPU, inputs of at most this many elements are guided in one batched call (measured on 2026-11-30: batched was
#: faster for 4 x 1 x 32 x 32 and 8 x 3 x 16 x 16, two calls for 64 x 3 x 16 x 16 and for 8 or 64 x 1 x 64 x 64)
CPU_BATCHED_MAX_ELEMENTS = 16384


class ClassifierFreeGuidance(GuidedModel):
    """Classifier-free guidance around a network trained with condition dropout.

    Args:
        network: a MONAI-style network ``network(x, timesteps, context=..., class_labels=...)`` or a
            :class:`GuidedModel`.
        guidance_scale: ``s`` in ``out(null) + s (out(c) - out(null))``; 1 is conditional, 0 unconditional.
        null_condition: the null condition used in training (required: guidance without it is undefined).
        batched: evaluate the conditional and the null branch in one call of batch 2B (``True``) or in two calls
            (``False``). ``None`` (default) decides per call: batched on CUDA, and on CPU only for small inputs
            (at most :data:`CPU_BATCHED_MAX_ELEMENTS` elements), where measurement found it faster; on CPU larger
            batches ran faster as two calls (``benchmarks/cfg_batching.py``, docs/inferers.md).

    Raises:
        ValueError: missing null condition; at call time, missing conditioning.
    """

    def __init__(
        self,
        network: Callable,
        guidance_scale: float,
        null_condition: NullCondition | None,
        batched: bool | None = None,
    ) -> None:
        super().__init__()
        if null_condition is None:
            raise ValueError("classifier-free guidance needs the null condition the network was trained with")
        if not isinstance(null_condition, NullCondition):
            raise TypeError(f"null_condition must be a NullCondition, got {type(null_condition).__name__}")
        self.network = network
        if not math.isfinite(float(guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        self.guidance_scale = float(guidance_scale)
        self.null_condition = null_condition
        self.batched = None if batched is None else bool(batched)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        cond = validate_condition(conditioning or {}, x)
        if not any(k in cond for k in NETWORK_KEYS):
            raise ValueError(
                f"classifier-free guidance needs conditioning (keys {NETWORK_KEYS}), got keys {sorted(cond)}"
            )
        null = self.null_condition.null_like(cond)
        s = self.guidance_scale
        t = timestep_batch(timesteps, x.shape[0], x.device)
        if s == 1.0:
            return call_model(self.network, x, t, cond)
        if s == 0.0:
            return call_model(self.network, x, t, null)
        batched = self.batched if self.batched is not None else (x.is_cuda or x.numel() <= CPU_BATCHED_MAX_ELEMENTS)
        if batched:
            out = call_model(self.network, torch.cat([x, x]), torch.cat([t, t]), _cat_conditions(cond, null))
            out_c, out_u = out.chunk(2)
        else:
            out_c = call_model(self.network, x, t, cond)
            out_u = call_model(self.network, x, t, null)
        return out_u + s * (out_c - out_u)


class ClassifierGuidance(GuidedModel):
    """Classifier guidance with a time-conditioned classifier ``log p_phi(y | x_t, t)``.

    Args:
        network: the diffusion network (or a :class:`GuidedModel`, e.g. classifier-free guidance).
        classifier: ``classifier(x_t, timesteps=t)`` returning logits (B, K), such as MONAI's
            ``DiffusionModelEncoder`` with ``out_channels = K``. ``log_softmax`` is applied here.
        guidance_scale: ``s`` (Dhariwal & Nichol's gradient scale).
        scheduler: supplies ``(alpha_t, sigma_t)`` (see :func:`marginal_coefficients`) and the prediction type.
        prediction_type: the network's output type; defaults to ``scheduler.prediction_type``.
        label: default target class when the conditioning carries neither ``"classifier_label"`` nor
            ``"class_label"``.

    The target class is, in order: ``conditioning["classifier_label"]`` (stripped before the network call),
    ``conditioning["class_label"]``, ``label``.

    Raises:
        ValueError: unknown prediction type; at call time, no target class.
    """

    def __init__(
        self,
        network: Callable,
        classifier: Callable,
        guidance_scale: float,
        scheduler,
        prediction_type: str | None = None,
        label: int | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.classifier = classifier
        if not math.isfinite(float(guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        self.guidance_scale = float(guidance_scale)
        self.scheduler = scheduler
        ptype = prediction_type_of(scheduler) if prediction_type is None else PredictionType.of(prediction_type)
        self.prediction_type: str = ptype.value
        self.label = None if label is None else int(label)

    def classifier_gradient(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``grad_x log p_phi(y | x_t, t)`` per sample, computed with gradients enabled only here."""
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = self.classifier(xg, timesteps=timesteps)
            if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(f"classifier must return logits of shape (B, K), got {tuple(logits.shape)}")
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, labels.reshape(-1, 1)).sum()
            (grad,) = torch.autograd.grad(logp, xg)
        return grad.to(x.dtype)

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, conditioning: Mapping[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        cond = validate_condition(conditioning or {}, x)
        labels = cond.pop("classifier_label", None)
        if labels is None:
            labels = cond.get("class_label")
        if labels is None and self.label is not None:
            labels = torch.full((x.shape[0],), self.label, dtype=torch.long, device=x.device)
        if labels is None:
            raise ValueError(
                "classifier guidance needs a target class: pass conditioning['classifier_label'] or "
                "['class_label'], or `label` at construction"
            )
        t = timestep_batch(timesteps, x.shape[0], x.device)
        out = call_model(self.network, x, t, cond)
        if self.guidance_scale == 0.0:
            return out
        alpha, sigma = marginal_coefficients(self.scheduler, t)
        ptype = PredictionType(self.prediction_type)
        _, eps = ptype.to_x0_eps(out, x, alpha, sigma)
        grad = self.classifier_gradient(x, t, labels)
        eps = eps - self.guidance_scale * as_batch_coefficient(sigma, x) * grad
        return ptype.from_eps(eps, x, alpha, sigma)
