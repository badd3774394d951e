"""Module-level functions that the concurrency tests run inside worker processes.

A ``spawn`` worker imports this module to unpickle them: it imports neither pytest nor torch
(at module level), so such a worker starts in a fraction of a second.
"""

from __future__ import annotations

import time
from typing import Any

from checkpointable.iterators import MapIterator, NativeCheckpointableIterator


def double(n: int) -> int:
    return 2 * n


def square(n: int) -> int:
    return n * n


def fail_at_5(n: int) -> int:
    if n == 5:
        raise ValueError("item 5 is bad")
    return n


class TwoArgumentError(Exception):
    """An exception that cannot be unpickled (its __init__ needs two arguments)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


def fail_unpicklably(n: int) -> int:
    if n == 2:
        raise TwoArgumentError(42, "no way back")
    return n


def slow_double(n: int) -> int:
    time.sleep(0.002)
    return 2 * n


def stuck_after_0(n: int) -> int:
    """0, then hangs: a worker stuck in the pipeline."""
    if n > 0:
        time.sleep(3600)
    return n


def tensor_of(n: int) -> Any:
    import torch

    return torch.full((4,), n, dtype=torch.int64)


def doubled(n: int = 13) -> MapIterator:
    """The source pipeline of most tests: 0, 2, 4, ... (2n - 2)."""
    return MapIterator(NativeCheckpointableIterator(list(range(n))), double)
