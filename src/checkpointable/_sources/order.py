"""An epoch's shuffled order of rows: permuted blocks, rows permuted within windows of blocks.

The order is a pure function of ``(seed, epoch, position)``; nothing of it is ever stored:

1. the blocks (row groups, JSONL blocks, tar blocks of every file) are permuted with
   ``randperm(num_blocks)`` seeded ``seed + epoch`` (the samplers' rule, `generator`);
2. consecutive blocks of that sequence form windows of `window` blocks;
3. the rows of window ``w`` are permuted with ``randperm(rows_in_window)`` seeded from
   ``(seed, epoch, w)``.

Position ``c`` of the epoch is the ``c``-th row of that sequence. `WindowOrder` slices like the
1-D tensor that ``ResumableDistributedSampler`` deals out over the ranks (``order[a:b:step]``
and ``int(order[i])``), so the distributed arithmetic (``progress``, N -> M ranks, padding) is
the sampler's, not a copy. Slicing costs one ``randperm`` per window touched (cached), and
memory stays at one window's rows: the trade-off of `window` is that a larger window mixes
rows from more blocks (a better shuffle) and makes each worker hold and read more blocks at a
time (memory ``window`` blocks per worker, and a burst of ``window`` block reads per window).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .._samplers.base import generator

__all__ = ["WindowOrder"]


def window_seed(seed: int, epoch: int, window: int) -> int:
    """A 63-bit seed for window `window` of `epoch`, mixed from the three (blake2b)."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{window}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class WindowOrder:
    """The shuffled order of one epoch, computed window by window on demand.

    Args:
        block_rows: rows per block, in file order (int64 tensor).
        block_first: the global row id of each block's first row (int64 tensor).
        seed, epoch: seed the order.
        window: blocks per window (>= 1).
    """

    def __init__(
        self,
        block_rows: torch.Tensor,
        block_first: torch.Tensor,
        seed: int,
        epoch: int,
        window: int,
    ) -> None:
        self._seed, self._epoch, self._window = seed, epoch, window
        count = len(block_rows)
        self._blocks = torch.randperm(count, generator=generator(seed, epoch, "ShardedDataset"))
        lengths = block_rows[self._blocks]
        self._lengths = lengths
        self._first = block_first[self._blocks]  # first global row of each permuted block
        ends = torch.cumsum(lengths, 0)
        last = torch.arange(min(window - 1, count), count, window)
        if count % window:
            last = torch.cat([last, torch.tensor([count - 1])])
        self._window_ends = ends[last]
        self._window_starts = torch.cat([torch.zeros(1, dtype=ends.dtype), self._window_ends[:-1]])
        self._length = int(ends[-1]) if count else 0
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self._length

    def _window_perm(self, w: int) -> torch.Tensor:
        perm = self._cache.get(w)
        if perm is None:
            size = int(self._window_ends[w] - self._window_starts[w])
            seeded = torch.Generator().manual_seed(window_seed(self._seed, self._epoch, w))
            perm = torch.randperm(size, generator=seeded)
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[w] = perm
        return perm

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        """The global row ids at ascending `positions` of the epoch's order."""
        windows = torch.searchsorted(self._window_ends, positions, right=True)
        out = torch.empty_like(positions)
        done = 0
        values, counts = torch.unique_consecutive(windows, return_counts=True)
        for w_tensor, count in zip(values, counts.tolist(), strict=True):
            w = int(w_tensor)
            part = positions[done : done + count]
            local = self._window_perm(w)[part - self._window_starts[w]]
            low = w * self._window
            high = min(low + self._window, len(self._lengths))
            lengths = self._lengths[low:high]
            ends = torch.cumsum(lengths, 0)
            block = torch.searchsorted(ends, local, right=True)
            out[done : done + count] = (
                self._first[low:high][block] + local - (ends - lengths)[block]
            )
            done += count
        return out

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            return self.take(torch.arange(start, stop, step, dtype=torch.int64))
        return int(self.take(torch.tensor([int(key)], dtype=torch.int64))[0])
