"""Shared machinery of the MONAI bundles in ``bundles/``: weights with recorded hashes, the bundle CLI, the report."""

from __future__ import annotations

from .weights import WeightsHashError as WeightsHashError
from .weights import check_hash as check_hash
from .weights import export_weights as export_weights
from .weights import find_root as find_root
from .weights import load_info as load_info
from .weights import load_weights as load_weights
from .weights import record_hashes as record_hashes
from .weights import sha256_of as sha256_of
