"""The iterators that `Stream.data` and `Stream.epochs` hand out: counted views of the stream."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..stream import Stream

__all__ = ["DataItems", "EpochItems"]


class DataItems:
    """The iterator of `Stream.data`: the stream's next `size` items (None: no limit).

    As in the seed, the count is of the stream's iterations since the call, so items taken with
    `Stream.next` in the loop body count too.
    """

    __slots__ = ("_size", "_start", "_stream")

    def __init__(self, stream: Stream, size: int | None) -> None:
        self._stream = stream
        self._start = stream.iteration
        self._size = size

    def __iter__(self) -> DataItems:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        if self._size is not None and stream._iteration - self._start >= self._size:
            raise StopIteration
        return stream.next()


class EpochItems:
    """The iterator of one epoch of `Stream.epochs`, whose progress the stream's state records.

    The epoch in progress lives in the stream (``_epoch_start``, ``_epoch_size``), so that a
    state saved inside it resumes it; this iterator ends when the epoch has served its size,
    when the data is over, or when the stream moved on to another epoch (``_epoch_id``). With
    `pass_ends_epoch` (epochs sized by the loader, ``epoch_size=None``), an epoch that began
    with the first item of a pass of the loader (``_epoch_aligned``, as every epoch of an
    uninterrupted loop) is that pass: it ends when the pass ends, as ``for batch in loader``
    does. The two agree while ``len(loader)`` is right; a stateful loader resumed with another
    rest of its pass (a distributed sampler resumed on more or fewer ranks) ends the epoch
    where its own epoch ends, neither spilling into a new pass nor cutting the rest short.
    """

    __slots__ = ("_epoch_id", "_pass_ends_epoch", "_stream")

    def __init__(self, stream: Stream, epoch_id: int, pass_ends_epoch: bool = False) -> None:
        self._stream = stream
        self._epoch_id = epoch_id
        self._pass_ends_epoch = pass_ends_epoch

    def __iter__(self) -> EpochItems:
        return self

    def __next__(self) -> Any:
        stream = self._stream
        start = stream._epoch_start
        if start is None or stream._epoch_id != self._epoch_id:
            raise StopIteration
        by_pass = self._pass_ends_epoch and stream._epoch_aligned
        size = stream._epoch_size
        if not by_pass and size is not None and stream._iteration - start >= size:
            stream._epoch_start = None
            raise StopIteration
        try:
            if stream._iteration == start:  # the epoch's first item
                item = stream.next()
                stream._epoch_aligned = stream._from_new_pass
                return item
            if by_pass:
                return stream._next_in_pass()
            return stream.next()
        except StopIteration:
            stream._epoch_start = None
            raise

    def __repr__(self) -> str:
        return f"<epoch {self._stream.epoch} of {self._stream!r}>"
