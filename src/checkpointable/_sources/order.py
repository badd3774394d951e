"""An epoch's shuffled order of rows: permuted blocks dealt to lanes, rows shuffled in windows.

The order is a pure function of ``(seed, epoch, position)``; nothing of it is ever stored:

1. the blocks (row groups, JSONL blocks, tar blocks of every file) are permuted with
   ``randperm(num_blocks)`` seeded ``seed + epoch`` (the samplers' rule, `generator`);
2. block ``k`` of that sequence joins lane ``k % lanes``;
3. consecutive blocks of a lane form windows of `window` blocks, and the rows of window ``w`` of
   lane ``l`` are permuted with ``randperm(rows_in_window)`` seeded from
   ``(seed, epoch, l, w)``;
4. the lanes are interleaved row by row: round ``t`` takes row ``t`` of every lane that has
   one, the lanes ordered by decreasing length (ties by lane number).

Position ``c`` of the epoch is the ``c``-th row of that interleaving. While every lane still has
rows (all of the epoch but a tail shorter than one block per lane), position ``c`` lies in lane
``c % lanes``: so when the world size ``R`` divides `lanes`, each rank reads its own lanes only
and every block is read by one rank; inside a rank, batch ``p`` (``batch_size`` consecutive
positions of the rank) covers ``batch_size`` consecutive lanes of the rank, so the loader's
workers read lanes of their own when ``lanes / R`` is a multiple of ``batch_size x
num_workers``. With ``lanes=1`` it is one sequence.

`WindowOrder` slices like the 1-D tensor that ``ResumableDistributedSampler`` deals out over the
ranks (``order[a:b:step]`` and ``int(order[i])``), so the distributed arithmetic (``progress``,
N -> M ranks, padding) is the sampler's, not a copy. Slicing costs one ``randperm`` per window
touched (cached), and memory stays at a few windows' rows. The trade-off of `window`: a larger
window mixes rows from more blocks (a better shuffle) and makes each reader hold and read more
blocks at a time (memory `window` blocks per reader, and a burst of reads per window).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from .._samplers.base import generator

__all__ = ["WindowOrder", "hashed_seed"]


def hashed_seed(*parts: object) -> int:
    """A 63-bit seed named by `parts` (blake2b of their text joined by ":"), e.g. a window's
    ``(seed, epoch, lane, window)``."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class _Lane:
    """One lane's blocks in order, their rows, and its windows."""

    def __init__(self, rows: torch.Tensor, first: torch.Tensor, window: int) -> None:
        self.lengths = rows
        self.first = first  # first global row of each of the lane's blocks
        self.ends = torch.cumsum(rows, 0)
        count = len(rows)
        last = torch.arange(min(window - 1, count), count, window)
        if count % window:
            last = torch.cat([last, torch.tensor([count - 1])])
        self.window_ends = self.ends.index_select(0, last)
        self.window_starts = torch.cat([torch.zeros(1, dtype=rows.dtype), self.window_ends[:-1]])


class WindowOrder:
    """The shuffled order of one epoch, computed lane by lane and window by window on demand.

    Args:
        block_rows: rows per block, in file order (int64 tensor).
        block_first: the global row id of each block's first row (int64 tensor).
        seed, epoch: seed the order.
        window: blocks per window (>= 1).
        lanes: the number of lanes (>= 1).
    """

    def __init__(
        self,
        block_rows: torch.Tensor,
        block_first: torch.Tensor,
        seed: int,
        epoch: int,
        window: int,
        lanes: int = 1,
    ) -> None:
        self._seed, self._epoch, self._window = seed, epoch, window
        blocks = torch.randperm(len(block_rows), generator=generator(seed, epoch, "ShardedDataset"))
        self._rows = block_rows.index_select(0, blocks)
        self._first = block_first.index_select(0, blocks)
        self._lanes = lanes
        lane_rows = torch.zeros(lanes, dtype=torch.int64)
        lane_rows.index_add_(0, torch.arange(len(blocks)) % lanes, self._rows)
        # rounds visit the lanes by decreasing length; the alive lanes are a prefix of this
        self._by_length = torch.sort(lane_rows, descending=True, stable=True).indices
        lengths = lane_rows[self._by_length]
        ascending = torch.flip(lengths, [0])
        # segment k: rounds in [s_{k-1}, s_k) of the ascending lengths, with lanes - k alive
        before = torch.cat([torch.zeros(1, dtype=torch.int64), ascending[:-1]])
        alive = lanes - torch.arange(lanes)
        self._seg_round = before
        self._seg_alive = alive
        grown = (ascending - before) * alive
        self._seg_end = torch.cumsum(grown, 0)
        self._seg_start = self._seg_end - grown
        self._length = int(lane_rows.sum())
        self._lane_cache: dict[int, _Lane] = {}
        self._rows_cache: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return self._length

    def _lane(self, lane: int) -> _Lane:
        found = self._lane_cache.get(lane)
        if found is None:
            found = _Lane(
                self._rows[lane :: self._lanes], self._first[lane :: self._lanes], self._window
            )
            if len(self._lane_cache) >= 64:
                self._lane_cache.pop(next(iter(self._lane_cache)))
            self._lane_cache[lane] = found
        return found

    def _window_rows(self, lane: int, w: int) -> torch.Tensor:
        """The global row ids of window `w` of lane `lane`, in the window's shuffled order."""
        rows = self._rows_cache.get((lane, w))
        if rows is None:
            info = self._lane(lane)
            low = w * self._window
            high = min(low + self._window, len(info.lengths))
            lengths = info.lengths[low:high]
            size = int(lengths.sum())
            # the window's rows in block order: block b's rows are first[b], first[b] + 1, ...
            starts = info.first[low:high].tolist()
            in_order = torch.cat(
                [torch.arange(f, f + n) for f, n in zip(starts, lengths.tolist(), strict=True)]
            )
            seeded = torch.Generator().manual_seed(hashed_seed(self._seed, self._epoch, lane, w))
            rows = in_order.index_select(0, torch.randperm(size, generator=seeded))
            if len(self._rows_cache) >= 4:
                self._rows_cache.pop(next(iter(self._rows_cache)))
            self._rows_cache[(lane, w)] = rows
        return rows

    def _lane_positions(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(lane, row number in the lane) of each of the ascending `positions`."""
        # segment of each position: cut the ascending positions at the segments' ends (a
        # searchsorted over the few segment ends, not over the many positions: torch runs the
        # latter on its thread pool, which costs milliseconds on a loaded machine)
        cuts = torch.searchsorted(positions, self._seg_end)
        sizes = torch.diff(cuts, prepend=torch.zeros(1, dtype=cuts.dtype))
        segment = torch.cat(
            [torch.full((n,), k, dtype=torch.int64) for k, n in enumerate(sizes.tolist()) if n]
            or [torch.zeros(0, dtype=torch.int64)]
        )
        offset = positions - self._seg_start.index_select(0, segment)
        alive = self._seg_alive.index_select(0, segment)
        rounds = self._seg_round.index_select(0, segment) + torch.div(
            offset, alive, rounding_mode="floor"
        )
        return self._by_length.index_select(0, offset % alive), rounds

    def _take_in_lane(self, lane: int, index: torch.Tensor) -> torch.Tensor:
        """Global row ids of rows `index` (ascending) of lane `lane`."""
        info = self._lane(lane)
        out = torch.empty_like(index)
        cuts = torch.searchsorted(index, info.window_ends).tolist()  # where each window ends
        done = 0
        for w, cut in enumerate(cuts):
            if cut > done:
                start = info.window_starts[w]
                local = index[done:cut] - start
                out[done:cut] = self._window_rows(lane, w).index_select(0, local)
                done = cut
            if done == len(index):
                break
        return out

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        """The global row ids at ascending `positions` of the epoch's order."""
        if self._lanes == 1:
            return self._take_in_lane(0, positions)
        lanes, index = self._lane_positions(positions)
        out = torch.empty_like(positions)
        order = torch.sort(lanes, stable=True).indices  # per lane, positions stay ascending
        values, counts = torch.unique_consecutive(lanes.index_select(0, order), return_counts=True)
        done = 0
        for lane, count in zip(values.tolist(), counts.tolist(), strict=True):
            where = order[done : done + count]
            out.index_copy_(0, where, self._take_in_lane(lane, index.index_select(0, where)))
            done += count
        return out

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(self._length)
            return self.take(torch.arange(start, stop, step, dtype=torch.int64))
        return int(self.take(torch.tensor([int(key)], dtype=torch.int64))[0])
