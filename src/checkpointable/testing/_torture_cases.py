"""The configurations that `checkpointable.testing.torture` kills: what a training child builds
and consumes. Everything here is deterministic given its seeds, so that an interrupted run can
be compared with an uninterrupted one; the datasets live at module level, so that they pickle
under ``spawn``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..iterators import (
    BufferedShuffleIterator,
    ChunkedSourceIterator,
    FixedBatchIterator,
    NativeCheckpointableIterator,
    ParallelMapIterator,
    PrefetchIterator,
)

__all__ = ["CASES", "Case", "Ids"]

SEED = 1234
EPOCHS = 2


class Ids(torch.utils.data.Dataset[int]):
    """Map-style: item i is i."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class CountingIds(torch.utils.data.IterableDataset[int]):
    """Iterable with its own state: each worker's copy yields its share of range(n)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0

    def __iter__(self) -> Iterator[int]:
        info = torch.utils.data.get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        while True:
            index = first + self.next * step
            if index >= self.n:
                return
            self.next += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {"next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next = int(state["next"])


def _shard(items: list[int], index: int, count: int) -> Any:
    return ChunkedSourceIterator(items, num_instances=count, instance_rank=index)


def _twice(n: int) -> int:
    return 2 * n


@dataclass(frozen=True)
class Case:
    """One configuration.

    Attributes:
        name: its name in the report.
        sizes: what a (re)start may choose from: the number of workers (or of pool processes,
            or the world size of an elastic case).
        build: ``build(size)`` makes the component, fresh.
        steps: ``steps(component, epochs_done)`` yields ``(ids, epoch_ended)`` per step: the
            ids a training step consumed, or ``([], True)`` at the end of an epoch.
        ordered: whether the order is part of the promise (False where it depends on timing
            or on the world size: then each epoch's ids are compared as a multiset).
        padding: how many ids an epoch may repeat (torch's distributed padding: fewer than the
            world size that ends the epoch).
        share: its relative share of the kills.
    """

    name: str
    sizes: tuple[int, ...]
    build: Callable[[int], Any]
    steps: Callable[[Any, int], Iterator[tuple[list[int], bool]]]
    ordered: bool = True
    padding: int = 0
    share: int = 2


def _loader(size: int, **options: Any) -> Any:
    from ..dataloader import StatefulDataLoader

    generator = torch.Generator().manual_seed(SEED)
    dataset = options.pop("dataset", None)
    if dataset is None:
        dataset = Ids(240)
    if "shuffle" not in options and not isinstance(dataset, torch.utils.data.IterableDataset):
        options["shuffle"] = True
        options["generator"] = generator
    options.setdefault("collate_fn", list)
    return StatefulDataLoader(dataset, batch_size=4, num_workers=size, **options)


def _sharded(size: int) -> Any:
    from ..dataloader import ShardedIterableDataset

    dataset = ShardedIterableDataset(partial(_shard, list(range(240))), num_shards=4)
    return _loader(size, dataset=dataset)


def _epochs(loader: Any, epochs_done: int) -> Iterator[tuple[list[int], bool]]:
    for _ in range(epochs_done, EPOCHS):
        for batch in loader:
            yield [int(i) for i in batch], False
        yield [], True


def _stream(size: int) -> Any:
    from ..stream import Stream

    return Stream(_loader(size))


def _stream_steps(stream: Any, epochs_done: int) -> Iterator[tuple[list[int], bool]]:
    for epoch in stream.epochs(EPOCHS, progress_bar=False):
        for batch in epoch:
            yield [int(i) for i in batch], False
        yield [], True


def _pipeline(size: int) -> Any:
    source = BufferedShuffleIterator(NativeCheckpointableIterator(list(range(600))), 16, SEED)
    mapped = ParallelMapIterator(source, _twice, size, 4, multiprocessing_context="fork")
    return PrefetchIterator(FixedBatchIterator(mapped, 4), 8, multiprocessing_context="fork")


def _pipeline_steps(pipeline: Any, epochs_done: int) -> Iterator[tuple[list[int], bool]]:
    if epochs_done == 0:
        for batch in pipeline:
            yield [n // 2 for n in batch], False
        yield [], True


class _Ranks:
    """`size` ranks that consume in lockstep, each a loader made by ``make(rank, size)`` over
    an elastic distributed sampler; its state is rank 0's, which every rank of another world
    size loads."""

    def __init__(self, make: Callable[[int, int], Any], size: int) -> None:
        self.loaders = [make(rank, size) for rank in range(size)]
        self.samplers = [loader.sampler for loader in self.loaders]

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = self.loaders[0].state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for loader in self.loaders:
            loader.load_state_dict(state)

    def steps(self, epochs_done: int) -> Iterator[tuple[list[int], bool]]:
        for epoch in range(epochs_done, EPOCHS):
            for sampler in self.samplers:
                sampler.set_epoch(epoch)  # the same epoch after a resume keeps the position
            live = [iter(loader) for loader in self.loaders]
            while live:  # a step takes one batch from every rank that has one
                ids: list[int] = []
                still = []
                for batches in live:
                    try:
                        ids.extend(int(i) for i in next(batches))
                    except StopIteration:
                        continue
                    still.append(batches)
                live = still
                if ids:
                    yield ids, False
            yield [], True


def _rank_loader(rank: int, size: int) -> Any:
    from ..dataloader import StatefulDataLoader
    from ..samplers import ResumableDistributedSampler

    dataset = Ids(240)
    sampler = ResumableDistributedSampler(
        dataset, size, rank, shuffle=True, seed=SEED, batch_size=4
    )
    return StatefulDataLoader(dataset, batch_size=4, sampler=sampler, collate_fn=list)


#: Where the cases that read files keep them (set by the harness before it forks children).
FOLDER: Path | None = None


def _shards() -> list[str]:
    """JSONL shards of 4 x 60 rows {"id": i} in `FOLDER` (written once)."""
    if FOLDER is None:
        raise RuntimeError("the torture harness sets FOLDER before the cases that read files")
    paths = []
    for shard in range(4):
        path = FOLDER / f"shard-{shard}.jsonl"
        if not path.exists():
            rows = "".join(json.dumps({"id": shard * 60 + i}) + "\n" for i in range(60))
            path.write_text(rows)
        paths.append(str(path))
    return paths


def _source_loader(rank: int, size: int) -> Any:
    from ..dataloader import StatefulDataLoader
    from ..sources import ShardedDataset

    dataset = ShardedDataset(
        _shards(), seed=SEED, window=2, block_rows=16, rank=rank, world_size=size
    )
    return StatefulDataLoader(
        dataset, batch_size=4, sampler=dataset.sampler, collate_fn=_row_ids, num_workers=1
    )


def _row_ids(rows: list[dict[str, Any]]) -> list[int]:
    return [int(row["id"]) for row in rows]


def _ranked(name: str, make: Callable[[int, int], Any]) -> Case:
    """Ranks 2 <-> 3 in lockstep, each over a loader made by ``make(rank, size)``."""
    return Case(name, (2, 3), partial(_Ranks, make), _Ranks.steps, ordered=False, padding=2)


CASES: dict[str, Case] = {
    case.name: case
    for case in [
        Case("loader map fork", (0, 2, 3), _loader, _epochs, share=3),
        Case(
            "loader map spawn",
            (1, 2),
            partial(_loader, multiprocessing_context="spawn"),
            _epochs,
            share=1,
        ),
        Case("loader persistent", (2, 3), partial(_loader, persistent_workers=True), _epochs),
        Case("loader in_order=False", (2, 3), partial(_loader, in_order=False), _epochs, False),
        Case("loader sharded iterable", (0, 2, 3), _sharded, _epochs),
        Case(
            "loader stateful iterable",
            (2,),
            partial(_loader, dataset=CountingIds(240)),
            _epochs,
        ),
        Case("pipeline prefetch+parallel_map", (2, 3), _pipeline, _pipeline_steps),
        Case("stream over loader", (0, 2), _stream, _stream_steps),
        _ranked("elastic ranks 2<->3", _rank_loader),
        _ranked("sources ShardedDataset ranks 2<->3", _source_loader),
    ]
}
