"""What every resumable sampler shares: the epoch, the position, ``start_iter`` and the state.

A sampler's iterator yields its indices in chunks of at most `CHUNK` (a list or range iterator
each, chained in C), so yielding an index costs what iterating a list costs. The position is
not counted per index: a `Cursor` remembers the current chunk and where it ends, and the
position is read from the chunk's remaining length only when it is asked for (``state_dict``,
``start_iter``). Restoring never replays: the next iterator slices its order from the position.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.utils.data

from .._checks import SEED_RANGE, require_int
from .._errors import IncompatibleStateError
from .._state import StateBase, state_int

__all__ = ["CHUNK", "Cursor", "ResumableMixin", "ResumableSampler"]

#: Indices converted to Python ints at a time: small enough that the first index comes fast,
#: large enough that the per-chunk work is lost in the per-index work.
CHUNK = 4096

#: The seeds ``torch.Generator.manual_seed`` accepts (``seed + epoch`` must stay inside).


class Cursor:
    """Where a live iterator is: the end of its current chunk minus what is left of that chunk."""

    __slots__ = ("chunk", "end")

    def __init__(self, start: int) -> None:
        self.chunk: Iterator[int] = iter(())
        self.end = start

    def position(self) -> int:
        return self.end - operator.length_hint(self.chunk)


class ResumableMixin(StateBase):
    """The epoch, position and state logic shared by `ResumableSampler` and the distributed one.

    A subclass calls `_init_resumable` first in its constructor and defines `_chunks` (the
    iterator of index chunks from a position, reading its configuration eagerly), `_config`
    (the configuration stored in and checked against a state, see `StateBase`) and, when its
    position is more than one int, `_POSITION_KEYS`, `_position_state`, `_load_position` and
    `_rewind`.
    """

    _POSITION_KEYS: ClassVar[tuple[str, ...]] = ("epoch", "position")
    #: A pass that ran out ends the epoch: the next pass is the next epoch (else the same again).
    _PASS_ENDS_EPOCH: ClassVar[bool] = False

    _batch_size: int
    _epoch: int
    _skip: int  # where the next iterator starts, when no iterator is live
    _cursor: Cursor | None  # the live iterator's cursor: only the newest iterator counts
    _finished: bool  # the last iterator ran to the end: the next one starts the epoch over

    if TYPE_CHECKING:

        def __len__(self) -> int: ...

    def _init_resumable(self, batch_size: int) -> None:
        self._batch_size = require_int(batch_size, type(self).__name__, "batch_size", minimum=1)
        self._epoch = 0
        self._skip = 0
        self._cursor = None
        self._finished = False

    # ------------------------------------------------------------------ configuration
    @property
    def batch_size(self) -> int:
        """The number of samples per batch; only `start_iter` depends on it."""
        return self._batch_size

    @property
    def epoch(self) -> int:
        """The current epoch; assigning it is `set_epoch`."""
        return self._epoch

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which seeds the order. Another epoch starts at its beginning; the same
        epoch keeps the position, so calling ``set_epoch(epoch)`` right after
        ``load_state_dict`` still resumes mid-epoch.

        Raises:
            TypeError, ValueError: `epoch` is not an int >= 0.
        """
        epoch = require_int(epoch, type(self).__name__, "epoch", minimum=0)
        if epoch != self._epoch:
            self._epoch = epoch
            self._restart()

    # ------------------------------------------------------------------ position
    @property
    def position(self) -> int:
        """Samples of the current epoch this sampler's iterators have yielded."""
        return self._offset()

    @property
    def start_iter(self) -> int:
        """The batch view of the position: the number of batches of the epoch already drawn.

        Reading it gives ``ceil(position / batch_size)`` (a final partial batch counts as drawn).
        Setting it (helios' way of resuming) makes the next iterator skip the first
        ``start_iter * batch_size`` samples of the epoch.
        """
        return -(-self.position // self._batch_size)

    @start_iter.setter
    def start_iter(self, start_iter: int) -> None:
        name = type(self).__name__
        length = len(self)
        batches = -(-length // self._batch_size)
        require_int(start_iter, name, "start_iter", minimum=0)
        if start_iter > batches:
            raise ValueError(
                f"{name}: start_iter must be <= {batches}, the number of batches of an epoch "
                f"(len={length}, batch_size={self._batch_size}), got {start_iter=}"
            )
        self._restart()
        self._skip = min(start_iter * self._batch_size, length)

    def advance(self, num_samples: int) -> int:
        """Skip the next `num_samples` samples of the pass without drawing them; O(1).

        The samples skipped are those the next iterator would yield first (after a pass that
        ran out: the start of the next pass, as an iterator would begin it); the skip ends with
        the pass. A live iterator stops counting, as when a new iterator is taken: the next
        iterator starts after the skipped samples. The position, and so the state, moves by
        the samples skipped (the distributed sampler's ``progress`` by that many per rank: the
        same prefix of the epoch's order on every rank that advances alike).

        Args:
            num_samples: how many samples to skip, an int >= 0.

        Returns:
            The samples skipped: `num_samples`, or fewer when the pass ends first.

        Raises:
            TypeError, ValueError: `num_samples` is not an int >= 0.

        >>> from checkpointable.samplers import ResumableSequentialSampler
        >>> sampler = ResumableSequentialSampler(range(6))
        >>> sampler.advance(4), list(sampler)
        (4, [4, 5])
        >>> sampler.advance(10), list(sampler)  # the next pass, cut at its end
        (6, [])
        """
        require_int(num_samples, type(self).__name__, "num_samples", minimum=0)
        if self._finished:
            iter(self)  # begin the next pass as an iterator would (a subclass may change epoch)
        start = self._offset()
        end = min(start + num_samples, self._pass_length())
        self._cursor = None
        self._skip = end
        return end - start

    def _pass_length(self) -> int:
        """The samples of the current pass, counted like the position."""
        return len(self)

    def _offset(self) -> int:
        cursor = self._cursor
        return self._skip if cursor is None else cursor.position()

    def _restart(self) -> None:
        """Go back to the start of the current epoch; a live iterator stops counting."""
        self._skip = 0
        self._cursor = None
        self._finished = False
        self._rewind()

    def _rewind(self) -> None:
        """Reset what the subclass adds to the position (the distributed segment)."""

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[int]:
        if self._finished:  # iterated again after a whole epoch: the epoch again, as in torch
            self._epoch += self._PASS_ENDS_EPOCH  # or the next epoch
            self._restart()
        start = self._offset()  # an abandoned iterator's position is the epoch's position
        self._skip = start
        cursor = Cursor(start)
        self._cursor = cursor
        return chain.from_iterable(self._run(cursor, self._chunks(cursor, start)))

    def _run(self, cursor: Cursor, chunks: Iterator[Iterator[int]]) -> Iterator[Iterator[int]]:
        yield from chunks
        # Reached only when the iterator runs out, never when it is abandoned. The position
        # stays at the end (a checkpoint taken while the last batch is trained on must not
        # resume at the start of the epoch); the next iterator starts the epoch over.
        if self._cursor is cursor:
            self._skip = cursor.position()
            self._cursor = None
            self._finished = True

    def _chunks(self, cursor: Cursor, start: int) -> Iterator[Iterator[int]]:
        """The index chunks from `start` on; update `cursor` before yielding each chunk."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state
    def _config(self) -> dict[str, Any]:
        return {"dataset_length": len(self)}

    def _position_state(self) -> dict[str, Any]:
        return {"position": self._offset()}

    def _load_position(self, state: dict[str, Any]) -> None:
        name = type(self).__name__
        position = state_int(name, state, "position")
        length = len(self)
        if position > length:
            raise_beyond(name, "position", position, length)
        self._skip = position

    def _position(self) -> dict[str, Any]:
        return {"epoch": self._epoch, **self._position_state()}

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checked state: the next iterator starts there."""
        self._epoch = state_int(type(self).__name__, state, "epoch")
        self._restart()
        self._load_position(state)

    def _repr_args(self) -> dict[str, Any]:
        return {**self._config(), "batch_size": self._batch_size}


class ResumableSampler(ResumableMixin, torch.utils.data.Sampler[int]):
    r"""Base class for samplers that are resumable.

    Let :math:`b_i` be the i-th batch of epoch :math:`e`, followed by :math:`b_{i+1},
    b_{i+2}, \ldots`. If training stops right after batch :math:`b_i` was loaded, a resumable
    sampler, restarted in epoch :math:`e`, loads :math:`b_{i+1}` next, and the batches after it
    are identical to those the uninterrupted epoch would have produced. The next epoch starts
    from its beginning.

    The sampler counts the samples its iterator has yielded (``position``); with a
    ``DataLoader`` that does not prefetch (``num_workers=0``) that is exactly what was trained
    on. A prefetching ``DataLoader`` draws batches ahead, so there set `start_iter` from your
    own iteration counter after restoring (helios' way), or use
    ``checkpointable.StatefulDataLoader``, which saves the sampler's state as of each batch.
    ``len()`` stays the length of a whole epoch after a resume, as with torch and helios,
    because training scripts compute their schedules from it.

    ``set_epoch`` with another epoch starts that epoch at its beginning; with the same epoch it
    keeps the position. An iterator that runs out leaves the position at the end of the epoch
    (a checkpoint taken while the last batch is trained on resumes with nothing left of the
    epoch); the next iterator starts the epoch over, as in torch. A new iterator continues
    where an abandoned one stopped; only the newest iterator moves the position.

    A subclass defines ``__len__`` and ``order(epoch)``, the epoch's order of indices as a
    1-D integer tensor, a ``range`` or a list; iteration, position and state come from here.

    Args:
        batch_size: the number of samples per batch (only `start_iter` depends on it).

    Raises:
        TypeError, ValueError: `batch_size` is not a positive int.

    State: ``{"version", "type", "epoch", "dataset_length", "position"}`` (plain ints; a
    subclass adds its configuration); restoring costs one call of ``order`` and no replay.

    >>> class Reversed(ResumableSampler):
    ...     def __len__(self):
    ...         return 5
    ...     def order(self, epoch):
    ...         return range(4, -1, -1)
    >>> sampler = Reversed(batch_size=2)
    >>> it = iter(sampler)
    >>> [next(it), next(it)]
    [4, 3]
    >>> sampler.start_iter
    1
    >>> restored = Reversed(batch_size=2)
    >>> restored.load_state_dict(sampler.state_dict())
    >>> list(restored)
    [2, 1, 0]
    """

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self._init_resumable(batch_size)

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")

    def order(self, epoch: int) -> torch.Tensor | Sequence[int]:
        """The order of the indices in `epoch`: a 1-D integer tensor, a range or a list."""
        raise NotImplementedError(f"{type(self).__name__} must define order(epoch)")

    def _chunks(self, cursor: Cursor, start: int) -> Iterator[Iterator[int]]:
        return order_chunks(cursor, self.order, self._epoch, start, len(self))


def order_chunks(
    cursor: Cursor,
    order: Callable[[int], torch.Tensor | Sequence[int]],
    epoch: int,
    start: int,
    length: int,
) -> Iterator[Iterator[int]]:
    """Chunks of ``order(epoch)`` from `start` on; the order is made at the first ``next``."""
    if start >= length:
        return
    indices = order(epoch)
    if len(indices) != length:
        raise RuntimeError(
            f"order({epoch}) has {len(indices)} indices, but the sampler's len() is {length}"
        )
    if isinstance(indices, range):  # one range iterator: exact length hint, no conversion
        chunk = iter(indices[start:])
        cursor.chunk, cursor.end = chunk, length
        yield chunk
        return
    for low in range(start, length, CHUNK):
        high = min(low + CHUNK, length)
        part = indices[low:high]
        items = part.tolist() if isinstance(part, torch.Tensor) else list(part)
        chunk = iter(items)
        cursor.chunk, cursor.end = chunk, high
        yield chunk


def dataset_length(data_source: Any, owner: str, name: str) -> int:
    """Return ``len(data_source)``, or raise `TypeError` if it has no length."""
    if not hasattr(data_source, "__len__"):
        raise TypeError(
            f"{owner}: {name} must be a sized dataset (with __len__), got "
            f"{type(data_source).__name__}; an IterableDataset cannot be sampled by index"
        )
    return len(data_source)


def generator(seed: int, epoch: int, owner: str) -> torch.Generator:
    """A CPU generator seeded with ``seed + epoch`` (the seeds' rule), with a clear error."""
    if seed + epoch not in SEED_RANGE:
        raise ValueError(
            f"{owner}: seed + epoch must be in [-2**63, 2**64) as torch.Generator.manual_seed "
            f"requires, got {seed=} + {epoch=}"
        )
    return torch.Generator().manual_seed(seed + epoch)


def raise_beyond(owner: str, key: str, value: int, length: int) -> None:
    """Raise `IncompatibleStateError`: a state's position lies beyond the epoch."""
    raise IncompatibleStateError(
        f"{owner}: the state's {key!r} is {value}, beyond the epoch's {length} samples"
    )
