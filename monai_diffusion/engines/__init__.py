"""Training recipes built on MONAI engines (ignite).

Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .checkpoints import RecordedConfig as RecordedConfig
from .checkpoints import ResumableCheckpointSaver as ResumableCheckpointSaver
from .checkpoints import build_component as build_component
from .checkpoints import checkpoint_config as checkpoint_config
from .ema import ExponentialMovingAverage as ExponentialMovingAverage
from .handlers import ProgressBar as ProgressBar
from .handlers import TrainingLog as TrainingLog
from .prepare_batch import DiffusionPrepareBatch as DiffusionPrepareBatch
from .prepare_batch import PairPrepareBatch as PairPrepareBatch
from .recipes import AutocastInferer as AutocastInferer
from .recipes import AutoencoderStep as AutoencoderStep
from .recipes import autoencoder_trainer as autoencoder_trainer
from .recipes import brainsim_loader as brainsim_loader
from .recipes import datalist_loader as datalist_loader
from .recipes import diffusion_trainer as diffusion_trainer
from .recipes import latest_checkpoint as latest_checkpoint
from .recipes import regression_trainer as regression_trainer
from .sampling import sample_checkpoint as sample_checkpoint
