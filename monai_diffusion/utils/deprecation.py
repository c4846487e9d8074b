"""Renamed keywords: the old name keeps working for a while, with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings
from typing import Any, TypeVar

__all__ = ["renamed_keyword"]

T = TypeVar("T")


def renamed_keyword(owner: str, old: str, old_value: Any, new: str, new_value: T, default: T) -> T:
    """The value of a keyword renamed from ``old`` to ``new``.

    When the old keyword was given (``old_value`` is not ``None``) a ``DeprecationWarning`` names the new one and
    its value is used; giving both is an error.

    Args:
        owner: the callable the keywords belong to, for the messages (e.g. ``"DiffusionInferer.sample"``).
        old: the deprecated keyword.
        old_value: its value, ``None`` when it was not given.
        new: the keyword to use instead.
        new_value: its value.
        default: the new keyword's default (a value other than it counts as given).

    Raises:
        ValueError: if both keywords were given.
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise ValueError(f"{owner}: `{old}` is the old name of `{new}`; pass only `{new}`")
    warnings.warn(f"{owner}: `{old}` is deprecated, use `{new}`", DeprecationWarning, stacklevel=3)
    return old_value
