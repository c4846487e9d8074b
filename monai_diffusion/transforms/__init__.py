"""MONAI array/dictionary transform pairs (k-space simulation, data consistency, noise)."""

from __future__ import annotations

from .kspace import CoilCombine as CoilCombine
from .kspace import CoilCombined as CoilCombined
from .kspace import KspaceDataConsistency as KspaceDataConsistency
from .kspace import KspaceDataConsistencyd as KspaceDataConsistencyd
from .kspace import SimulateKspace as SimulateKspace
from .kspace import SimulateKspaced as SimulateKspaced
from .kspace import UndersampleKspace as UndersampleKspace
from .kspace import UndersampleKspaced as UndersampleKspaced
from .kspace import ZeroFilled as ZeroFilled
from .kspace import ZeroFilledd as ZeroFilledd
