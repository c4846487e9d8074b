"""Device arguments of the command line, checked before any work starts."""

from __future__ import annotations

__all__ = ["resolve_device"]


def resolve_device(device: str | None, option: str = "--device") -> str:
    """``device`` checked (``None``: ``"cuda"`` when available, else ``"cpu"``).

    Raises:
        ValueError: not a device name, or CUDA asked for where there is none; the message names ``option``.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"{option} {device!r} is not a device name (cpu, cuda, cuda:N)") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {device!r}: CUDA is not available on this machine; use {option} cpu")
    return device
