"""ShardedDataset: formats, orders, resumability through the loader, state, bad input."""

from __future__ import annotations

import functools
import gzip
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from checkpointable import IncompatibleStateError, ShardedDataset, StatefulDataLoader
from checkpointable._sources import formats
from checkpointable.testing import assert_resumable

from ._data import FORMATS, row_id, write_file, write_shards

SIZES = [7, 5, 9]  # 21 rows in 3 files
TOTAL = sum(SIZES)


@pytest.fixture(params=FORMATS)
def shards(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "jsonl.zst":
        pytest.importorskip("zstandard")
    write_shards(tmp_path, request.param, SIZES)
    return str(tmp_path / f"*.{request.param}"), request.param


def ids(rows: list) -> list[int]:
    return [row_id(row) for row in rows]


def flat(lists: list[list]) -> list:
    return [item for part in lists for item in part]


def epoch_ids(dataset: ShardedDataset) -> list[int]:
    return [row_id(dataset[i]) for i in dataset.sampler]


def test_shuffle_false_reads_the_files_in_order(shards: tuple[str, str]) -> None:
    dataset = ShardedDataset(shards[0], shuffle=False, block_rows=3)
    assert len(dataset) == TOTAL
    assert epoch_ids(dataset) == list(range(TOTAL))


def test_shuffled_epochs_are_permutations_that_differ_and_repeat_from_the_seed(
    shards: tuple[str, str],
) -> None:
    dataset = ShardedDataset(shards[0], seed=3, window=2, block_rows=3)
    first, second = epoch_ids(dataset), epoch_ids(dataset)  # each pass is the next epoch
    assert sorted(first) == sorted(second) == list(range(TOTAL))
    assert first != second and first != list(range(TOTAL))
    again = ShardedDataset(shards[0], seed=3, window=2, block_rows=3)
    again.sampler.set_epoch(1)
    assert epoch_ids(again) == second  # a pure function of (seed, epoch)
    other = ShardedDataset(shards[0], seed=4, window=2, block_rows=3)
    assert epoch_ids(other) != first


def test_rows_of_each_format(tmp_path: Path) -> None:
    write_shards(tmp_path, "tar", [2])
    row = ShardedDataset(str(tmp_path / "*.tar"), shuffle=False)[1]
    assert row == {"__key__": "sample00001", "json": b'{"id": 1}', "txt": b"x"}
    write_shards(tmp_path, "parquet", [3])
    parquet = ShardedDataset(str(tmp_path / "*.parquet"), shuffle=False, columns=["text"])
    assert parquet[2] == {"text": "row 2"}
    write_shards(tmp_path, "jsonl.gz", [3])
    assert ShardedDataset(str(tmp_path / "*.jsonl.gz"), shuffle=False)[0] == {
        "id": 0,
        "text": "row 0",
    }


def _loader(pattern: str, num_workers: int, batch_size: int = 4) -> StatefulDataLoader:
    dataset = ShardedDataset(pattern, seed=5, window=2, block_rows=3)
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=dataset.sampler,
        collate_fn=list,
        num_workers=num_workers,
    )


@pytest.mark.resumable("ShardedDataset")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumable_through_the_loader(shards: tuple[str, str], num_workers: int) -> None:
    positions = None if num_workers == 0 else [1, 5, 6, 7, 12]
    items = assert_resumable(
        functools.partial(_loader, shards[0], num_workers), epochs=2, positions=positions
    )
    per_epoch = -(-TOTAL // 4)
    first, second = items[:per_epoch], items[per_epoch:]
    assert sorted(ids(flat(first))) == sorted(ids(flat(second))) == list(range(TOTAL))


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 2), (2, 1)])
def test_resume_with_another_number_of_workers(tmp_path: Path, before: int, after: int) -> None:
    pattern = str(tmp_path / "*.parquet")
    write_shards(tmp_path, "parquet", SIZES)
    full = [ids(batch) for batch in _loader(pattern, 0)]
    loader = _loader(pattern, before)
    iterator = iter(loader)
    head = [ids(next(iterator)) for _ in range(3)]
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    resumed = _loader(pattern, after)
    resumed.load_state_dict(state)
    assert head + [ids(batch) for batch in resumed] == full


def test_state_is_small_plain_and_does_not_grow_with_the_files(tmp_path: Path) -> None:
    write_shards(tmp_path / "few", "jsonl", [3, 3])
    write_shards(tmp_path / "many", "jsonl", [3] * 60)
    sizes = []
    for folder in ("few", "many"):
        dataset = ShardedDataset(str(tmp_path / folder / "*.jsonl"), block_rows=2)
        iterator = iter(dataset.sampler)
        next(iterator)
        sizes.append(len(json.dumps(dataset.sampler.state_dict())))
    assert sizes[0] < 1024 and abs(sizes[1] - sizes[0]) <= 4


def test_restore_reads_one_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_shards(tmp_path, "jsonl", [40, 40])
    pattern = str(tmp_path / "*.jsonl")
    dataset = ShardedDataset(pattern, window=1, block_rows=10)
    loader = StatefulDataLoader(dataset, batch_size=2, sampler=dataset.sampler, collate_fn=list)
    iterator = iter(loader)
    for _ in range(17):
        next(iterator)
    state = loader.state_dict()
    reads: list[int] = []
    original = formats.read_block

    def read(*args: Any) -> Any:
        reads.append(args[3])
        return original(*args)

    monkeypatch.setattr("checkpointable._sources.dataset.read_file_block", read)
    resumed = ShardedDataset(pattern, window=1, block_rows=10)
    again = StatefulDataLoader(resumed, batch_size=2, sampler=resumed.sampler, collate_fn=list)
    again.load_state_dict(state)
    assert ids(next(iter(again))) == ids(next(iterator))
    assert len(reads) == 1


def test_state_over_other_files_is_refused_naming_the_change(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [4, 4])
    pattern = str(tmp_path / "*.jsonl")
    state = ShardedDataset(pattern).sampler.state_dict()
    write_file(tmp_path / "part-001.jsonl", "jsonl", [4, 5, 6, 7, 8])
    with pytest.raises(IncompatibleStateError, match="sizes or row counts differ"):
        ShardedDataset(pattern).sampler.load_state_dict(state)
    write_shards(tmp_path / "b", "jsonl", [4, 4, 4])
    with pytest.raises(IncompatibleStateError, match="2 files at save, 3 now"):
        ShardedDataset(str(tmp_path / "b" / "*.jsonl")).sampler.load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="seed=0, but this object has seed=1"):
        ShardedDataset(pattern, seed=1).sampler.load_state_dict(
            ShardedDataset(pattern).sampler.state_dict()
        )


def test_missing_files_are_named_at_construction(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such file: '.*nope\.jsonl'"):
        ShardedDataset(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"the glob '.*\*\.parquet' matches no file"):
        ShardedDataset(str(tmp_path / "*.parquet"))
    with pytest.raises(ValueError, match="at least one file"):
        ShardedDataset([])


def test_bad_arguments(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [2])
    pattern = str(tmp_path / "*.jsonl")
    with pytest.raises(ValueError, match="format must be one of"):
        ShardedDataset(pattern, format="csv")
    with pytest.raises(ValueError, match="errors must be 'raise' or 'skip'"):
        ShardedDataset(pattern, errors="ignore")
    with pytest.raises(ValueError, match="window must be a positive int, got window=0"):
        ShardedDataset(pattern, window=0)
    with pytest.raises(TypeError, match="columns must be a list"):
        ShardedDataset(pattern, columns="id")
    with pytest.raises(ValueError, match="pass both rank and world_size, or neither"):
        ShardedDataset(pattern, world_size=2)
    with pytest.raises(ValueError, match="rank must be < world_size, got rank=2, world_size=2"):
        ShardedDataset(pattern, world_size=2, rank=2)
    with pytest.raises(TypeError, match="files must be a path"):
        ShardedDataset(3)
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ValueError, match="cannot tell the format of"):
        ShardedDataset(str(tmp_path / "x.csv"))


def test_corrupt_shards_name_the_file_and_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 0}\n{"id": 1}\n{"id": \n{"id": 3}\n')
    dataset = ShardedDataset(str(bad), shuffle=False)
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 3: not valid JSON"):
        [dataset[i] for i in dataset.sampler]
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"id": 0}\n' * 500)[:-30])
    with pytest.raises(ValueError, match=r"cut\.jsonl\.gz: the compressed stream is corrupt"):
        ShardedDataset(str(truncated))
    write_shards(tmp_path / "p", "parquet", [5])
    broken = tmp_path / "p" / "part-000.parquet"
    broken.write_bytes(broken.read_bytes()[:-12])
    with pytest.raises(ValueError, match=r"part-000\.parquet is not a readable Parquet file"):
        ShardedDataset(str(broken))


def test_errors_skip_is_deterministic_and_counted(tmp_path: Path) -> None:
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"id": 0}\n{"id": 1}\nnot json\n{"id": 3}\n')
    truncated = tmp_path / "b.jsonl.gz"
    truncated.write_bytes(gzip.compress(b"".join(b'{"id": %d}\n' % i for i in range(4, 300)))[:-40])
    pattern = [str(bad), str(truncated)]
    with pytest.warns(UserWarning, match="left out 1"):
        dataset = ShardedDataset(pattern, shuffle=False, errors="skip")
    assert dataset.skipped == 1
    with pytest.warns(UserWarning, match=r"a\.jsonl, line 3"):
        rows = dataset.__getitems__(list(range(len(dataset))))
    assert dataset.skipped == 2
    got = [row["id"] for row in rows]
    assert got[:3] == [0, 1, 3] and got[3:] == list(range(4, 4 + len(got) - 3))
    with pytest.warns(UserWarning):
        again = ShardedDataset(pattern, shuffle=False, errors="skip")
        assert [row["id"] for row in again.__getitems__(list(range(len(again))))] == got
    write_shards(tmp_path / "p", "parquet", [3, 4])
    broken = tmp_path / "p" / "part-000.parquet"
    broken.write_bytes(broken.read_bytes()[:-12])
    with pytest.warns(UserWarning, match="left out 1"):
        parquet = ShardedDataset(str(tmp_path / "p" / "*.parquet"), errors="skip")
    assert len(parquet) == 4 and sorted(parquet[i]["id"] for i in range(4)) == [3, 4, 5, 6]


def test_uneven_end_pads_or_drops_fewer_than_world_size(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [11])
    pattern = str(tmp_path / "*.jsonl")
    for drop_last, per_rank in ((False, 4), (True, 3)):
        parts = [
            epoch_ids(ShardedDataset(pattern, world_size=3, rank=r, drop_last=drop_last))
            for r in range(3)
        ]
        assert [len(p) for p in parts] == [per_rank] * 3
        delivered = flat(parts)
        if drop_last:
            assert len(set(delivered)) == 9
        else:
            assert set(delivered) == set(range(11)) and len(delivered) == 12


def test_repr_names_the_configuration(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [2, 2, 2, 2])
    text = repr(ShardedDataset(str(tmp_path / "*.jsonl"), seed=2))
    assert "part-000.jsonl" in text and "(4 files)" in text and "seed=2" in text


def test_worker_pickles_without_live_readers(tmp_path: Path) -> None:
    import pickle

    write_shards(tmp_path, "parquet", [5])
    dataset = ShardedDataset(str(tmp_path / "*.parquet"), shuffle=False)
    assert dataset[3]["id"] == 3
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy[4]["id"] == 4 and Path(copy.layout.files[0].path).exists()


@pytest.mark.parametrize("form", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_names_of_every_format(tmp_path: Path, form: int) -> None:
    folder = "d" * 60 + "/" + "e" * 50 if form != tarfile.USTAR_FORMAT else "dir/sub"
    path = tmp_path / "long.tar"
    with tarfile.open(path, "w", format=form) as archive:
        for i in range(3):
            for ext in ("json", "seg.txt"):
                data = f"{i}-{ext}".encode()
                info = tarfile.TarInfo(f"{folder}/k{i}.{ext}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        directory = tarfile.TarInfo("a-directory")
        directory.type = tarfile.DIRTYPE
        archive.addfile(directory)
    rows = [ShardedDataset(str(path), shuffle=False, block_rows=2)[i] for i in range(3)]
    assert rows[2] == {"__key__": f"{folder}/k2", "json": b"2-json", "seg.txt": b"2-seg.txt"}


def test_truncated_tar_is_named_or_its_tail_skipped(tmp_path: Path) -> None:
    write_shards(tmp_path, "tar", [6])
    path = tmp_path / "part-000.tar"
    data = path.read_bytes()
    path.write_bytes(data[: 512 * 14 + 100])  # inside the 8th member (sample 3)
    with pytest.raises(ValueError, match=r"part-000\.tar is a corrupt tar file after 4 samples"):
        ShardedDataset(str(path))
    with pytest.warns(UserWarning, match="left out 1"):
        dataset = ShardedDataset(str(path), shuffle=False, errors="skip", block_rows=2)
    assert [row_id(dataset[i]) for i in range(len(dataset))] == [0, 1, 2]


@pytest.mark.slow
def test_spawn_and_persistent_workers_resume_in_the_second_epoch(tmp_path: Path) -> None:
    write_shards(tmp_path, "tar", SIZES)
    pattern = str(tmp_path / "*.tar")

    def loader(workers: int) -> StatefulDataLoader:
        dataset = ShardedDataset(pattern, seed=8, window=2, block_rows=3)
        extra: dict[str, Any] = (
            {"multiprocessing_context": "spawn", "persistent_workers": True} if workers else {}
        )
        return StatefulDataLoader(
            dataset,
            batch_size=4,
            sampler=dataset.sampler,
            collate_fn=list,
            num_workers=workers,
            **extra,
        )

    plain = loader(0)
    epochs = [[ids(batch) for batch in plain] for _ in range(2)]
    assert sorted(flat(epochs[1])) == list(range(TOTAL)) and epochs[0] != epochs[1]
    spawned = loader(2)
    first = [ids(batch) for batch in spawned]
    iterator = iter(spawned)
    head = [ids(next(iterator)) for _ in range(3)]
    state = json.loads(json.dumps(spawned.state_dict()))
    del iterator
    resumed = loader(2)
    resumed.load_state_dict(state)
    assert [first, head + [ids(batch) for batch in resumed]] == epochs


def test_row_groups_of_one_parquet_file_read_by_parallel_threads(tmp_path: Path) -> None:
    # a batch spanning many row groups of one file reads them in parallel threads
    write_shards(tmp_path, "parquet", [400], row_group=10)
    for seed in range(20):
        data = ShardedDataset(str(tmp_path / "*.parquet"), seed=seed, window=40)
        whole = StatefulDataLoader(data, batch_size=400, sampler=data.sampler, collate_fn=list)
        assert sorted(row_id(row) for row in next(iter(whole))) == list(range(400))
