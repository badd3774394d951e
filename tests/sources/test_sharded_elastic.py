"""N -> M -> P ranks (x workers): every row of the epoch once over all ranks, across resumes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import ShardedDataset, StatefulDataLoader

from ._data import row_id, write_shards


def make_loader(
    pattern: str, world: int, rank: int, config: dict, num_workers: int = 0
) -> StatefulDataLoader:
    dataset = ShardedDataset(
        pattern,
        world_size=world,
        rank=rank,
        seed=config["seed"],
        window=config["window"],
        lanes=config.get("lanes", 1),
        block_rows=config["block_rows"],
        drop_last=config["drop_last"],
    )
    return StatefulDataLoader(
        dataset,
        batch_size=config["batch_size"],
        sampler=dataset.sampler,
        collate_fn=list,
        num_workers=num_workers,
    )


def run_phase(
    pattern: str,
    world: int,
    config: dict,
    state: dict | None,
    batches: int | None,
    workers: int = 0,
) -> tuple[list[list[int]], dict]:
    """`world` ranks in lockstep take `batches` batches each (None: the rest of the epoch)."""
    loaders = [make_loader(pattern, world, r, config, workers) for r in range(world)]
    parts: list[list[int]] = []
    for loader in loaders:
        if state is not None:
            loader.load_state_dict(json.loads(json.dumps(state)))
        rows: list[int] = []
        if batches == 0:
            parts.append(rows)
            continue
        for count, batch in enumerate(loader):
            rows += [row_id(row) for row in batch]
            if batches is not None and count + 1 == batches:
                break
        parts.append(rows)
    states = [loader.state_dict()["order"][2] for loader in loaders]  # sampler_state
    assert all(s == states[0] for s in states), "the ranks' states differ"
    return parts, loaders[0].state_dict()


def check_epoch(n: int, phases: list[list[list[int]]], last_world: int, drop_last: bool) -> None:
    for parts in phases:
        assert len({len(p) for p in parts}) == 1, "ranks out of lockstep"
    counts = Counter(i for parts in phases for part in parts for i in part)
    if drop_last:
        assert max(counts.values(), default=1) == 1
        assert n - len(counts) < last_world
    else:
        assert set(counts) == set(range(n))
        assert sum(counts.values()) - n < last_world


def whole_batches(n_left: int, world: int, batch_size: int, fraction: float) -> int:
    """A number of lockstep batches that stays inside the epoch's first `n_left` rows."""
    most = n_left // (world * batch_size)
    return int(most * fraction)


@settings(max_examples=100)
@given(
    sizes=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    block_rows=st.integers(1, 4),
    window=st.integers(1, 3),
    lanes=st.integers(1, 5),
    seed=st.integers(0, 2**32),
    batch_size=st.integers(1, 3),
    worlds=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3)),
    fractions=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    drop_last=st.booleans(),
)
def test_every_row_once_over_n_then_m_then_p_ranks(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    block_rows: int,
    window: int,
    lanes: int,
    seed: int,
    batch_size: int,
    worlds: tuple[int, int, int],
    fractions: tuple[float, float],
    drop_last: bool,
) -> None:
    folder = tmp_path_factory.mktemp("elastic")
    write_shards(folder, "jsonl", sizes)
    pattern = str(folder / "*.jsonl")
    config = {
        "seed": seed,
        "window": window,
        "lanes": lanes,
        "block_rows": block_rows,
        "drop_last": drop_last,
        "batch_size": batch_size,
    }
    n, (first, second, third) = sum(sizes), worlds
    k1 = whole_batches(n, first, batch_size, fractions[0])
    one, state = run_phase(pattern, first, config, None, k1)
    progress = state["order"][2]["progress"]
    assert progress == k1 * batch_size * first
    k2 = whole_batches(n - progress, second, batch_size, fractions[1])
    two, state = run_phase(pattern, second, config, state, k2)
    three, _ = run_phase(pattern, third, config, state, None)
    check_epoch(n, [one, two, three], third, drop_last)


def test_same_world_resume_equals_the_uninterrupted_epoch(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [6, 5, 8])
    pattern = str(tmp_path / "*.jsonl")
    config = {"seed": 1, "window": 2, "block_rows": 2, "drop_last": False, "batch_size": 2}
    full, _ = run_phase(pattern, 2, config, None, None)
    head, state = run_phase(pattern, 2, config, None, 2)
    tail, _ = run_phase(pattern, 2, config, state, None)
    assert [h + t for h, t in zip(head, tail, strict=True)] == full


@pytest.mark.slow
def test_workers_change_with_the_world_size(tmp_path: Path) -> None:
    """2 ranks x 2 workers, then 3 ranks x 1 worker, then 1 rank x 2 workers."""
    write_shards(tmp_path, "parquet", [9, 7, 11], row_group=3)
    pattern = str(tmp_path / "*.parquet")
    config = {"seed": 9, "window": 2, "block_rows": 4, "drop_last": False, "batch_size": 2}
    one, state = run_phase(pattern, 2, config, None, 3, workers=2)
    two, state = run_phase(pattern, 3, config, state, 1, workers=1)
    three, _ = run_phase(pattern, 1, config, state, None, workers=2)
    check_epoch(27, [one, two, three], 1, False)


def test_resume_at_the_epoch_end_starts_the_next_epoch(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [5, 5])
    pattern = str(tmp_path / "*.jsonl")
    config = {"seed": 2, "window": 1, "block_rows": 3, "drop_last": False, "batch_size": 3}
    loader = make_loader(pattern, 2, 0, config)
    first = [row_id(r) for batch in loader for r in batch]
    state = loader.state_dict()
    second = [row_id(r) for batch in loader for r in batch]
    assert sorted(first) != sorted(second) or first != second
    same = make_loader(pattern, 2, 0, config)
    same.load_state_dict(state)
    assert [row_id(r) for batch in same for r in batch] == second
    parts = []
    for rank in range(3):  # on 3 ranks: epoch 1 dealt over the 3 ranks, every row once
        resumed = make_loader(pattern, 3, rank, config)
        resumed.load_state_dict(state)
        parts.append([row_id(r) for batch in resumed for r in batch])
        assert isinstance(resumed.dataset, ShardedDataset)
        assert resumed.dataset.sampler.epoch == 1
    check_epoch(10, [parts], 3, False)


def test_lanes_give_each_rank_its_own_blocks(tmp_path: Path) -> None:
    write_shards(tmp_path, "jsonl", [8, 8, 8, 8])  # 8 blocks of 4 rows
    pattern = str(tmp_path / "*.jsonl")
    config = {"seed": 4, "window": 2, "lanes": 4, "block_rows": 4, "drop_last": False}
    parts, _ = run_phase(pattern, 2, {**config, "batch_size": 3}, None, None)
    blocks = [{row // 4 for row in part} for part in parts]
    assert not blocks[0] & blocks[1] and len(blocks[0]) == len(blocks[1]) == 4
    assert sorted(parts[0] + parts[1]) == list(range(32))
    lanes, _ = run_phase(pattern, 1, {**config, "lanes": 1, "batch_size": 3}, None, None)
    assert sorted(lanes[0]) == list(range(32))
