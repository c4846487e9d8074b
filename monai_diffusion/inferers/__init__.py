"""Inferers: training forward, sampling, guidance and posterior sampling, one file per family."""

from __future__ import annotations

from .conditioning import ConditionMode, NullCondition, as_condition_dict, drop_condition, validate_condition
from .diffusion import DiffusionInferer, start_index
from .guidance import ClassifierFreeGuidance, ClassifierGuidance, GuidedModel, call_model
from .latent import LatentDiffusionInferer, decode_latent, encode_latent, estimate_scale_factor
from .utils import marginal_coefficients
