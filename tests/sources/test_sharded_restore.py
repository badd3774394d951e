"""The cost of a restore: the blocks each worker reads before its first batch after a resume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from checkpointable import ShardedDataset, StatefulDataLoader
from checkpointable._sources import dataset as dataset_module
from checkpointable._sources import formats

from ._data import row_id, write_shards

BLOCK = 10  # rows per JSONL block; the files hold whole blocks, so block of row i = i // BLOCK
BATCH = 5  # a batch never straddles two blocks when the window is 1
SIZES = [50, 50]
BATCHES = sum(SIZES) // BATCH


def loader(pattern: str, window: int, workers: int) -> StatefulDataLoader:
    data = ShardedDataset(pattern, window=window, block_rows=BLOCK, seed=4)
    return StatefulDataLoader(
        data, batch_size=BATCH, sampler=data.sampler, collate_fn=list, num_workers=workers
    )


def log_reads(monkeypatch: pytest.MonkeyPatch, log: Path) -> None:
    """Log, in every process (workers are forked with the patch), each block read and where
    each batch starts and ends: ``pid begin``, ``pid read BLOCK``, ``pid end``."""
    original_read = formats.read_block
    original_items = ShardedDataset.__getitems__

    def write(line: str) -> None:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()} {line}\n")

    def read(*args: Any) -> Any:
        write(f"read {os.path.basename(args[0].path)}:{args[3]}")
        return original_read(*args)

    def items(self: ShardedDataset, indices: list[int]) -> list[Any]:
        write("begin " + ",".join(map(str, indices)))
        try:
            return original_items(self, indices)
        finally:
            write("end")

    monkeypatch.setattr(dataset_module, "read_file_block", read)
    monkeypatch.setattr(ShardedDataset, "__getitems__", items)


def block_of(row: int) -> str:
    """The block holding global row `row`, as the log names it (file:block)."""
    file, offset = divmod(row, SIZES[0])
    return f"part-{file:03d}.jsonl:{offset // BLOCK}"


def first_batch_reads(log: Path) -> dict[str, tuple[list[int], list[str]]]:
    """Per process: the rows of its first batch, and the blocks it read for it."""
    calls: dict[str, tuple[list[int], list[str]]] = {}
    done: set[str] = set()
    for line in log.read_text().splitlines():
        pid, what, *rest = line.split(" ")
        if what == "begin" and pid not in calls:
            calls[pid] = ([int(i) for i in rest[0].split(",")], [])
        elif what == "end":
            done.add(pid)
        elif what == "read" and pid not in done:
            calls[pid][1].append(rest[0])
    return calls


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("percent", [10, 90])
@pytest.mark.parametrize("window", [1, 4])
def test_a_restore_reads_only_the_blocks_of_each_workers_first_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, percent: int, window: int
) -> None:
    write_shards(tmp_path / "data", "jsonl", SIZES)
    pattern = str(tmp_path / "data" / "*.jsonl")
    whole = loader(pattern, window, 0)
    iterator = iter(whole)
    saved_at = BATCHES * percent // 100
    for _ in range(saved_at):
        next(iterator)
    state = whole.state_dict()
    rest = [[row_id(row) for row in batch] for batch in iterator]

    log = tmp_path / "reads.log"
    log_reads(monkeypatch, log)
    resumed = loader(pattern, window, workers)
    resumed.load_state_dict(state)
    again = iter(resumed)
    firsts = [[row_id(row) for row in next(again)] for _ in range(max(workers, 1))]
    del again
    assert firsts == rest[: len(firsts)]

    reads = first_batch_reads(log)
    assert len(reads) == max(workers, 1)
    for rows, blocks in reads.values():
        # exactly the blocks the first batch's rows lie in, each once: one with window=1, at
        # most the window's with the window shuffle, never a block before the position
        assert sorted(blocks) == sorted({block_of(i) for i in rows})
        assert len(blocks) == 1 if window == 1 else len(blocks) <= window
