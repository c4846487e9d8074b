"""Shared fixtures of the bundle tests: a tiny embedded data set (6 subjects) built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory) -> str:
    """A 6-subject 2D 64x64 build of the embedded data set, passed to bundles as a user datalist would be."""
    from monai_diffusion.data import prepare_dataset

    out = tmp_path_factory.mktemp("tiny_data") / "brainsim_2d_64px_seed0"
    return str(prepare_dataset(out, dim=2, size=64, subjects=6, seed=0))


@pytest.fixture(scope="session")
def tiny_datalist_3d(tmp_path_factory) -> str:
    """A 6-subject 3D 32^3 build of the embedded data set."""
    from monai_diffusion.data import prepare_dataset

    out = tmp_path_factory.mktemp("tiny_data_3d") / "brainsim_3d_32px_seed0"
    return str(prepare_dataset(out, dim=3, size=32, subjects=6, seed=0))
