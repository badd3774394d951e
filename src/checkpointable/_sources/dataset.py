"""`ShardedDataset`: Parquet, JSONL and WebDataset tar shards as one map-style dataset."""

from __future__ import annotations

import os
import warnings
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.data

from .._checks import require_int
from .._errors import ArgumentTypeError
from .formats import FORMATS, CorruptShardError, FileIndex, detect_format, index_file
from .formats import read_block as read_file_block
from .sampler import BlockSource, ShardedSampler, check_order, digest, file_names
from .storage import FileRef, expand_files

__all__ = ["ShardedDataset"]

NAME = "ShardedDataset"


@dataclass
class Layout:
    """Every block of every file, in file order, and the file list's fingerprint."""

    files: list[FileRef]
    kinds: list[str]
    indexes: list[FileIndex]
    block_file: list[int]  # the file of each global block
    block_local: list[int]  # the block's number inside its file
    block_rows: torch.Tensor  # int64: rows per block
    block_first: torch.Tensor  # int64: global row id of each block's first row
    names: list[str]
    names_digest: str
    sizes_digest: str
    skipped: int

    @classmethod
    def build(cls, files: list[FileRef], kinds: list[str], indexes: list[FileIndex]) -> Layout:
        block_file, block_local, rows = [], [], []
        for number, index in enumerate(indexes):
            block_file += [number] * len(index.rows)
            block_local += list(range(len(index.rows)))
            rows += index.rows
        block_rows = torch.tensor(rows, dtype=torch.int64)
        block_first = torch.cumsum(block_rows, 0) - block_rows
        names = file_names(files)
        sizes = [f"{ref.size}:{sum(index.rows)}" for ref, index in zip(files, indexes, strict=True)]
        return cls(
            files,
            kinds,
            indexes,
            block_file,
            block_local,
            block_rows,
            block_first,
            names,
            digest(names),
            digest(sizes),
            sum(index.skipped for index in indexes),
        )


class ShardedDataset(BlockSource, torch.utils.data.Dataset[Any]):
    """Shard files (Parquet, JSONL, WebDataset tar; local or ``fsspec`` URLs) as one dataset.

    Pass it with its sampler to a `StatefulDataLoader`::

        dataset = ShardedDataset("data/*.parquet", seed=0)
        loader = StatefulDataLoader(dataset, batch_size=32, sampler=dataset.sampler,
                                    collate_fn=list, num_workers=2)

    Rows: a Parquet row is a dict of its columns (`columns` selects some); a JSONL row is the
    parsed object; a tar row is ``{"__key__": key, "<ext>": bytes, ...}`` per WebDataset sample.

    Order: global row ids number the rows of the files in list order (a glob is sorted). With
    ``shuffle=False`` an epoch reads them in that order. With ``shuffle=True`` each epoch
    permutes the blocks (Parquet row groups, `block_rows` lines of JSONL or samples of tar, a
    whole compressed JSONL file) from ``(seed, epoch)``, deals them to `lanes` lanes, and
    permutes the rows within each window of `window` consecutive blocks of a lane from
    ``(seed, epoch, lane, window)``: a pure function of ``(seed, epoch, position)``, with no
    buffer. The window bounds both the
    quality of the shuffle (rows mix only with rows of the same window) and the memory and
    read burst (each worker holds the blocks of one window).

    Ranks: ``dataset.sampler`` is ``ResumableDistributedSampler``'s deal over that order (rank
    and world size from ``torch.distributed`` when they are left out): rank ``r`` of ``R``
    reads positions ``r + j * R``; the state records the global progress, the same on every
    rank, so a resume on any world size and with any ``num_workers`` delivers every row of the
    epoch exactly once over all ranks. The uneven end of an epoch: every rank yields
    ``ceil(rows_left / R)`` rows, the last ones padded with the head of the epoch's order
    (fewer than ``R`` repeats), or with ``drop_last=True`` ``floor(rows_left / R)`` rows (fewer
    than ``R`` rows left out); the last batch of each rank may be short (the loader's
    ``drop_last`` drops it). Each pass of the sampler is an epoch: the next pass starts the
    next epoch (``sampler.set_epoch`` also works).

    Args:
        files: a path, URL or glob, or a list of them.
        format: ``"parquet"``, ``"jsonl"`` or ``"tar"``; default: from each file's extension.
        columns: the Parquet columns to read; default all.
        shuffle: shuffle per epoch (blocks, then rows within windows).
        seed: the seed of the order, the same on every rank.
        window: blocks per shuffle window (>= 1).
        lanes: the shuffled blocks are dealt round-robin to `lanes` lanes, each shuffled in its
            own windows, and the epoch interleaves the lanes row by row; when the world size
            divides `lanes`, each rank reads only its own lanes, so no block is read by two
            ranks (see docs/scaling.md). The default, 1, is one sequence.
        block_rows: lines per JSONL block and samples per tar block (>= 1).
        rank, world_size: this process's place; default (both left out) from
            ``torch.distributed`` when it is initialised, else rank 0 of 1.
        drop_last: leave out the uneven tail of the epoch instead of padding it.
        errors: ``"raise"`` (default) or ``"skip"``: leave out unreadable files, truncated
            tails and bad JSON lines, deterministically (the same rows after a resume), warning
            about each and counting them in `skipped`.
        storage_options: ``fsspec`` options for URLs (``{"endpoint_url": ...}``, credentials).

    Raises:
        TypeError, ValueError: an argument has the wrong type or value (named).
        FileNotFoundError: a file does not exist or a glob matches nothing (named).
        ValueError: a corrupt shard (naming the file and the line, row group or member).

    State (of ``dataset.sampler``, < 1 KB whatever the number of files and rows):
    ``{"version", "type": "ShardedSampler", "epoch", "dataset_length", "seed", "shuffle",
    "drop_last", "window", "lanes", "files": {"count", "names", "sizes"}, "progress",
    "position"}``.
    Restoring sets ints; the first batch after it reads the blocks its rows fall in (one block
    with ``shuffle=False`` or ``window=1``; with the window shuffle, at most a window of each
    lane the rank reads), never the rows before the position.
    The dataset itself has no state. Loading over other files raises `IncompatibleStateError`
    saying what changed.

    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "a.jsonl"), "w") as f:
    ...     f.writelines(json.dumps({"id": i}) + "\\n" for i in range(6))
    >>> data = ShardedDataset(os.path.join(folder, "*.jsonl"), shuffle=False, world_size=2, rank=1)
    >>> [data[i]["id"] for i in data.sampler]
    [1, 3, 5]
    """

    NAME = NAME
    layout: Layout

    def __init__(
        self,
        files: Any,
        *,
        format: str | None = None,
        columns: Sequence[str] | None = None,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 16,
        lanes: int = 1,
        block_rows: int = 1024,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
        errors: str = "raise",
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        if format is not None and format not in FORMATS:
            raise ValueError(
                f"{NAME}: format must be one of {list(FORMATS)} or None, got {format!r}"
            )
        if columns is not None and (
            isinstance(columns, str) or not all(isinstance(c, str) for c in columns)
        ):
            raise ArgumentTypeError(
                f"{NAME}: columns must be a list of column names, got {columns!r}"
            )
        if errors not in ("raise", "skip"):
            raise ValueError(f"{NAME}: errors must be 'raise' or 'skip', got {errors!r}")
        world_size, rank = check_order(NAME, shuffle, seed, window, lanes, world_size, rank)
        require_int(block_rows, NAME, "block_rows", minimum=1)
        self.columns = list(columns) if columns is not None else None
        self.errors = errors
        self.block_rows = block_rows
        if storage_options is not None and not isinstance(storage_options, dict):
            raise ArgumentTypeError(
                f"{NAME}: storage_options must be a dict of fsspec options, got {storage_options!r}"
            )
        refs = expand_files(files, storage_options)
        kinds = [detect_format(ref.path, format) for ref in refs]
        skip = errors == "skip"
        indexes = [
            index_file(ref, kind, block_rows, skip) for ref, kind in zip(refs, kinds, strict=True)
        ]
        self.layout = Layout.build(refs, kinds, indexes)
        #: Files, tails and lines left out with errors="skip" (construction, then this process).
        self.skipped = self.layout.skipped
        if self.skipped:
            warnings.warn(
                f"{NAME}: left out {self.skipped} unreadable file(s) or tail(s)", stacklevel=2
            )
        self._length = int(self.layout.block_rows.sum())
        self._starts: list[int] = self.layout.block_first.tolist()  # for bisect, per batch
        if self._length == 0:
            raise ValueError(f"{NAME}: the files hold no rows: {self.describe_files()}")
        self._cache: OrderedDict[int, Sequence[Any]] = OrderedDict()
        self._readers: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self._pending: dict[int, Future[Sequence[Any]]] = {}
        self._last_block: int | None = None  # the highest block of the last batch read
        self.sampler = ShardedSampler(
            self, world_size, rank, shuffle, seed, drop_last, window, lanes
        )
        # a reader holds a window of each lane it reads (its rank's share of the lanes)
        self._capacity = window * -(-lanes // self.sampler.num_replicas) + 1

    # ------------------------------------------------------------------ reading
    def _read(self, block: int) -> Sequence[Any]:
        layout = self.layout
        number = layout.block_file[block]
        return read_file_block(
            layout.files[number],
            layout.kinds[number],
            layout.indexes[number],
            layout.block_local[block],
            self.columns,
            self._readers,
        )

    def _executor(self) -> ThreadPoolExecutor:
        self._after_fork()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="shard-read")
        return self._pool

    def _after_fork(self) -> None:
        """Forget the threads and open files a forked copy inherited from its parent."""
        if self._pool_pid != os.getpid():
            self._pool, self._pending, self._readers = None, {}, {}
            self._pool_pid = os.getpid()

    def _blocks(self, blocks: list[int]) -> dict[int, Sequence[Any]]:
        """The rows of `blocks`: cached, being prefetched, or read now (in parallel)."""
        self._after_fork()
        found = {b: self._cache[b] for b in blocks if b in self._cache}
        missing = [b for b in blocks if b not in found]
        remote = any(ref.remote for ref in self.layout.files)
        if len(missing) > 1 or (missing and remote) or self._pending:
            pool = self._executor()
            futures = {
                b: self._pending.pop(b) if b in self._pending else pool.submit(self._read, b)
                for b in missing
            }
            found.update({b: future.result() for b, future in futures.items()})
        else:
            found.update({b: self._read(b) for b in missing})
        for block, rows in found.items():
            self._cache[block] = rows
            self._cache.move_to_end(block)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        last, self._last_block = self._last_block, max(blocks)
        if remote and (last is None or self._last_block - last in (0, 1)):
            # reading in file order (shuffle=False, or inside a block): overlap the next read
            # with compute by reading the block after the last one in the background
            following = self._last_block + 1
            known = following in self._cache or following in self._pending
            if following < len(self.layout.block_file) and not known:
                self._pending[following] = self._executor().submit(self._read, following)
                while len(self._pending) > 2:  # a guess that was not used: forget it
                    self._pending.pop(next(iter(self._pending)))
        return found

    def __getitems__(self, indices: list[int]) -> list[Any]:
        starts = self._starts
        blocks = [bisect_right(starts, index) - 1 for index in indices]
        data = self._blocks(sorted(set(blocks)))
        out = []
        for block, index in zip(blocks, indices, strict=True):
            try:
                out.append(data[block][index - starts[block]])
            except CorruptShardError as error:
                if self.errors != "skip":
                    raise
                self.skipped += 1
                warnings.warn(f"{error}; skipped (errors='skip')", stacklevel=2)
        return out

    def __getitem__(self, index: int) -> Any:
        self._check_index(index)
        block = bisect_right(self._starts, index) - 1
        return self._blocks([block])[block][index - self._starts[block]]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_cache=OrderedDict(), _readers={}, _pool=None, _pool_pid=0, _pending={})
        return state

    def __repr__(self) -> str:
        return (
            f"{NAME}(files={self.describe_files()}, rows={self._length}, "
            f"columns={self.columns!r}, block_rows={self.block_rows}, errors={self.errors!r}, "
            f"sampler={self.sampler!r})"
        )
