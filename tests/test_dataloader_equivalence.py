"""An uninterrupted StatefulDataLoader gives exactly torch DataLoader's batches.

Same batches, same order for the same seeds (the global RNG and `generator` are drawn from at the
same moments, checked by comparing the RNG states afterwards), same collation, same worker
seeding and `get_worker_info()`, same IterableDataset conventions.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from checkpointable.dataloader import StatefulDataLoader
from checkpointable.testing import items_equal
from tests._loader_data import (
    CountingSampler,
    Partitioned,
    PlainSampler,
    Squares,
    StatefulPartitioned,
    WorkerView,
    sharded,
)

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")


def run(cls: type, epochs: int, make: Any, seed: int = 0) -> tuple[list[list[Any]], Any]:
    """Batches of `epochs` epochs of the loader `make(cls)` builds, and the global RNG after."""
    torch.manual_seed(seed)
    loader = make(cls)
    try:
        batches = [list(loader) for _ in range(epochs)]
    finally:
        if hasattr(loader, "close"):
            loader.close()
    return batches, torch.get_rng_state()


def assert_same(make: Any, epochs: int = 2, seed: int = 0) -> list[list[Any]]:
    ours, ours_rng = run(StatefulDataLoader, epochs, make, seed)
    theirs, their_rng = run(DataLoader, epochs, make, seed)
    assert items_equal(ours, theirs), f"\nours:   {ours}\ntorch:  {theirs}"
    assert torch.equal(ours_rng, their_rng), "the global RNG was drawn from differently"
    return ours


def sampler_kinds(n: int, generator: torch.Generator | None) -> dict[str, Any]:
    return {
        "sequential": SequentialSampler(range(n)),
        "random": RandomSampler(range(n), generator=generator),
        "random_replacement": RandomSampler(
            range(n), replacement=True, num_samples=2 * n + 3, generator=generator
        ),
        "random_more_samples": RandomSampler(range(n), num_samples=2 * n + 1, generator=generator),
        "subset_random": SubsetRandomSampler(list(range(0, n, 2)), generator=generator),
        "weighted": WeightedRandomSampler([1.0 + i for i in range(n)], n, generator=generator),
        "stateful": CountingSampler(n, seed=3),
        "plain": PlainSampler(n),
    }


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(1, 30),
    batch_size=st.one_of(st.none(), st.integers(1, 7)),
    drop_last=st.booleans(),
    kind=st.sampled_from(
        [
            "shuffle",
            "sequential",
            "random",
            "random_replacement",
            "random_more_samples",
            "subset_random",
            "weighted",
            "stateful",
            "plain",
            "batch_sampler",
        ]
    ),
    generator_seed=st.one_of(st.none(), st.integers(0, 2**20)),
    seed=st.integers(0, 2**20),
)
def test_map_style_without_workers_matches_torch(
    n: int,
    batch_size: int | None,
    drop_last: bool,
    kind: str,
    generator_seed: int | None,
    seed: int,
) -> None:
    drop_last = drop_last and batch_size is not None

    def make(cls: type) -> Any:
        generator = None
        if generator_seed is not None:
            generator = torch.Generator()
            generator.manual_seed(generator_seed)
        if kind == "shuffle":
            return cls(
                Squares(n), batch_size, shuffle=True, drop_last=drop_last, generator=generator
            )
        if kind == "batch_sampler":
            sampler = BatchSampler(RandomSampler(range(n), generator=generator), 3, drop_last)
            return cls(Squares(n), batch_sampler=sampler, generator=generator)
        sampler = sampler_kinds(n, generator)[kind]
        return cls(
            Squares(n), batch_size, sampler=sampler, drop_last=drop_last, generator=generator
        )

    assert_same(make, epochs=2, seed=seed)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("shuffle", [False, True])
def test_map_style_with_workers_matches_torch_seeding_and_worker_info(
    persistent: bool, shuffle: bool
) -> None:
    generator = torch.Generator()
    generator.manual_seed(5)

    def make(cls: type) -> Any:
        generator.manual_seed(5)
        return cls(
            WorkerView(23),
            batch_size=4,
            shuffle=shuffle,
            num_workers=2,
            persistent_workers=persistent,
            generator=generator,
            worker_init_fn=_init_worker,
        )

    batches = assert_same(make, epochs=2)
    workers = {int(w) for epoch in batches for batch in epoch for w in batch["worker"]}
    assert workers == {0, 1}


def _init_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    assert info is not None and info.id == worker_id
    torch.rand(worker_id + 1)  # moves the worker's RNG: visible in its items, as under torch


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 1, 2, 3])
@pytest.mark.parametrize(("batch_size", "drop_last"), [(None, False), (3, False), (3, True)])
def test_iterable_dataset_sharding_matches_torch(
    num_workers: int, batch_size: int | None, drop_last: bool
) -> None:
    def make(cls: type) -> Any:
        return cls(Partitioned(17), batch_size, drop_last=drop_last, num_workers=num_workers)

    assert_same(make, epochs=1)


@pytest.mark.timeout(60)
def test_stateful_iterable_dataset_matches_torch_with_persistent_workers() -> None:
    def make(cls: type) -> Any:
        return cls(StatefulPartitioned(11), 2, num_workers=2, persistent_workers=True)

    assert_same(make, epochs=3)


@pytest.mark.timeout(60)
def test_in_order_false_gives_the_same_batches_in_some_order() -> None:
    make = lambda cls: cls(Squares(40), 3, shuffle=True, num_workers=2, in_order=False)  # noqa: E731
    ours, _ = run(StatefulDataLoader, 1, make)
    theirs, _ = run(DataLoader, 1, make)
    key = lambda batch: batch[0].tolist()  # noqa: E731
    assert sorted(map(key, ours[0])) == sorted(map(key, theirs[0]))


def test_collation_and_len_match_torch() -> None:
    data = [{"x": torch.tensor([i, i]), "y": str(i), "z": (i, float(i))} for i in range(7)]
    assert_same(lambda cls: cls(data, batch_size=3), epochs=1)
    assert_same(lambda cls: cls(data, batch_size=None), epochs=1)
    assert_same(lambda cls: cls(data, batch_size=2, collate_fn=lambda items: items), epochs=1)
    assert (
        len(StatefulDataLoader(data, batch_size=3))
        == len(DataLoader(cast("Dataset[Any]", data), batch_size=3))
        == 3
    )


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    num_shards=st.integers(1, 5),
    batch_size=st.one_of(st.none(), st.integers(1, 4)),
)
def test_sharded_dataset_order_is_round_robin_over_live_shards(
    n: int, num_shards: int, batch_size: int | None
) -> None:
    dataset = sharded(n, num_shards)
    shards = [list(dataset.open_shard(s)) for s in range(num_shards)]
    expected, live = [], list(range(num_shards))
    size = batch_size or 1
    positions = [0] * num_shards
    while live:
        for s in list(live):
            part = shards[s][positions[s] : positions[s] + size]
            positions[s] += size
            if len(part) < size:
                live.remove(s)
            if part:
                expected.append(part if batch_size else part[0])
    got = [b.tolist() if batch_size else b for b in StatefulDataLoader(dataset, batch_size)]
    assert got == expected
    assert sorted(list(dataset)) == list(range(n))  # iterated directly: every item once


@pytest.mark.timeout(60)
def test_a_sharded_dataset_also_works_under_torchs_dataloader() -> None:
    dataset = sharded(31, 5)
    items = [int(x) for batch in DataLoader(dataset, batch_size=3, num_workers=2) for x in batch]
    assert sorted(items) == list(range(31))
