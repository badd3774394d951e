"""Argument checks of `Stream`: loaders, counts (ints or ``float('inf')``) and lengths."""

from __future__ import annotations

import math
import operator
from typing import Any

from .._errors import ArgumentValueError

__all__ = ["check_count", "check_loader", "loader_len", "try_len"]


def try_len(loader: Any) -> int | None:
    """``len(loader)``, or None when the loader has no length (an iterator, an iterable dataset)."""
    try:
        return len(loader)
    except (TypeError, NotImplementedError):
        return None


def loader_len(loader: Any, owner: str, name: str) -> int:
    """``len(loader)`` for an argument `name` left to None, or a `ValueError` saying to pass it."""
    length = try_len(loader)
    if length is None:
        raise ValueError(
            f"{owner}: {name}=None means len(loader), but the loader "
            f"({type(loader).__name__}) has no len(); pass {name} explicitly"
        )
    return length


def check_loader(loader: Any, owner: str) -> Any:
    """Return `loader` if it is iterable and not a sized empty iterable, else raise.

    Iterability is judged from the class (``__iter__``, or ``__getitem__`` for the old sequence
    protocol) so that no iterator is created: ``iter()`` on a data loader may start workers.
    """
    kind = type(loader)
    if not (callable(getattr(kind, "__iter__", None)) or hasattr(kind, "__getitem__")):
        raise TypeError(
            f"{owner}: loader must be an iterable (a DataLoader, a list, an iterator...), "
            f"got {loader!r} ({kind.__name__})"
        )
    if try_len(loader) == 0:
        raise ArgumentValueError(
            f"{owner}: loader must not be empty, got {kind.__name__} with len(loader)=0; "
            "a stream over it would have no item to serve"
        )
    return loader


def check_count(value: Any, owner: str, name: str, minimum: int) -> int | None:
    """Return `value` as an int >= `minimum`, or None for ``float('inf')`` (no limit).

    Integers of any kind (numpy's too) are accepted; a float must be infinite. A bool, a string
    or any other type raises `TypeError`; a finite float or nan raises `ArgumentValueError`
    (the seed asserted there); an int below `minimum` raises `ValueError`.
    """
    if isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be an int or float('inf'), got {value!r} (bool)")
    if isinstance(value, float):
        if value == math.inf:
            return None
        raise ArgumentValueError(
            f"{owner}: {name} must be an int or float('inf'), got the float {name}={value!r}"
        )
    try:
        count = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{owner}: {name} must be an int or float('inf'), got {value!r} "
            f"({type(value).__name__})"
        ) from None
    if count < minimum:
        raise ArgumentValueError(f"{owner}: {name} must be an int >= {minimum}, got {name}={count}")
    return count
