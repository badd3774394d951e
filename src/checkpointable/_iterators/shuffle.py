"""Shuffling and bucketing with a bounded buffer, restored by re-reading, never by saving data."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from operator import itemgetter
from random import Random
from typing import Any

from .._checks import require_positive
from .._errors import IncompatibleStateError
from .._rng import decode_python_state
from .._state import state_int
from .base import (
    CheckpointableIterator,
    RandomState,
    SourceState,
    Transform,
    advance,
    snapshot,
    take,
)
from .window import WindowTransform

__all__ = ["BlockwiseShuffleIterator", "BufferedShuffleIterator"]

_EMPTY = object()  # an empty buffer slot; None is an ordinary item
_NEVER = 1 << 62  # birth of an empty slot: later than any real item


class BufferedShuffleIterator(Transform):
    """Shuffles with a buffer of `buffer_size` slots, in infinibatch's order.

    Each source item replaces the item in a random slot (``Random(seed).randrange``), and the
    replaced item is yielded; at the end of the source the remaining items are yielded from the
    last slot to the first. Unlike infinibatch, ``None`` is an ordinary item, and the buffer is
    not part of the state.

    Restoring rebuilds the buffer from a snapshot taken no later than the oldest item still
    buffered (the source's state and the RNG state; snapshots are taken every `buffer_size`
    items, so the hot path pays one list store per item). The slot draws since the snapshot are
    made again with the RNG alone (on average about ``buffer_size * (ln(buffer_size) + 2)``
    draws, as an item stays buffered for ``buffer_size`` draws on average); then only the items
    still buffered are read from the source, at most `buffer_size`, and the source moves over
    the others without reading them (a seek when it is a sequence source, possibly under
    `MapIterator` stages, whose transform is then not called for them). So the cost is bounded
    by the buffer wherever the state was taken; over a source that cannot seek, the items in
    between are read and dropped.

    Args:
        source_iterator: the items.
        buffer_size: number of slots; larger shuffles better and restores slower.
        seed: seed of the RNG choosing the slots.

    State: ``{"buffer_size", "seed", "source", "random_state", "replay", "flushed"}``: the
    snapshot's source state and RNG state, the number of source items read since it (all
    re-drawn, at most `buffer_size` of them re-read), and how many slots the final flush has
    emptied (None before the source ended).

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> sorted(BufferedShuffleIterator(NativeCheckpointableIterator(range(5)), 3))
    [0, 1, 2, 3, 4]
    """

    _POSITION_KEYS = ("source", "random_state", "replay", "flushed")
    _transient = ("_buffer", "_born", "_snapshots")

    def __init__(
        self, source_iterator: CheckpointableIterator, buffer_size: int, seed: int | None = 0
    ):
        super().__init__(source_iterator)
        self._buffer_size = require_positive(buffer_size, type(self).__name__, "buffer_size")
        self._seed = seed
        self._random = Random(seed)
        self._buffer: list[Any] = []
        self._born: list[int] = []  # when each slot's item was read (source item count)
        self._count = 0  # source items read since the first snapshot
        self._snapshots: deque[tuple[int, SourceState, tuple[Any, ...]]] = deque()
        self._next_snapshot = 0
        self._flushed: int | None = None  # slots emptied by the final flush, None while reading
        self._flush_from: tuple[tuple[int, SourceState, tuple[Any, ...]], int] | None = None
        self._restore(None)

    def __next__(self) -> Any:
        if self._flushed is not None:
            return self._flush_next()
        buffer, born, source = self._buffer, self._born, self._source_iterator
        randrange, size = self._random.randrange, self._buffer_size
        while True:
            count = self._count
            if count == self._next_snapshot:
                self._take_snapshot()
            try:
                item = next(source)
            except StopIteration:
                self._start_flush()
                return self._flush_next()
            slot = randrange(size)
            previous = buffer[slot]
            buffer[slot] = item
            born[slot] = count
            self._count = count + 1
            if previous is not _EMPTY:
                return previous

    def _take_snapshot(self) -> None:
        """Record where the source and the RNG are now; drop snapshots no longer needed."""
        self._snapshots.append(
            (self._count, snapshot(self._source_iterator), self._random.getstate())
        )
        self._next_snapshot = self._count + self._buffer_size
        oldest = min(self._born)
        while len(self._snapshots) > 1 and self._snapshots[1][0] <= oldest:
            self._snapshots.popleft()

    def _usable_snapshot(self) -> tuple[int, SourceState, tuple[Any, ...]]:
        """The latest snapshot taken no later than the oldest buffered item."""
        oldest = min(self._born)
        chosen = self._snapshots[0]
        for candidate in self._snapshots:
            if candidate[0] > oldest:
                break
            chosen = candidate
        return chosen

    def _start_flush(self) -> None:
        self._flush_from = (self._usable_snapshot(), self._count)
        self._flushed = 0

    def _flush_next(self) -> Any:
        buffer = self._buffer
        while buffer:
            item = buffer.pop()
            self._flushed = self._buffer_size - len(buffer)
            if item is not _EMPTY:
                return item
        raise StopIteration

    def _config(self) -> dict[str, Any]:
        return {"buffer_size": self._buffer_size, "seed": self._seed}

    def _position(self) -> dict[str, Any]:
        if self._flush_from is not None:
            (taken, source, random_state), count = self._flush_from
        elif not self._snapshots:  # nothing read yet
            taken, count = 0, 0
            source, random_state = snapshot(self._source_iterator), self._random.getstate()
        else:
            taken, source, random_state = self._usable_snapshot()
            count = self._count
        return {
            "source": source,
            "random_state": RandomState(random_state),
            "replay": count - taken,
            "flushed": self._flushed,
        }

    def _restore(self, state: dict[str, Any] | None) -> None:
        name = type(self).__name__
        self._buffer = [_EMPTY] * self._buffer_size
        self._born = [_NEVER] * self._buffer_size
        self._count = 0
        self._flushed = None
        self._flush_from = None
        if state is None:
            self._source_iterator.setstate(None)
            self._random.seed(self._seed)
            self._snapshots = deque()
            self._next_snapshot = 0
            return
        replay = state_int(name, state, "replay")
        flushed = state["flushed"]
        if flushed is not None:
            flushed = state_int(name, state, "flushed")
            if flushed > self._buffer_size:
                raise IncompatibleStateError(
                    f"{name}: the state flushed {flushed} slots of a {self._buffer_size}-slot buffer"
                )
        random_state = decode_python_state(state["random_state"], name)
        self._source_iterator.setstate(state["source"])
        self._random.setstate(random_state)
        snapshot = (0, state["source"], random_state)
        self._snapshots = deque([snapshot])
        self._replay(replay, state["source"])
        self._next_snapshot = replay  # the next snapshot comes with the next item read
        if flushed is not None:
            self._flush_from = (snapshot, replay)
            del self._buffer[self._buffer_size - flushed :]
            self._flushed = flushed

    def _replay(self, count: int, source_state: Any) -> None:
        """Refill the buffer as the run did over the `count` items read since the snapshot.

        The slots are drawn again first (RNG only): an item is in the buffer if no later draw
        hit its slot. Then only those items are read; the source moves over the others with
        `advance` (a seek on a sequence source, no transform in a map). So a restore reads at
        most `buffer_size` items, wherever the state was taken. A replay longer than
        ``64 * buffer_size`` items (in a real run the oldest buffered item is that old with a
        probability of about ``buffer_size * e**-63``) is first checked against the source, so
        that a state saved over other data is refused before the draws; that check moves the
        source over the items once more (reads them, for a source that cannot seek).
        """
        source, size = self._source_iterator, self._buffer_size
        if count > 64 * size:
            chunk = 64 * size
            for start in range(0, count, chunk):
                moved = advance(source, min(chunk, count - start))
                if moved < min(chunk, count - start):
                    self._ended(count, start + moved)
            source.setstate(source_state)
        latest: dict[int, int] = {}  # a slot -> its last draw
        _draw_slots(self._random, size, count, latest)
        buffer, born = self._buffer, self._born
        read = 0  # items of the replay the source has moved over
        for slot, index in sorted(latest.items(), key=itemgetter(1)):
            moved = advance(source, index - read)
            item = next(source, _EMPTY) if moved == index - read else _EMPTY
            if item is _EMPTY:
                self._ended(count, read + moved)
            buffer[slot] = item
            born[slot] = index
            read = index + 1
        moved = advance(source, count - read)
        if moved < count - read:
            self._ended(count, read + moved)
        self._count = count

    def _ended(self, count: int, read: int) -> None:
        raise IncompatibleStateError(
            f"{type(self).__name__}: the state replays {count} items but the source ended "
            f"after {read}; it was saved over other data"
        )


def _draw_slots(random: Random, size: int, count: int, latest: dict[int, int]) -> None:
    """Draw the next `count` values of ``random.randrange(size)`` into `latest`, a slot -> the
    index of its last draw (memory: one entry per slot, whatever `count`). Drawn as `random.Random.randrange`
    draws them (``getrandbits`` of ``size.bit_length()`` bits, redrawn while >= `size`) but
    without its Python calls per draw; the RNG ends where `count` randrange calls leave it."""
    bits, getrandbits = size.bit_length(), random.getrandbits
    for index in range(count):
        value = getrandbits(bits)
        while value >= size:
            value = getrandbits(bits)
        latest[value] = index


class BlockwiseShuffleIterator(WindowTransform):
    """Shuffles consecutive blocks of `block_size` items, in infinibatch's order.

    Blocks are read like ``FixedBatchIterator(source_iterator, block_size)`` (the last may be
    shorter), each shuffled with ``random.shuffle`` by one ``Random(seed)`` carried from block to
    block, and their items yielded in turn.

    State: ``{"block_size", "seed", "source", "random_state", "offset"}``: the source's position
    and the RNG state at the start of the current block, and how many of its items were yielded.
    Restoring re-reads and re-shuffles that one block: a bounded replay of < `block_size` items.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> it = BlockwiseShuffleIterator(NativeCheckpointableIterator(range(6)), block_size=3)
    >>> items = list(it)
    >>> sorted(items[:3]), sorted(items[3:])
    ([0, 1, 2], [3, 4, 5])
    """

    _POSITION_KEYS = ("source", "random_state", "offset")
    _SERVED = "offset"
    _WINDOW = "block"
    _transient = ("_block", "_block_iterator")
    _block_iterator: Any  # a list iterator over _block; it counts the items served

    def __init__(
        self, source_iterator: CheckpointableIterator, block_size: int, seed: int | None = 0
    ):
        self._block: list[Any] = []
        super().__init__(source_iterator, seed)
        self._block_size = require_positive(block_size, type(self).__name__, "block_size")
        self._restore(None)

    @property
    def _served(self) -> int:
        """Read from the block's list iterator when asked, so serving an item updates nothing."""
        left: int = self._block_iterator.__length_hint__()
        return len(self._block) - left

    @_served.setter
    def _served(self, served: int) -> None:
        self._block_iterator = iter(self._block)
        self._block_iterator.__setstate__(served)

    def __next__(self) -> Any:
        item = next(self._block_iterator, _EMPTY)
        if item is _EMPTY:
            self._read_window()
            item = next(self._block_iterator, _EMPTY)
            if item is _EMPTY:
                raise StopIteration
        return item

    def _stream(self) -> Iterator[Any]:
        if type(self).__next__ is not BlockwiseShuffleIterator.__next__:
            return self  # a subclass that does more per item keeps its __next__
        iterator: Iterator[Any] = self._block_iterator  # stops at the block's end: the reader
        return iterator  # then calls next()

    def _read_window(self) -> None:
        self._mark_window()
        block = take(self._source_iterator, self._block_size)
        self._random.shuffle(block)
        self._block = block
        self._served = 0

    def _window_size(self) -> int:
        return len(self._block)

    def _forget_window(self) -> None:
        self._block = []
        super()._forget_window()

    def _config(self) -> dict[str, Any]:
        return {"block_size": self._block_size, "seed": self._seed}
