"""Module-level functions that the concurrency tests run inside worker processes, and the
iterators of the lifecycle tests (also built by the subprocess scripts of those tests).

A ``spawn`` worker imports this module to unpickle them: it imports neither pytest nor torch
(at module level), so such a worker starts in a fraction of a second.
"""

from __future__ import annotations

import time
from typing import Any

from checkpointable.iterators import (
    MapIterator,
    NativeCheckpointableIterator,
    ParallelMapIterator,
    PrefetchIterator,
)


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


def prefetch_of(method: str, n: int = 200) -> PrefetchIterator:
    """A PrefetchIterator over `doubled(n)` in a worker started by `method` (or a thread)."""
    options = {"use_threads": True} if method == "thread" else {"multiprocessing_context": method}
    return PrefetchIterator(doubled(n), 4, **options)


def parallel_map_of(method: str, n: int = 200, processes: int = 2) -> ParallelMapIterator:
    """A ParallelMapIterator doubling range(n) in workers started by `method` (or threads)."""
    options = {"use_threads": True} if method == "thread" else {"multiprocessing_context": method}
    source = NativeCheckpointableIterator(list(range(n)))
    return ParallelMapIterator(source, double, processes, 3, **options)


def add_tensor_sum(tensor: Any, n: int) -> int:
    """`n` plus the sum of `tensor` (a transform that holds a tensor)."""
    return n + int(tensor.sum())
