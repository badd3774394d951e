"""The index streams behind `EpochIndices`: torch's samplers' streams, drawn as torch draws them.

`RandomOrder` reproduces torch's `RandomSampler` block by block (and seeks by regenerating
blocks), `RangeOrder` its `SequentialSampler`, `IteratorOrder` reads a user sampler, and
`FirstDrawUnderGlobalRng` makes a sampler that draws from the global RNG replay its first draw.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any, Protocol

import torch

from .._rng import decode_torch_state, encode_torch_state, randint
from .._rng import permutation as _permutation

__all__ = [
    "FirstDrawUnderGlobalRng",
    "IndexOrder",
    "IteratorOrder",
    "RandomOrder",
    "RangeOrder",
]


class IndexOrder(Protocol):
    """Indices taken in order, or skipped over."""

    def take(self, count: int) -> list[int]: ...

    def skip(self, count: int) -> int: ...


class FirstDrawUnderGlobalRng(Iterator[Any]):
    """A sampler's iterator whose first element is drawn under the epoch's global RNG state.

    In a fresh epoch the global torch RNG's state is recorded right before the first element; in
    a resumed epoch the recorded state is set for the first element, and the caller's global RNG
    state is put back afterwards (it already went past that draw before the state was saved).
    """

    def __init__(self, iterator: Iterator[Any], epoch: Any) -> None:
        self._iterator = iterator
        self._epoch: Any | None = epoch

    def __next__(self) -> Any:
        epoch = self._epoch
        if epoch is None:
            return next(self._iterator)
        self._epoch = None
        if epoch.generator_state is None:
            epoch.record_generator_state(encode_torch_state(torch.get_rng_state()))
            return next(self._iterator)
        caller = torch.get_rng_state()
        torch.set_rng_state(decode_torch_state(epoch.generator_state, "StatefulDataLoader"))
        try:
            return next(self._iterator)
        finally:
            torch.set_rng_state(caller)


class RangeOrder:
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


class IteratorOrder:
    """The indices of a user sampler's iterator."""

    def __init__(self, iterator: Iterator[int]) -> None:
        self._iterator = iterator

    def take(self, count: int) -> list[int]:
        return list(islice(self._iterator, count))

    def skip(self, count: int) -> int:
        return sum(1 for _ in islice(self._iterator, count))


class RandomOrder:
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
            permutation = _permutation(self._n, self._generator)
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
        values = randint(self._n, size, self._generator).tolist()
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
