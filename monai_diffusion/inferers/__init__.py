"""Inferers: training forward, sampling, guidance and posterior sampling, one file per family.

Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .conditioning import ConditionMode as ConditionMode
from .conditioning import NullCondition as NullCondition
from .conditioning import as_condition_dict as as_condition_dict
from .conditioning import drop_condition as drop_condition
from .conditioning import validate_condition as validate_condition
from .controlnet import ControlNetDiffusionInferer as ControlNetDiffusionInferer
from .controlnet import ControlNetLatentDiffusionInferer as ControlNetLatentDiffusionInferer
from .controlnet import ControlNetModel as ControlNetModel
from .controlnet import control_downsampling as control_downsampling
from .diffusion import DiffusionInferer as DiffusionInferer
from .diffusion import start_index as start_index
from .guidance import ClassifierFreeGuidance as ClassifierFreeGuidance
from .guidance import ClassifierGuidance as ClassifierGuidance
from .guidance import GuidedModel as GuidedModel
from .guidance import call_model as call_model
from .latent import LatentDiffusionInferer as LatentDiffusionInferer
from .latent import decode_latent as decode_latent
from .latent import encode_latent as encode_latent
from .latent import estimate_scale_factor as estimate_scale_factor
from .posterior import ComplexChannels as ComplexChannels
from .posterior import DataConsistencySampler as DataConsistencySampler
from .posterior import DPSSampler as DPSSampler
from .posterior import LatentDomain as LatentDomain
from .posterior import MCGSampler as MCGSampler
from .posterior import NullSpaceSampler as NullSpaceSampler
from .posterior import PosteriorModel as PosteriorModel
from .posterior import PosteriorSampler as PosteriorSampler
from .utils import marginal_coefficients as marginal_coefficients
