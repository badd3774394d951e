"""Hugging Face ``datasets`` (the real package) through our loader and samplers.

A streaming ``IterableDataset`` read from local JSONL or Parquet files resumes exactly through
its own ``state_dict()``, with 0 and 2 workers, also after a second resume and across an epoch;
a map-style ``Dataset`` works with the resumable samplers; a shuffle buffer, which their state
leaves out, is named in a warning at the loader's first ``state_dict()``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import torch

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from checkpointable import (  # noqa: E402
    ResumableDistributedSampler,
    ResumableRandomSampler,
    StatefulDataLoader,
)
from checkpointable.testing import assert_resumable  # noqa: E402

FILES, ROWS = 4, 11  # 4 shards: 2 workers read 2 each


def write_files(folder: Path, kind: str) -> list[str]:
    paths = []
    for f in range(FILES):
        rows = [{"id": f * 100 + i, "text": f"file {f} row {i}"} for i in range(ROWS)]
        path = folder / f"part-{f}.{kind}"
        if kind == "jsonl":
            path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        else:
            pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
        paths.append(str(path))
    return paths


def streaming(paths: list[str], kind: str) -> Any:  # a datasets.IterableDataset (untyped)
    builder = "json" if kind == "jsonl" else "parquet"
    return datasets.load_dataset(builder, data_files=paths, split="train", streaming=True)


def every_row() -> list[int]:
    return sorted(f * 100 + i for f in range(FILES) for i in range(ROWS))


def ids(batches: Iterable[dict[str, Any]]) -> list[int]:
    return [i for batch in batches for i in batch["id"].tolist()]


@pytest.mark.parametrize(
    ("kind", "workers"),
    [
        ("jsonl", 0),
        ("parquet", 0),
        pytest.param("parquet", 2, marks=pytest.mark.slow),  # (JSONL with workers: the same)
    ],
)
@pytest.mark.resumable("StatefulDataLoader")
def test_streaming_dataset_resumes_exactly_with_its_own_state(
    tmp_path: Path, kind: str, workers: int
) -> None:
    paths = write_files(tmp_path, kind)

    def make() -> StatefulDataLoader:
        return StatefulDataLoader(streaming(paths, kind), batch_size=5, num_workers=workers)

    # Two epochs without set_epoch: a pass after a resume must start over, not at the state.
    positions = 8 if workers == 0 else 4
    batches = assert_resumable(make, epochs=2, max_positions=positions, same_structure=False)
    per_epoch = len(batches) // 2
    assert sorted(ids(batches[:per_epoch])) == every_row()
    assert ids(batches[per_epoch:]) == ids(batches[:per_epoch])


@pytest.mark.slow
def test_persistent_workers_resume_exactly_with_set_epoch(tmp_path: Path) -> None:
    """Their dataset keeps a loaded state for its epoch: a new epoch number ends it."""
    paths = write_files(tmp_path, "parquet")

    def make() -> StatefulDataLoader:
        rows = streaming(paths, "parquet")
        return StatefulDataLoader(rows, batch_size=5, num_workers=2, persistent_workers=True)

    def set_epoch(loader: StatefulDataLoader, epoch: int) -> None:
        dataset: Any = loader.dataset  # a datasets.IterableDataset (untyped)
        dataset.set_epoch(epoch)

    batches = assert_resumable(
        make, epochs=2, before_epoch=set_epoch, max_positions=4, same_structure=False
    )
    assert sorted(ids(batches)) == sorted(every_row() * 2)


def test_the_state_holds_the_datasets_own_state(tmp_path: Path) -> None:
    paths = write_files(tmp_path, "jsonl")
    loader = StatefulDataLoader(streaming(paths, "jsonl"), batch_size=4)
    batches = iter(loader)
    next(batches)
    entry = loader.state_dict()["sources"][1][0]  # streams[0]
    alone = streaming(paths, "jsonl")
    rows = iter(alone)
    for _ in range(4):
        next(rows)
    assert entry["state"] == alone.state_dict()  # theirs, as they give it after 4 rows
    assert json.loads(json.dumps(entry)) == entry


def test_a_map_style_dataset_works_with_the_resumable_samplers(tmp_path: Path) -> None:
    paths = write_files(tmp_path, "parquet")
    table = datasets.Dataset.from_parquet(paths, cache_dir=str(tmp_path / "cache"))
    table = table.with_format("torch")

    def make() -> StatefulDataLoader:
        sampler = ResumableRandomSampler(table, seed=3)
        return StatefulDataLoader(table, batch_size=6, sampler=sampler)

    batches = assert_resumable(make, epochs=2, before_epoch=lambda ld, e: ld.sampler.set_epoch(e))
    order = torch.randperm(len(table), generator=torch.Generator().manual_seed(3)).tolist()
    first_epoch = ids(batches[: -(-len(table) // 6)])
    assert first_epoch == [table[i]["id"].item() for i in order]

    shares = []
    for rank in range(2):
        sampler = ResumableDistributedSampler(table, num_replicas=2, rank=rank, seed=1)
        shares.append(ids(StatefulDataLoader(table, batch_size=4, sampler=sampler)))
    assert sorted(shares[0] + shares[1]) == every_row()


def test_a_shuffle_buffer_is_named_once_in_a_warning(tmp_path: Path) -> None:
    paths = write_files(tmp_path, "jsonl")
    shuffled = streaming(paths, "jsonl").shuffle(seed=0, buffer_size=8)
    loader = StatefulDataLoader(shuffled, batch_size=4)
    batches = iter(loader)
    next(batches), next(batches)
    with pytest.warns(UserWarning, match=r"buffer of 8 examples") as caught:
        state = loader.state_dict()
    message = str(caught[0].message)
    assert "skipped" in message and "checkpointable.sources" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.state_dict()  # once only
        plain = StatefulDataLoader(streaming(paths, "jsonl"), batch_size=4)
        plain.state_dict()  # no buffer: no warning

    # What the warning says is true: the rest of the run differs after a resume.
    rest = ids(batches)
    resumed = StatefulDataLoader(streaming(paths, "jsonl").shuffle(seed=0, buffer_size=8), 4)
    resumed.load_state_dict(state)
    assert ids(resumed) != rest
