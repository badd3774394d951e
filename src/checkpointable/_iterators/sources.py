"""Source iterators over a list or sequence, in one pass, and over an RNG."""

from __future__ import annotations

import collections.abc
import sys
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from random import Random
from typing import Any

from .._checks import check_sharding, short_repr
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._rng import decode_python_state
from .._state import state_int
from .base import Node, RandomState, require_items, restores

__all__ = ["ChunkedSourceIterator", "NativeCheckpointableIterator", "RandomIterator"]


class _Probe:  # a minimal sequence, to learn the type of CPython's sequence iterator
    def __getitem__(self, index: int) -> int:
        raise IndexError(index)


# Iterators of built-in sequences that can be positioned in O(1) with __setstate__(index).
_SEEKABLE_SAMPLES: tuple[Any, ...] = ([], (), range(0), "", "\u00e9", b"", bytearray(), _Probe())
_SEEKABLE_ITERATORS = frozenset(type(iter(sample)) for sample in _SEEKABLE_SAMPLES)


class NativeCheckpointableIterator(Node):
    """Turns an iterable into a checkpointable iterator.

    Restoring is O(1) for a sequence (anything with ``__len__`` and ``__getitem__`` that is not a
    mapping: lists, tuples, ranges, tensors, map-style datasets): the iterator seeks to the saved
    index. Any other iterable is restored by replaying it from its start up to the saved position
    (a cost linear in the position), as in infinibatch. Serving an item updates no counter: the
    position is read from the C iterator (its ``__length_hint__``) when a state is taken.

    Args:
        iterable: the items; it must be an iterable that restarts on each ``iter()``, not an
            iterator (which cannot be rewound).

    Raises:
        ArgumentTypeError: `iterable` is an iterator or not iterable.

    State: ``{"num_items_yielded": n}``; restoring costs O(1) for a sequence, n items otherwise.

    >>> it = NativeCheckpointableIterator([10, 20, 30])
    >>> next(it)
    10
    >>> state = it.getstate()
    >>> list(it)
    [20, 30]
    >>> it.setstate(state)
    >>> list(it)
    [20, 30]
    """

    _POSITION_KEYS = ("num_items_yielded",)

    def __init__(self, iterable: Iterable[Any]) -> None:
        name = type(self).__name__
        try:
            probe = iter(iterable)
        except TypeError:
            raise ArgumentTypeError(
                f"{name}: iterable must be an iterable, got {type(iterable).__name__}"
            ) from None
        if probe is iterable:
            raise ArgumentTypeError(
                f"{name}: iterable must be an iterable that restarts on each iter(), got the "
                f"iterator {type(iterable).__name__}, which cannot be rewound to a checkpoint; "
                "pass the list, sequence or container it iterates over instead"
            )
        self._iterable = iterable
        self._seekable = type(probe) in _SEEKABLE_ITERATORS and hasattr(iterable, "__len__")
        self._sequence = (
            not self._seekable
            and hasattr(iterable, "__len__")
            and hasattr(iterable, "__getitem__")
            and not isinstance(iterable, collections.abc.Mapping)
        )
        self._restore(None)

    _transient = ("_iterator", "_ticks")

    def __next__(self) -> Any:
        return next(self._iterator)

    def _stream(self) -> Iterator[Any]:
        if type(self).__next__ is not NativeCheckpointableIterator.__next__:
            return self  # a subclass that does more per item keeps its __next__
        iterator: Iterator[Any] = self._iterator
        return iterator

    @property
    def _num_items_yielded(self) -> int:
        """Read from the C iterator when asked, so serving an item updates no counter."""
        left: int = self._ticks.__length_hint__()
        return self._end - left

    def _position(self) -> dict[str, Any]:
        return {"num_items_yielded": self._num_items_yielded}

    def _advance(self, count: int) -> int:
        if self._stream() is self:  # a subclass's __next__ sees every item
            return sum(1 for _ in islice(self, count))
        if not (self._seekable or self._sequence):  # no seek: read and drop
            return sum(1 for _ in islice(self._iterator, count))
        start = self._num_items_yielded
        stop = min(start + count, self._end)
        self._open(stop)
        restores[0] += 1  # the iterator was replaced: fused streams over it are rebuilt
        return stop - start

    def _restore(self, state: dict[str, Any] | None) -> None:
        count = 0 if state is None else state_int(type(self).__name__, state, "num_items_yielded")
        self._open(count)

    def _open(self, count: int) -> None:
        """Serve the items from index `count` on: `_iterator` yields them, and `_ticks` (an
        iterator whose ``__length_hint__`` is ``_end`` minus the position) counts them."""
        iterable: Any = self._iterable
        if self._seekable or self._sequence:
            length = len(iterable)
            if count > length:
                self._beyond_end(count, length)
            self._end = length
            if self._seekable:  # the list (tuple, range...) iterator counts for itself
                self._iterator = self._ticks = iter(iterable)
                if count:
                    self._iterator.__setstate__(count)
            else:
                self._ticks = iter(range(count, length))
                self._iterator = map(iterable.__getitem__, self._ticks)
            return
        iterator = iter(iterable)
        skipped = sum(1 for _ in islice(iterator, count))
        if skipped < count:
            self._beyond_end(count, skipped)
        # zip reads the item first, then a tick: a tick is taken only for an item served
        self._end = sys.maxsize
        self._ticks = iter(range(count, sys.maxsize))
        self._iterator = map(itemgetter(0), zip(iterator, self._ticks, strict=False))

    def _beyond_end(self, count: int, length: int) -> None:
        raise IncompatibleStateError(
            f"{type(self).__name__}: the state is at item {count}, but the iterable has only "
            f"{length} items; it was saved over other data"
        )

    def _repr_args(self) -> dict[str, Any]:
        return {"iterable": short_repr(self._iterable)}


class ChunkedSourceIterator(NativeCheckpointableIterator):
    """Serves the contiguous part `instance_rank` of `source_items` cut into `num_instances` parts.

    The parts differ in size by at most one item, the first ones being the larger, as in
    infinibatch. Meant for inference or validation on several processes.

    Args:
        source_items: the items, a non-empty sequence.
        num_instances: number of parts, e.g. the number of processes.
        instance_rank: which part this iterator serves, in ``range(num_instances)``.

    State: ``{"num_instances", "instance_rank", "num_items_yielded"}``; restoring is O(1).

    >>> list(ChunkedSourceIterator(list(range(10)), num_instances=3, instance_rank=0))
    [0, 1, 2, 3]
    >>> list(ChunkedSourceIterator(list(range(10)), num_instances=3, instance_rank=2))
    [7, 8, 9]
    """

    def __init__(
        self, source_items: Sequence[Any], num_instances: int = 1, instance_rank: int = 0
    ) -> None:
        name = type(self).__name__
        check_sharding(name, num_instances, instance_rank)
        size = require_items(name, source_items)
        per_rank, larger = divmod(size, num_instances)

        def boundary(rank: int) -> int:
            return rank * per_rank + min(rank, larger)

        start, stop = boundary(instance_rank), boundary(instance_rank + 1)
        part: Any = (
            source_items[start:stop]
            if isinstance(source_items, list | tuple | range | str)
            else _Slice(source_items, start, stop)
        )
        self._num_instances = num_instances
        self._instance_rank = instance_rank
        super().__init__(part)

    def _config(self) -> dict[str, Any]:
        return {"num_instances": self._num_instances, "instance_rank": self._instance_rank}


class RandomIterator(Node):
    """Endless uniform random floats in [0, 1): ``random.Random(seed).random()`` in sequence.

    State: ``{"seed", "random_state"}`` (the RNG state as plain lists); restoring is O(1).

    >>> it = RandomIterator(seed=1)
    >>> next(it) == Random(1).random()
    True
    """

    _POSITION_KEYS = ("random_state",)

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._random = Random(seed)

    def __next__(self) -> float:
        return self._random.random()

    def _config(self) -> dict[str, Any]:
        return {"seed": self._seed}

    def _position(self) -> dict[str, Any]:
        return {"random_state": RandomState(self._random.getstate())}

    def _restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            self._random.seed(self._seed)
        else:
            self._random.setstate(decode_python_state(state["random_state"], "RandomIterator"))


class _Slice:
    """A read-only view of ``data[start:stop]`` for sequences that cannot be sliced cheaply."""

    def __init__(self, data: Any, start: int, stop: int) -> None:
        self._data, self._start, self._stop = data, start, stop

    def __len__(self) -> int:
        return self._stop - self._start

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < self._stop - self._start:
            raise IndexError(index)
        return self._data[self._start + index]
