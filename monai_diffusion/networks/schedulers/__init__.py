"""Samplers for the survey's three frameworks (DDPM, NCSN, score SDEs) and fast solvers.

One file per sampler family; every sampler subclasses ``monai.networks.schedulers.Scheduler``. Layers, lowest first:
``process`` (the forward process: prediction types, fractional timesteps, ``marginal_coefficients`` of any
scheduler, ``check_forward_process``), ``base`` (shared sampler base classes), ``sde_definitions`` and ``sde_steps``
(forward SDEs and their step maths), ``continuous`` (base of the SDE/NCSN samplers), then one file per family.
Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .base import BaseScheduler as BaseScheduler
from .base import DiscreteTimeScheduler as DiscreteTimeScheduler
from .ddim import DDIMScheduler as DDIMScheduler
from .ddpm import DDPMScheduler as DDPMScheduler
from .dpm_solver import DPMSolverMultistepScheduler as DPMSolverMultistepScheduler
from .karras import EulerKarrasScheduler as EulerKarrasScheduler
from .karras import HeunKarrasScheduler as HeunKarrasScheduler
from .ncsn import NCSNScheduler as NCSNScheduler
from .process import PREDICTION_TYPES as PREDICTION_TYPES
from .process import PredictionType as PredictionType
from .process import check_forward_process as check_forward_process
from .process import marginal_coefficients as marginal_coefficients
from .sde import SDE as SDE
from .sde import VESDE as VESDE
from .sde import VPSDE as VPSDE
from .sde import EulerMaruyamaScheduler as EulerMaruyamaScheduler
from .sde import PredictorCorrectorScheduler as PredictorCorrectorScheduler
from .sde import ProbabilityFlowScheduler as ProbabilityFlowScheduler
from .sde import SubVPSDE as SubVPSDE
from .unipc import UniPCMultistepScheduler as UniPCMultistepScheduler
