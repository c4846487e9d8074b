"""Exponential moving average (EMA) of network weights, as a module and an ignite handler.

Diffusion models are sampled from an EMA of their weights (Ho et al., 2020, App. B, decay 0.9999; Song & Ermon,
2020, "Improved Techniques for Training Score-Based Generative Models", Technique 5). The average lives in a
frozen copy of the network whose parameters and buffers are registered state, so it is saved by ``state_dict``
(and by MONAI's ``CheckpointSaver``) and moved by ``.to()``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ExponentialMovingAverage"]


class ExponentialMovingAverage(nn.Module):
    """``theta_ema <- d * theta_ema + (1 - d) * theta`` after each optimiser step.

    Args:
        network: the trained network (its current weights initialise the average).
        decay: the decay ``d`` in [0, 1).
        warmup: use ``d_n = min(decay, (1 + n) / (10 + n))`` at update ``n`` so early averages are not dominated by
            the random initialisation.
        every: update every ``every`` iterations when attached to an engine.

    The averaged network is :attr:`averaged` (use it for sampling); buffers (e.g. norm statistics) are copied.
    """

    num_updates: torch.Tensor

    def __init__(self, network: nn.Module, decay: float = 0.999, warmup: bool = True, every: int = 1) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.every = int(every)
        self.averaged = copy.deepcopy(network).eval().requires_grad_(False)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        """The decay used by the next update."""
        n = int(self.num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Fold ``network``'s current weights into the average."""
        d = self.current_decay()
        ema_params = dict(self.averaged.named_parameters())
        for name, p in network.named_parameters():
            if name not in ema_params:
                raise ValueError(f"parameter {name!r} of the network is missing from the EMA copy")
            ema_params[name].lerp_(p.detach().to(ema_params[name].dtype), 1.0 - d)
        ema_buffers = dict(self.averaged.named_buffers())
        for name, b in network.named_buffers():
            if name in ema_buffers:
                ema_buffers[name].copy_(b)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        """Run the averaged network."""
        return self.averaged(*args, **kwargs)

    def attach(self, engine, network: nn.Module | None = None) -> None:
        """Update after every ``every`` iterations of an ignite/MONAI engine (default network: ``engine.network``)."""
        from ignite.engine import Events

        target = network if network is not None else engine.network

        def _update(_engine) -> None:
            self.update(target)

        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.every), _update)
