"""Batches of items of similar length, grouped within a read-ahead window (infinibatch's)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from typing import Any

from .._checks import require_callable, require_positive
from .._errors import ArgumentTypeError
from .base import CheckpointableIterator
from .window import WindowTransform

__all__ = ["BucketedReadaheadBatchIterator"]


class BucketedReadaheadBatchIterator(WindowTransform):
    """Reads `read_ahead` items, sorts them by `key`, cuts them into batches, shuffles the batches.

    Infinibatch's algorithm and order (after Marian NMT's BatchGenerator): the sort is stable and
    longest first, so earlier randomisation is kept apart from the grouping; `batch_size` is an
    int or a function of a batch's first item; `boundary_key` starts a new batch whenever its
    value changes; with `shuffle` the batches of each read-ahead are shuffled by one
    ``Random(seed)``.

    State: ``{"read_ahead", "shuffle", "seed", "source", "random_state", "num_served"}``: the
    source's position and RNG state at the start of the current read-ahead, and how many of its
    batches were served. Restoring re-reads that read-ahead: a bounded replay of at most
    `read_ahead` items.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> words = NativeCheckpointableIterator(["a", "bbb", "cc", "dddd", "e"])
    >>> list(BucketedReadaheadBatchIterator(words, read_ahead=5, key=len, batch_size=2,
    ...                                     shuffle=False))
    [['dddd', 'bbb'], ['cc', 'a'], ['e']]
    """

    _POSITION_KEYS = ("source", "random_state", "num_served")
    _SERVED = "num_served"
    _WINDOW = "read-ahead"
    _transient = ("_batches",)

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        read_ahead: int,
        key: Callable[[Any], Any] | None,
        batch_size: int | Callable[[Any], int],
        boundary_key: Callable[[Any], Any] | None = None,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(source_iterator, seed)
        name = type(self).__name__
        self._read_ahead = require_positive(read_ahead, name, "read_ahead")
        self._key = require_callable(key, name, "key", optional=True)
        if not callable(batch_size):
            require_positive(batch_size, name, "batch_size")
        elif isinstance(batch_size, type):
            raise ArgumentTypeError(f"{name}: batch_size must be an int or a function")
        self._batch_size = batch_size
        self._boundary_key = require_callable(boundary_key, name, "boundary_key", optional=True)
        self._shuffle = bool(shuffle)
        self._batches: list[list[Any]] = []
        self._last_read = False  # the current read-ahead reached the end of the source
        self._restore(None)

    @property
    def _randomised(self) -> bool:
        return self._shuffle

    def __next__(self) -> list[Any]:
        while self._served >= len(self._batches):
            if self._last_read:
                raise StopIteration
            self._read_window()
        batch = self._batches[self._served]
        self._served += 1
        return batch

    def _read_window(self) -> None:
        self._mark_window()
        items = list(islice(self._source_iterator, self._read_ahead))
        self._last_read = len(items) < self._read_ahead
        batches = self._make_batches(items)
        if self._shuffle:
            self._random.shuffle(batches)
        self._batches, self._served = batches, 0

    def _window_size(self) -> int:
        return len(self._batches)

    def _forget_window(self) -> None:
        super()._forget_window()
        self._batches, self._last_read = [], False

    def _make_batches(self, items: list[Any]) -> list[list[Any]]:
        if self._key is not None:
            items.sort(key=self._key, reverse=True)
        batches: list[list[Any]] = []
        batch: list[Any] = []
        limit = 0
        boundary: Any = None
        for item in items:
            if self._boundary_key is not None:
                value = self._boundary_key(item)
                if value is None:
                    raise ValueError(
                        f"{type(self).__name__}: boundary_key returned None for {item!r}; "
                        "it must return a value other than None"
                    )
                if batch and value != boundary:
                    batches.append(batch)
                    batch = []
                boundary = value
            if not batch:
                limit = self._batch_size(item) if callable(self._batch_size) else self._batch_size
            batch.append(item)
            if len(batch) >= limit:
                batches.append(batch)
                batch = []
        if batch:
            batches.append(batch)
        return batches

    def _config(self) -> dict[str, Any]:
        return {"read_ahead": self._read_ahead, "shuffle": self._shuffle, "seed": self._seed}
