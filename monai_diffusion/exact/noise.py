"""Stratified standard normal noise: the initial noise of the exact-score tests and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["stratified_normal"]


def stratified_normal(shape: Sequence[int], seed: int | None = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal quantiles at the probabilities ``(i + 0.5) / n``, ``n`` the number of elements of ``shape``.

    The empirical distribution of the result is almost exactly ``N(0, 1)``, so the distribution error of a
    deterministic sampler started from it is not swamped by Monte-Carlo noise. The quantiles are computed in float64
    (``torch.special.ndtri``) and then cast to ``dtype``.

    Args:
        shape: the output shape.
        seed: the quantiles are put in the random order of ``torch.randperm`` seeded with ``seed``; ``None`` keeps
            them sorted (increasing, in row-major order).
        dtype: the output dtype.

    Raises:
        ValueError: for an empty shape.
    """
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    if n < 1:
        raise ValueError(f"shape must have at least one element, got {shape}")
    q = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    if seed is not None:
        q = q[torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))]
    return q.reshape(shape).to(dtype)
