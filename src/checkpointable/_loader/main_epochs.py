"""One epoch read in the main process (``num_workers=0``): map style and iterable style.

There is no read-ahead here, so the user's states are read lazily when the state is written
(`LoaderState.refresh`): nothing is captured per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .batcher import Batcher
from .indices import EpochIndices
from .state import LoaderState

__all__ = ["MainMapEpoch", "MainSourceEpoch", "record_sampler"]


def record_sampler(state: LoaderState, before: Any, after: Any, exhausted: bool) -> None:
    """Keep a stateful sampler's position as of the task just delivered (see `indices`): its
    state after the task's draw, or, once its indices ran out, the one before that draw."""
    state.sampler_state = before if exhausted else after
    state.sampler_exhausted = exhausted


class _MainEpoch(Iterator[Any]):
    def __init__(self, state: LoaderState, finish: Callable[[], None]) -> None:
        self._state = state
        self._finish = finish
        self._done = False

    @property
    def done(self) -> bool:
        """Whether this epoch ended (or was closed): it delivers no more batches."""
        return self._done

    def close(self) -> None:
        """Stop this epoch: later ``next()`` calls raise StopIteration, the state is left as is."""
        self._done = True

    def _end(self) -> None:
        self._done = True
        self._finish()


class MainMapEpoch(_MainEpoch):
    """Map style: draw the next index list, read and collate the items, deliver.

    Args:
        state: the loader's state, updated per batch.
        indices: the epoch's index lists, positioned at ``state.batches``.
        fetch: reads and collates one index list (and pins it when asked).
        finish: called once when the epoch ends.
        capture: reads a stateful sampler's state, or None; called before and after each draw
            (see `record_sampler`).
    """

    def __init__(
        self,
        state: LoaderState,
        indices: EpochIndices,
        fetch: Callable[[Any], Any],
        finish: Callable[[], None],
        capture: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__(state, finish)
        self._indices = indices
        self._fetch = fetch
        self._capture = capture
        self._position = state.batches
        self._skip = set(state.beyond)  # delivered out of order before the state was saved
        self._absorb()

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        before = self._capture() if self._capture is not None else None
        ran_out = self._indices.exhausted  # the last delivered draw ran the indices out already
        try:
            task = next(self._indices)
        except StopIteration:
            if self._capture is not None and not ran_out:
                record_sampler(self._state, before, None, True)
            self._end()
            raise
        after = self._capture() if self._capture is not None else None
        position = self._position
        self._position += 1
        try:
            return self._fetch(task)
        finally:  # a failed batch counts as delivered, as torch moves past it
            self._state.deliver(position)
            if self._capture is not None:
                record_sampler(self._state, before, after, self._indices.exhausted)
            self._absorb()

    def _absorb(self) -> None:
        """Draw past the positions already delivered, so the sampler sits at the next batch."""
        while self._skip and self._position in self._skip:
            self._skip.discard(self._position)
            before = self._capture() if self._capture is not None else None
            try:
                next(self._indices)
            except StopIteration:
                return
            if self._capture is not None:
                record_sampler(self._state, before, self._capture(), self._indices.exhausted)
            self._position += 1


class MainSourceEpoch(_MainEpoch):
    """Iterable style: batches round-robin over the streams, skipping exhausted ones.

    Args:
        state: the loader's state; ``state.streams[i]`` is stream i's entry.
        streams: the started streams (one per shard, or one over the dataset).
        pin: pins a batch (or returns it as is).
        finish: called once when the epoch ends.
        check_length: called with the number of batches delivered in the epoch after each
            (torch's warning when an iterable dataset is longer than it said), or None.
    """

    def __init__(
        self,
        state: LoaderState,
        streams: list[Batcher],
        pin: Callable[[Any], Any],
        finish: Callable[[], None],
        check_length: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(state, finish)
        self.streams = streams
        self._pin = pin
        self._check_length = check_length

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        state = self._state
        entries = state.streams
        count = len(entries)
        for _ in range(count):
            index = state.next_stream
            entry = entries[index]
            state.next_stream = (index + 1) % count
            if entry["ended"]:
                continue
            stream = self.streams[index]
            try:
                batch, _, exhausted = stream.next()
            except StopIteration:
                entry["ended"] = True
                continue
            entry["ended"] = exhausted
            if not stream.stateful:
                entry["replay"] += 1
            state.batches += 1
            if self._check_length is not None:
                self._check_length(state.batches)
            return self._pin(batch)
        self._end()
        raise StopIteration
