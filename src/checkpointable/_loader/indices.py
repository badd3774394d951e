"""Map-style datasets: the index lists of an epoch, drawn as torch draws them, and found again.

`IndexPlan` looks at the loader's sampler once and picks how a position is saved and restored:

- torch's own `SequentialSampler` and `RandomSampler` (alone or under torch's own
  `BatchSampler`): the loader produces their index stream itself, drawing from the same generator
  at the same moments as torch (so an uninterrupted run equals torch's), and seeks to a position
  by regenerating the epoch's permutation from the recorded seed or generator state: one
  ``randperm`` per pass over the dataset, whatever the position;
- a sampler or batch sampler with ``state_dict`` / ``load_state_dict``: its own state, captured
  right after each batch's indices are drawn, is loaded back (no replay);
- any other sampler: iterated again from the start of the epoch and its indices discarded up to
  the position (a replay of indices, never of data, costing O(position)). When the sampler has a
  ``generator`` attribute holding a `torch.Generator`, that generator's state at the start of the
  epoch is recorded and set back first, so that a random sampler replays the same order.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from itertools import islice
from typing import Any, Protocol

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from .._errors import IncompatibleStateError

__all__ = [
    "RANDOM",
    "REPLAY",
    "SEQUENTIAL",
    "STATEFUL",
    "EpochIndices",
    "IndexPlan",
    "decode_generator_state",
    "encode_generator_state",
    "encode_rng_state",
    "has_state",
]

SEQUENTIAL = "sequential"
RANDOM = "random"
STATEFUL = "stateful"
REPLAY = "replay"


def has_state(obj: Any) -> bool:
    """Whether `obj` follows the ``state_dict`` / ``load_state_dict`` protocol."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def encode_generator_state(generator: torch.Generator) -> str:
    """A `torch.Generator`'s state as a base64 str (plain data; ~6.7 KB for the CPU generator)."""
    return encode_rng_state(generator.get_state())


def encode_rng_state(state: torch.Tensor) -> str:
    """An RNG state tensor (``get_state()``, ``torch.get_rng_state()``) as a base64 str."""
    try:
        raw = state.numpy().tobytes()
    except RuntimeError:  # torch built without numpy support
        raw = bytes(state.tolist())
    return base64.b64encode(raw).decode("ascii")


def decode_generator_state(text: Any, owner: str = "StatefulDataLoader") -> torch.Tensor:
    """Inverse of `encode_generator_state`, with a clear error for anything else."""
    try:
        raw = base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise IncompatibleStateError(
            f"{owner}: the state's 'generator_state' must be the base64 text written by "
            f"state_dict(), got {str(text)[:40]!r}"
        ) from None
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


class IndexPlan:
    """How the index lists of a map-style loader are drawn, saved and found again.

    Args:
        index_sampler: the loader's ``batch_sampler`` when it batches, else its ``sampler``.
        auto_collation: whether the loader batches (``batch_size`` or ``batch_sampler`` given).
    """

    def __init__(self, index_sampler: Any, auto_collation: bool) -> None:
        exact_batcher = auto_collation and type(index_sampler) is BatchSampler
        #: The object whose position is tracked: the sampler under torch's own BatchSampler
        #: (whose batching the loader reproduces), else the index sampler itself.
        self.sampler: Any = index_sampler.sampler if exact_batcher else index_sampler
        #: The loader's own batch size, or None when `sampler` yields whole tasks.
        self.batch_size: int | None = index_sampler.batch_size if exact_batcher else None
        self.drop_last: bool = bool(index_sampler.drop_last) if exact_batcher else False
        self.user_batches = auto_collation and not exact_batcher
        kind = type(self.sampler)
        if not self.user_batches and kind is SequentialSampler:
            self.kind = SEQUENTIAL
        elif not self.user_batches and kind is RandomSampler:
            self.kind = RANDOM
        elif has_state(self.sampler):
            self.kind = STATEFUL
        else:
            self.kind = REPLAY
        #: A replayed sampler that draws from the global torch RNG (its generator is None).
        self.global_rng = self.kind == REPLAY and (
            hasattr(self.sampler, "generator") and self.sampler.generator is None
        )
        # torch calls iter() on the loader's index sampler when an epoch starts (before drawing the
        # workers' base seed); only its own BatchSampler, a generator, defers its sampler's iter()
        # to the first batch.
        self.iter_at_start = not exact_batcher

    def describe(self) -> str:
        """The sampler's kind and configuration, stored in the state and compared on load."""
        if self.kind == SEQUENTIAL:
            return "SequentialSampler"
        if self.kind == RANDOM:
            sampler = self.sampler
            return (
                f"RandomSampler(replacement={sampler.replacement}, "
                f"num_samples={sampler.num_samples})"
            )
        role = "batch sampler" if self.user_batches else "sampler"
        how = "stateful" if self.kind == STATEFUL else "replayed"
        return f"{type(self.sampler).__name__} ({how} {role})"

    @property
    def generator(self) -> torch.Generator | None:
        """The generator the index stream draws from (None: none, or the global RNG)."""
        if self.kind in (RANDOM, REPLAY):
            generator = getattr(self.sampler, "generator", None)
            if isinstance(generator, torch.Generator):
                return generator
        return None

    def capture(self) -> Any:
        """The stateful sampler's own state, as it gives it."""
        return self.sampler.state_dict()


class _Stream(Protocol):
    def take(self, count: int) -> list[int]: ...

    def skip(self, count: int) -> int: ...


class EpochIndices(Iterator[Any]):
    """The index lists (or single indices) of one epoch, from a position on, drawn lazily.

    Args:
        plan: the loader's `IndexPlan`.
        seed: the seed of this epoch's permutation when resuming it (torch's `RandomSampler`
            without a generator), else None: drawn from the global RNG at the first draw.
        generator_state: the state of the sampler's generator at this epoch's first draw when
            resuming it, else None: recorded at the first draw.
        start: the number of tasks (index lists) to draw and discard at the first draw: those
            already delivered in the epoch; for a stateful sampler, whose loaded state is the one
            from before the last delivered task was drawn, 1 (or 0 at the epoch's start).
        record: an object whose ``seed`` and ``generator_state`` attributes are set when they
            are recorded (the loader's state), or None.
    """

    def __init__(
        self,
        plan: IndexPlan,
        seed: int | None,
        generator_state: str | None,
        start: int,
        record: Any = None,
    ) -> None:
        self.plan = plan
        self.seed = seed
        self.generator_state = generator_state
        self._start = start
        self._record = record
        self._stream: _Stream | None = None
        self._tasks: Iterator[Any] | None = None
        self._opened = False
        # A resumed user sampler is positioned now, so that the next draw is the next task's.
        if plan.kind in (STATEFUL, REPLAY) and (plan.iter_at_start or start > 0):
            self._open()

    def __next__(self) -> Any:
        if not self._opened:
            self._open()
        if self._tasks is not None:
            return next(self._tasks)
        stream = self._stream
        assert stream is not None
        size = self.plan.batch_size
        if size is None:
            items = stream.take(1)
            if not items:
                raise StopIteration
            return items[0]
        items = stream.take(size)
        if not items or (self.plan.drop_last and len(items) < size):
            raise StopIteration
        return items

    def _open(self) -> None:
        self._opened = True
        plan, sampler = self.plan, self.plan.sampler
        if plan.kind == SEQUENTIAL:
            self._stream = _RangeStream(len(sampler.data_source))
        elif plan.kind == RANDOM:
            self._stream = self._random_stream(sampler)
            if self._record is not None:
                self._record.seed = self.seed
        else:
            generator = getattr(sampler, "generator", None) if plan.kind == REPLAY else None
            if isinstance(generator, torch.Generator):
                self._sync(generator)
            iterator = iter(sampler)
            if plan.global_rng:
                iterator = _FirstDrawUnderGlobalRng(iterator, self)
            if plan.batch_size is None:
                self._tasks = iterator
            else:
                self._stream = _IteratorStream(iterator)
        self._skip(self._start)

    def _random_stream(self, sampler: RandomSampler) -> _RandomStream:
        generator = sampler.generator
        private = generator is None
        if generator is None:
            if self.seed is None:  # as torch's RandomSampler.__iter__ does, at its first draw
                self.seed = int(torch.empty((), dtype=torch.int64).random_().item())
            generator = torch.Generator()
            generator.manual_seed(self.seed)
        else:
            self._sync(generator)
        n = len(sampler.data_source)
        return _RandomStream(n, sampler.num_samples, sampler.replacement, generator, private)

    def record_generator_state(self, text: str) -> None:
        self.generator_state = text
        if self._record is not None:
            self._record.generator_state = text

    def _sync(self, generator: torch.Generator) -> None:
        """Record the generator's state at the epoch's first draw, or set the recorded one."""
        if self.generator_state is None:
            self.record_generator_state(encode_generator_state(generator))
        else:
            generator.set_state(decode_generator_state(self.generator_state))

    def _skip(self, tasks: int) -> None:
        if tasks <= 0:
            return
        size = self.plan.batch_size
        if self._tasks is not None:
            done = sum(1 for _ in islice(self._tasks, tasks))
            ok = done == tasks
        else:
            assert self._stream is not None
            wanted = tasks * (size or 1)
            done = self._stream.skip(wanted)
            # A short skip is fine only when the last delivered batch was a partial one.
            ok = done == wanted or (
                size is not None and not self.plan.drop_last and done > wanted - size
            )
            done = -(-done // (size or 1))
        if not ok:
            raise IncompatibleStateError(
                f"StatefulDataLoader: the state is at batch {tasks} of its epoch, but the sampler "
                f"{self.plan.describe()} gives only {done} batches; it was saved over other data"
            )


class _FirstDrawUnderGlobalRng(Iterator[Any]):
    """A sampler's iterator whose first element is drawn under the epoch's global RNG state.

    In a fresh epoch the global torch RNG's state is recorded right before the first element; in
    a resumed epoch the recorded state is set for the first element, and the caller's global RNG
    state is put back afterwards (it already went past that draw before the state was saved).
    """

    def __init__(self, iterator: Iterator[Any], epoch: EpochIndices) -> None:
        self._iterator = iterator
        self._epoch: EpochIndices | None = epoch

    def __next__(self) -> Any:
        epoch = self._epoch
        if epoch is None:
            return next(self._iterator)
        self._epoch = None
        if epoch.generator_state is None:
            epoch.record_generator_state(encode_rng_state(torch.get_rng_state()))
            return next(self._iterator)
        caller = torch.get_rng_state()
        torch.set_rng_state(decode_generator_state(epoch.generator_state))
        try:
            return next(self._iterator)
        finally:
            torch.set_rng_state(caller)


class _RangeStream:
    """``range(n)`` as torch's `SequentialSampler` yields it."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._pos = 0

    def take(self, count: int) -> list[int]:
        start = self._pos
        stop = min(start + count, self._n)
        if stop <= start:
            return []
        self._pos = stop
        return list(range(start, stop))

    def skip(self, count: int) -> int:
        moved = max(min(count, self._n - self._pos), 0)
        self._pos += moved
        return moved


class _IteratorStream:
    """The indices of a user sampler's iterator."""

    def __init__(self, iterator: Iterator[int]) -> None:
        self._iterator = iterator

    def take(self, count: int) -> list[int]:
        return list(islice(self._iterator, count))

    def skip(self, count: int) -> int:
        return sum(1 for _ in islice(self._iterator, count))


class _RandomStream:
    """torch's `RandomSampler` index stream, drawn block by block when torch draws it.

    torch draws the stream in blocks: without replacement, ``num_samples // n`` permutations of
    ``range(n)`` and one more cut to ``num_samples % n`` indices; with replacement, chunks of 32
    indices and a last chunk of ``num_samples % 32``. Block ``k`` is drawn when index
    ``k * block`` is first needed, where needing index ``num_samples`` means detecting the end.
    This class draws at the same moments, so a generator shared with the user or with the
    workers' base seed ends in the same state as under torch. With a private generator (torch's
    ``generator=None``) chunks of indices drawn with replacement are drawn ahead, which gives the
    same values (torch's CPU ``randint`` draws element by element).
    """

    _AHEAD = 1024  # chunks of 32 drawn at once from a private generator

    def __init__(
        self,
        n: int,
        num_samples: int,
        replacement: bool,
        generator: torch.Generator,
        private: bool,
    ) -> None:
        if n <= 0:
            raise ValueError(f"RandomSampler over an empty dataset cannot draw {num_samples=}")
        self._n = n
        self._num_samples = num_samples
        self._replacement = replacement
        self._generator = generator
        self._private = private
        self._block = 32 if replacement else n
        self._last_block = num_samples // self._block  # the short (maybe empty) final block
        self._drawn = 0  # number of blocks drawn
        self._buffer: list[int] = []  # drawn indices from element _buffer_start on
        self._buffer_start = 0
        self._pos = 0  # element index of the next index to take

    def take(self, count: int) -> list[int]:
        pos = self._pos
        stop = pos + count
        if stop > self._num_samples:
            self._need(self._num_samples)
            stop = self._num_samples
        else:
            self._need(stop - 1)
        if stop <= pos:
            return []
        self._pos = stop
        first = pos - self._buffer_start
        return self._buffer[first : first + stop - pos]

    def skip(self, count: int) -> int:
        start = self._pos
        target = start + count
        if target > self._num_samples:
            self._pos = self._num_samples
            self._need(self._num_samples)
        else:
            self._pos = target
            if target > 0:
                self._need(target - 1)
        return self._pos - start

    def _need(self, element: int) -> None:
        """Draw the blocks up to the one holding `element` (``num_samples``: the end)."""
        target = min(element // self._block, self._last_block)
        if self._drawn > target:
            return
        if self._replacement:
            self._draw_chunks(target)
            return
        while self._drawn <= target:
            index = self._drawn
            self._drawn += 1
            first = index * self._n
            permutation = torch.randperm(self._n, generator=self._generator)
            if first + self._n <= self._pos:  # wholly skipped: drawn only to advance the RNG
                continue
            if index == self._last_block:
                permutation = permutation[: self._num_samples % self._n]
            skipped = max(self._pos - first, 0)  # a seek lands inside: convert only the rest
            self._append(first + skipped, permutation[skipped:].tolist())

    def _draw_chunks(self, target: int) -> None:
        first_block = self._drawn
        last = target
        if self._private:
            last = min(self._last_block, max(target, first_block + self._AHEAD - 1))
        size = (last - first_block + 1) * 32
        if last == self._last_block:
            size -= 32 - self._num_samples % 32
        values = torch.randint(
            high=self._n, size=(size,), dtype=torch.int64, generator=self._generator
        ).tolist()
        self._drawn = last + 1
        self._append(first_block * 32, values)

    def _append(self, first: int, values: list[int]) -> None:
        """Add indices drawn from element `first` on, dropping those before the position."""
        pos = self._pos
        if pos >= first:
            self._buffer = values[pos - first :]
        else:
            self._buffer = self._buffer[pos - self._buffer_start :] + values
        self._buffer_start = pos
