"""A few noiseless 64 x 64 slices (with brain masks) of a tiny embedded data set, as evaluation items."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_items(tmp_path_factory) -> list[dict]:
    from monai_diffusion.apps.super_resolution import super_resolution_items
    from monai_diffusion.data import prepare_dataset

    out = tmp_path_factory.mktemp("tiny_sr") / "brainsim_2d_64px_seed0"
    datalist = prepare_dataset(out, dim=2, size=64, subjects=6, seed=0)
    return super_resolution_items(datalist, "test", ["t1w", "flair"], 800, limit=1)
