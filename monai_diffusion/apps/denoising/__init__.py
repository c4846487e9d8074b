"""Denoising with a healthy diffusion prior started at the image's own noise level, the classical and supervised
baselines, the Rician noise model with its estimate, and the evaluation against exact noiseless targets."""

from __future__ import annotations

from .baselines import nlm_denoise as nlm_denoise
from .baselines import tune_factor as tune_factor
from .baselines import tv_denoise as tv_denoise
from .denoisers import ClassicalDenoiser as ClassicalDenoiser
from .denoisers import DiffusionDenoiser as DiffusionDenoiser
from .denoisers import SupervisedDenoiser as SupervisedDenoiser
from .evaluation import denoising_items as denoising_items
from .evaluation import denoising_report as denoising_report
from .noise import add_rician_noise as add_rician_noise
from .noise import estimate_noise_sigma as estimate_noise_sigma
