"""Per-item transforms of a checkpointable pipeline: map, filter, batch, flatten, window, recur."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from random import Random
from typing import Any

from .._checks import require_callable, require_positive
from .._errors import IncompatibleStateError
from .._rng import decode_python_state
from .._state import plain_copy, state_int
from .base import (
    CheckpointableIterator,
    Node,
    RandomState,
    SourceState,
    Transform,
    advance,
    restores,
    snapshot,
    stream,
    take,
)

__all__ = [
    "FilterIterator",
    "FixedBatchIterator",
    "MapIterator",
    "RecurrentIterator",
    "SamplingRandomMapIterator",
    "SelectManyIterator",
    "WindowedIterator",
]

_END = object()


class MapIterator(Transform):
    """Applies `transform` to each item.

    `transform` must be a pure function of the item (as in every resumable pipeline, since a
    restore may re-read items): a stage that only needs to move past items (a
    `BufferedShuffleIterator` rebuilding its buffer) skips them without calling it, and a batch
    reader calls it from a C-level ``map`` over the source's items.

    State: ``{"source"}``; restoring is as cheap as restoring the source.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> list(MapIterator(NativeCheckpointableIterator([1, 2, 3]), lambda n: 2 * n))
    [2, 4, 6]
    """

    def __init__(self, source_iterator: CheckpointableIterator, transform: Callable[[Any], Any]):
        super().__init__(source_iterator)
        self._transform = require_callable(transform, type(self).__name__, "transform")

    def __next__(self) -> Any:
        return self._transform(next(self._source_iterator))

    def _stream(self) -> Iterator[Any]:
        if type(self).__next__ is not MapIterator.__next__:
            return self  # a subclass that does more per item keeps its __next__
        return map(self._transform, stream(self._source_iterator))

    def _advance(self, count: int) -> int:  # items nobody needs are not transformed
        if type(self).__next__ is not MapIterator.__next__:
            return sum(1 for _ in islice(self, count))  # a subclass's __next__ sees every item
        return advance(self._source_iterator, count)


class FilterIterator(Transform):
    """Yields the items for which `predicate(item)` is true.

    State: ``{"source"}``; restoring is as cheap as restoring the source.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> list(FilterIterator(NativeCheckpointableIterator(range(6)), lambda n: n % 2 == 0))
    [0, 2, 4]
    """

    def __init__(self, source_iterator: CheckpointableIterator, predicate: Callable[[Any], Any]):
        super().__init__(source_iterator)
        self._predicate = require_callable(predicate, type(self).__name__, "predicate")

    def __next__(self) -> Any:
        source, predicate = self._source_iterator, self._predicate
        while True:
            item = next(source)
            if predicate(item):
                return item

    def _stream(self) -> Iterator[Any]:
        if type(self).__next__ is not FilterIterator.__next__:
            return self  # a subclass that does more per item keeps its __next__
        return filter(self._predicate, stream(self._source_iterator))


class FixedBatchIterator(Transform):
    """Groups `batch_size` consecutive items into a list; the last list may be shorter.

    State: ``{"source"}``, the source's position at the start of the next batch; restoring is as
    cheap as restoring the source.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> list(FixedBatchIterator(NativeCheckpointableIterator(range(8)), batch_size=3))
    [[0, 1, 2], [3, 4, 5], [6, 7]]
    """

    def __init__(self, source_iterator: CheckpointableIterator, batch_size: int):
        super().__init__(source_iterator)
        self._batch_size = require_positive(batch_size, type(self).__name__, "batch_size")
        self._fused: tuple[int, Iterator[Any]] = (-1, iter(()))

    _transient = ("_fused",)

    def _restore(self, state: dict[str, Any] | None) -> None:
        super()._restore(state)
        self._fused = (-1, iter(()))

    def __next__(self) -> list[Any]:
        built, fused = self._fused
        if built != restores[0]:  # first batch, or a restore replaced iterators in the chain
            self._fused = (restores[0], fused := stream(self._source_iterator))
        size = self._batch_size
        batch = list(islice(fused, size))
        if len(batch) < size:  # the stream stopped: the end, or a block's or a pass's end
            self._fused = (-1, fused)
            batch += take(self._source_iterator, size - len(batch))
        if not batch:
            raise StopIteration
        return batch

    def _repr_args(self) -> dict[str, Any]:
        return {"batch_size": self._batch_size}


class SelectManyIterator(Transform):
    """Maps each item to an iterable with `collection_selector` and yields the iterables' items.

    Without a `collection_selector`, each item must itself be iterable (flattening).

    State: ``{"source", "offset"}``: the source's position before the item whose collection is
    being served, and how many of that collection's items were yielded. Restoring re-reads that
    one item, calls `collection_selector` on it once and skips `offset` items of the collection:
    a bounded replay of one collection.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> list(SelectManyIterator(NativeCheckpointableIterator([[1, 2], [], [3]])))
    [1, 2, 3]
    """

    _POSITION_KEYS = ("source", "offset")
    _transient = ("_collection",)

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        collection_selector: Callable[[Any], Iterable[Any]] | None = None,
    ):
        super().__init__(source_iterator)
        self._selector = require_callable(
            collection_selector, type(self).__name__, "collection_selector", optional=True
        )
        self._collection: Iterator[Any] = iter(())
        self._collection_state: SourceState | None = None
        self._offset = 0
        self._restore(None)

    def __next__(self) -> Any:
        item = next(self._collection, _END)
        if item is _END:
            return self._next_collection()
        self._offset += 1
        return item

    def _next_collection(self) -> Any:
        source = self._source_iterator
        take_snapshot = source._snapshot if isinstance(source, Node) else source.getstate
        while True:
            state = take_snapshot()
            collection = self._open(next(source))
            item = next(collection, _END)
            if item is not _END:
                self._collection, self._collection_state, self._offset = collection, state, 1
                return item

    def _open(self, source_item: Any) -> Any:
        return iter(source_item if self._selector is None else self._selector(source_item))

    def _position(self) -> dict[str, Any]:
        state = self._collection_state
        if state is None:  # no collection opened yet: the next one starts where the source is
            state = snapshot(self._source_iterator)
        return {"source": state, "offset": self._offset}

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._collection = iter(())
        self._collection_state = None
        self._offset = 0
        if state is None:
            self._source_iterator.setstate(None)
            return
        offset = state_int(type(self).__name__, state, "offset")
        self._source_iterator.setstate(state["source"])
        if offset:
            self._collection_state = state["source"]
            try:
                collection = self._open(next(self._source_iterator))
            except StopIteration:
                collection = iter(())
            skipped = sum(1 for _ in islice(collection, offset))
            if skipped < offset:
                raise IncompatibleStateError(
                    f"{type(self).__name__}: the state is at item {offset} of a collection that "
                    f"has only {skipped} items; it was saved over other data"
                )
            self._collection = collection
            self._offset = offset


class WindowedIterator(Transform):
    """Yields tuples of `width` consecutive items, sliding by one item.

    State: ``{"source", "index"}``: the source's position at the start of the current block of
    ``2 * width`` items and the index of the next window in it. Restoring re-reads at most
    ``2 * width - 1`` items. Once the source has fewer than `width` items left, `next` raises
    `StopIteration` at every call (as infinibatch's), and so does an iterator restored from a
    state taken there.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> list(WindowedIterator(NativeCheckpointableIterator([1, 2, 3, 4, 5]), width=3))
    [(1, 2, 3), (2, 3, 4), (3, 4, 5)]
    """

    _POSITION_KEYS = ("source", "index")
    _transient = ("_fifo",)

    def __init__(self, source_iterator: CheckpointableIterator, width: int):
        super().__init__(source_iterator)
        self._width = require_positive(width, type(self).__name__, "width")
        self._fifo: list[Any] = []
        self._started = False  # whether _fifo holds the current block
        self._fifo_state: SourceState = {}
        self._next_state: SourceState = {}
        self._index = 0
        self._last = -1
        self._exhausted = False
        self._restore(None)

    def __next__(self) -> tuple[Any, ...]:
        index = self._index
        while index > self._last:
            self._fill()
            index = self._index
        self._index = index + 1
        return tuple(self._fifo[index : index + self._width])

    def _fill(self) -> None:
        """Load the next block: the `width` items of the next windows plus up to `width` more."""
        if self._exhausted:
            raise StopIteration
        source, width = self._source_iterator, self._width
        if not self._started:  # first block after construction or a restore
            self._fifo_state = snapshot(source)
            self._fifo = list(islice(source, width))
            self._started = True
        else:  # drop what was served
            self._fifo = self._fifo[self._last + 1 :]
            self._fifo_state = self._next_state
            self._index = 0
        if len(self._fifo) < width:  # the end: no window, now and at every later call
            self._exhausted = True
            self._last = -1
            raise StopIteration
        self._next_state = snapshot(source)
        self._fifo.extend(islice(source, width))
        self._last = min(width - 1, len(self._fifo) - width)
        if self._index > self._last + 1:
            raise IncompatibleStateError(
                f"{type(self).__name__}: the state is at window {self._index} of a block that "
                f"has only {self._last + 1} windows; it was saved over other data"
            )

    def _config(self) -> dict[str, Any]:
        return {"width": self._width}

    def _position(self) -> dict[str, Any]:
        if not self._started:
            return {"source": snapshot(self._source_iterator), "index": self._index}
        return {"source": self._fifo_state, "index": self._index}

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._fifo = []
        self._started = False
        self._last = -1
        self._exhausted = False
        if state is None:
            self._source_iterator.setstate(None)
            self._index = 0
        else:
            name = type(self).__name__
            self._index = state_int(name, state, "index")
            if self._index > self._width:  # a block has at most `width` windows
                raise IncompatibleStateError(
                    f"{name}: the state's 'index' {self._index} is beyond the {self._width} "
                    "windows of a block"
                )
            self._source_iterator.setstate(state["source"])


class RecurrentIterator(Transform):
    """Threads a state through the items: ``state, output = step_function(state, item)``.

    The recurrent state must be plain data (dict with str keys, list, str, int, float, bool,
    None), since it is part of the pipeline's state; the step function may modify it in place.

    Args:
        source_iterator: the items.
        step_function: ``step_function(state, item) -> (new_state, output)``.
        initial_state: the state passed with the first item.

    State: ``{"source", "recurrent_state"}``, the latter a copy of the user's state; restoring is
    as cheap as restoring the source.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> running_sum = lambda total, n: (total + n, total + n)
    >>> list(RecurrentIterator(NativeCheckpointableIterator([1, 2, 3]), running_sum, 0))
    [1, 3, 6]
    """

    _POSITION_KEYS = ("source", "recurrent_state")

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        step_function: Callable[[Any, Any], tuple[Any, Any]],
        initial_state: Any = None,
    ):
        super().__init__(source_iterator)
        name = type(self).__name__
        self._step_function = require_callable(step_function, name, "step_function")
        self._initial_state = plain_copy(initial_state, f"{name}: initial_state")
        self._recurrent_state = plain_copy(self._initial_state)

    def __next__(self) -> Any:
        item = next(self._source_iterator)
        self._recurrent_state, output = self._step_function(self._recurrent_state, item)
        return output

    def _position(self) -> dict[str, Any]:
        where = f"{type(self).__name__}: the recurrent state"
        return {**super()._position(), "recurrent_state": plain_copy(self._recurrent_state, where)}

    def _restore(self, state: dict[str, Any] | None) -> None:
        super()._restore(state)
        initial = self._initial_state if state is None else state["recurrent_state"]
        self._recurrent_state = plain_copy(initial)


class SamplingRandomMapIterator(Transform):
    """Calls ``transform(random, item)`` with one ``random.Random(seed)`` drawn in sequence.

    For random augmentations that must repeat exactly after a resume: the generator passed to
    `transform` is the same object for every item, continuing from one item to the next, as in
    infinibatch.

    State: ``{"seed", "source", "random_state"}`` (the RNG state as plain lists); restoring is as
    cheap as restoring the source.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> it = SamplingRandomMapIterator(NativeCheckpointableIterator([10, 20]),
    ...                                lambda rng, n: n + rng.randrange(3), seed=0)
    >>> r = Random(0)
    >>> list(it) == [10 + r.randrange(3), 20 + r.randrange(3)]
    True
    """

    _POSITION_KEYS = ("source", "random_state")

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        transform: Callable[[Random, Any], Any],
        seed: int = 0,
    ):
        super().__init__(source_iterator)
        self._transform = require_callable(transform, type(self).__name__, "transform")
        self._seed = seed
        self._random = Random(seed)

    def __next__(self) -> Any:
        return self._transform(self._random, next(self._source_iterator))

    def _config(self) -> dict[str, Any]:
        return {"seed": self._seed}

    def _position(self) -> dict[str, Any]:
        return {**super()._position(), "random_state": RandomState(self._random.getstate())}

    def _restore(self, state: dict[str, Any] | None) -> None:
        super()._restore(state)
        if state is None:
            self._random.seed(self._seed)
        else:
            name = type(self).__name__
            self._random.setstate(decode_python_state(state["random_state"], name))
