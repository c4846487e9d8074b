"""k-space masks and transforms: simulation, undersampling, zero-filling, coil combination, data consistency."""

from __future__ import annotations

from .array import CoilCombine as CoilCombine
from .array import KspaceDataConsistency as KspaceDataConsistency
from .array import SimulateKspace as SimulateKspace
from .array import UndersampleKspace as UndersampleKspace
from .array import ZeroFilled as ZeroFilled
from .dictionary import CoilCombined as CoilCombined
from .dictionary import KspaceDataConsistencyd as KspaceDataConsistencyd
from .dictionary import SimulateKspaced as SimulateKspaced
from .dictionary import UndersampleKspaced as UndersampleKspaced
from .dictionary import ZeroFilledd as ZeroFilledd
from .masks import MASK_TYPES as MASK_TYPES
from .masks import acceleration_of as acceleration_of
from .masks import equispaced_mask as equispaced_mask
from .masks import gaussian_mask_1d as gaussian_mask_1d
from .masks import make_mask as make_mask
from .masks import poisson_disc_mask_2d as poisson_disc_mask_2d
from .masks import random_mask as random_mask
