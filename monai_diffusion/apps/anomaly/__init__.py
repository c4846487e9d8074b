"""Unsupervised anomaly detection with a healthy diffusion prior (AnoDDPM partial noising with Gaussian or simplex
noise, DDIM encode/decode), its baselines (autoencoder residual, intensity thresholding) and their evaluation."""

from __future__ import annotations

from .detectors import AutoencoderDetector as AutoencoderDetector
from .detectors import DDIMEncodeDecodeDetector as DDIMEncodeDecodeDetector
from .detectors import IntensityDetector as IntensityDetector
from .detectors import PartialNoisingDetector as PartialNoisingDetector
from .detectors import anomaly_map as anomaly_map
from .evaluation import anomaly_items as anomaly_items
from .evaluation import anomaly_report as anomaly_report
from .evaluation import load_anomaly_data as load_anomaly_data
from .evaluation import score_maps as score_maps
from .simplex import SimplexNoise as SimplexNoise
from .simplex import simplex_noise as simplex_noise
