"""Dictionary wrappers of :mod:`monai_diffusion.transforms.kspace.array` (same layout; see that module)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from monai_diffusion.transforms.kspace.array import (
    CoilCombine,
    KspaceDataConsistency,
    SimulateKspace,
    UndersampleKspace,
    ZeroFilled,
)

__all__ = ["SimulateKspaced", "UndersampleKspaced", "ZeroFilledd", "CoilCombined", "KspaceDataConsistencyd"]


class SimulateKspaced(Randomizable, MapTransform):
    """Dictionary :class:`SimulateKspace`: reads ``keys`` (one real image), writes ``kspace_key`` and ``maps_key``.

    Args:
        keys: the image key (one).
        kspace_key, maps_key: output keys for the k-space and the coil maps.
        num_coils, spatial_dims, max_phase, noise_std: see :class:`SimulateKspace`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        kspace_key: str = "kspace",
        maps_key: str = "sensitivity_maps",
        num_coils: int = 1,
        spatial_dims: int = 2,
        max_phase: float = math.pi / 2,
        noise_std: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"SimulateKspaced takes one image key, got {self.keys}")
        self.kspace_key = kspace_key
        self.maps_key = maps_key
        self.sim = SimulateKspace(num_coils, spatial_dims, max_phase, noise_std)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.sim.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.sim.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self.randomize()
            try:
                d[self.kspace_key] = self.sim(d[key], randomize=False)
            except (TypeError, ValueError) as err:  # name the key: the array transform only knows the tensor
                raise type(err)(f"SimulateKspaced key {key!r}: {err}") from err
            d[self.maps_key] = self.sim.sensitivity_maps(d[self.kspace_key].shape[1:])
        return d


class UndersampleKspaced(Randomizable, MapTransform):
    """Dictionary :class:`UndersampleKspace`: masks ``keys`` (k-space) in place and writes the mask to ``mask_key``.

    The same mask is used for every key of one call.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        mask_type: str = "random",
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        spatial_dims: int = 2,
        mask: torch.Tensor | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.mask_key = mask_key
        self.under = UndersampleKspace(mask_type, acceleration, center_fraction, spatial_dims, mask)

    def set_random_state(self, seed=None, state=None):
        super().set_random_state(seed, state)
        self.under.set_random_state(seed, state)
        return self

    def randomize(self, data=None) -> None:
        self.under.randomize()

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key], d[self.mask_key] = self.under(d[key], randomize=False)
        return d


class ZeroFilledd(MapTransform):
    """Dictionary :class:`ZeroFilled`: reads k-space ``keys`` (and ``maps_key`` for ``"sensitivity"``), writes
    ``output_key`` (default: overwrite the key)."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_dims: int = 2,
        combine: str | None = "rss",
        maps_key: str = "sensitivity_maps",
        output_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.zf = ZeroFilled(spatial_dims, combine)
        self.maps_key = maps_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = d.get(self.maps_key) if self.zf.combine == "sensitivity" else None
            d[self.output_key or key] = self.zf(d[key], maps)
        return d


class CoilCombined(MapTransform):
    """Dictionary :class:`CoilCombine`: combines coil images in ``keys`` (maps from ``maps_key`` if needed)."""

    def __init__(
        self,
        keys: KeysCollection,
        method: str = "rss",
        spatial_dims: int = 2,
        maps_key: str = "sensitivity_maps",
        output_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.combine = CoilCombine(method, spatial_dims)
        self.maps_key = maps_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = d.get(self.maps_key) if self.combine.method == "sensitivity" else None
            d[self.output_key or key] = self.combine(d[key], maps)
        return d


class KspaceDataConsistencyd(MapTransform):
    """Dictionary :class:`KspaceDataConsistency`: projects the complex image(s) in ``keys`` onto the k-space in
    ``kspace_key`` with the mask in ``mask_key`` (and coil maps in ``maps_key`` if present)."""

    def __init__(
        self,
        keys: KeysCollection,
        kspace_key: str = "kspace",
        mask_key: str = "mask",
        maps_key: str | None = None,
        mode: str = "hard",
        weight: float = 1.0,
        spatial_dims: int = 2,
        cg_iters: int = 30,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.dc = KspaceDataConsistency(mode, weight, spatial_dims, cg_iters)
        self.kspace_key = kspace_key
        self.mask_key = mask_key
        self.maps_key = maps_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        needed = [k for k in (self.kspace_key, self.mask_key, self.maps_key) if k is not None and k not in d]
        if needed:
            raise KeyError(f"KspaceDataConsistencyd needs the keys {needed}; the data have {sorted(map(str, d))}")
        maps = d[self.maps_key] if self.maps_key is not None else None
        for key in self.key_iterator(d):
            d[key] = self.dc(d[key], d[self.kspace_key], d[self.mask_key], maps)
        return d
