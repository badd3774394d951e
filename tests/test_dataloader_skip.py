"""`StatefulDataLoader.skip` and the samplers' `advance`: leaving batches out without reading them.

The reference for every check: the uninterrupted run, with the skipped batches cut out of its
sequence of epochs (epochs keep their numbers; an epoch whose rest is all skipped is empty).
"""

from __future__ import annotations

import json
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any, cast

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset, DistributedSampler, IterableDataset, Sampler

from checkpointable import IncompatibleStateError, ShardedDataset, Stream
from checkpointable._inspect import describe
from checkpointable._loader.state_layout import long_form
from checkpointable.dataloader import ShardedIterableDataset, StatefulDataLoader
from checkpointable.samplers import (
    ResumableDistributedSampler,
    ResumableRandomSampler,
    ResumableSequentialSampler,
)
from checkpointable.testing import assert_resumable
from tests.sources._data import write_shards

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

Epochs = list[list[list[int]]]  # epochs of batches of sample ids


class Counted(Dataset[int]):
    """``range(n)`` that counts the items read (in this process)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        self.reads.append(index)
        return index


def seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make(
    kind: str, n: int = 23, batch_size: int = 3, workers: int = 0, **kwargs: Any
) -> StatefulDataLoader[Any]:
    """A loader over ``Counted(n)``: torch's random sampler with a generator, our stateful
    random sampler (set_epoch by the caller), or the sequential order."""
    data = Counted(n)
    if kind == "torch_random":
        return StatefulDataLoader(
            data, batch_size, shuffle=True, generator=seeded(), num_workers=workers, **kwargs
        )
    sampler: Sampler[int]
    if kind == "resumable_random":
        sampler = ResumableRandomSampler(data, seed=3)
        return StatefulDataLoader(data, batch_size, sampler=sampler, num_workers=workers, **kwargs)
    if kind == "torch_distributed":  # a sampler without state: replayed, never read
        sampler = DistributedSampler(data, num_replicas=2, rank=1, seed=2)
        return StatefulDataLoader(data, batch_size, sampler=sampler, num_workers=workers, **kwargs)
    return StatefulDataLoader(data, batch_size, num_workers=workers, **kwargs)


def set_epoch(loader: Any, epoch: int) -> None:
    setter = getattr(loader.sampler, "set_epoch", None)
    if setter is not None:
        setter(epoch)


def run(loader: Any, first: int, epochs: int) -> Epochs:
    """Epochs `first` .. `epochs` - 1, each a list of batches (lists of ids)."""
    out: Epochs = []
    for epoch in range(first, epochs):
        set_epoch(loader, epoch)
        out.append([batch.tolist() for batch in loader])
    return out


def cut(epochs: Epochs, epoch: int, batch: int, count: int) -> Epochs:
    """`epochs` with `count` batches left out from batch `batch` of epoch `epoch` on."""
    out = [list(batches) for batches in epochs]
    left = count
    for index in range(epoch, len(out)):
        start = batch if index == epoch else 0
        taken = out[index][start : start + left]
        del out[index][start : start + left]
        left -= len(taken)
    return out


def flat(parts: Any) -> list[int]:
    """The ids of a list of batches, in order."""
    return list(chain.from_iterable(parts))


def rest(epochs: Epochs, epoch: int, batch: int, count: int) -> Epochs:
    """What a resume at batch `batch` of epoch `epoch` that skips `count` batches yields."""
    out = cut(epochs, epoch, batch, count)[epoch:]
    out[0] = out[0][batch:]
    return out


def stop_at(loader: Any, epoch: int, batch: int) -> dict[str, Any]:
    """Run `loader` from the start to batch `batch` of epoch `epoch`; return the state there."""
    for current in range(epoch + 1):
        set_epoch(loader, current)
        iterator = iter(loader)
        for _ in range(batch if current == epoch else 10**9):
            if next(iterator, None) is None:
                break
        if current == epoch:
            state = loader.state_dict()
            del iterator
            loaded: dict[str, Any] = json.loads(json.dumps(state))
            return loaded
    raise AssertionError("unreachable")


EPOCHS = 3
PER_EPOCH = 8  # ceil(23 / 3)


@pytest.mark.parametrize(
    "kind", ["torch_random", "resumable_random", "sequential", "torch_distributed"]
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epoch=st.integers(0, EPOCHS - 1),
    batch=st.integers(0, PER_EPOCH),
    count=st.integers(0, 2 * PER_EPOCH + 2),
)
def test_a_skip_after_a_resume_cuts_those_batches_out(
    kind: str, epoch: int, batch: int, count: int
) -> None:
    reference = run(make(kind), 0, EPOCHS)
    batch = min(batch, len(reference[epoch]))  # a rank of 2 has half an epoch's batches
    state = stop_at(make(kind), epoch, batch)
    resumed = make(kind)
    resumed.load_state_dict(state)
    resumed.skip(count)
    assert run(resumed, epoch, EPOCHS) == rest(reference, epoch, batch, count)


@pytest.mark.parametrize("kind", ["torch_random", "resumable_random"])
@pytest.mark.parametrize(("epoch", "batch", "count"), [(0, 3, 2), (0, 6, 5), (1, 0, 9)])
def test_a_skip_with_two_workers(kind: str, epoch: int, batch: int, count: int) -> None:
    reference = run(make(kind), 0, EPOCHS)
    state = stop_at(make(kind, workers=2), epoch, batch)
    with make(kind, workers=2) as resumed:
        resumed.load_state_dict(state)
        resumed.skip(count)
        assert run(resumed, epoch, EPOCHS) == rest(reference, epoch, batch, count)


def test_a_skip_carried_into_the_next_epoch_of_persistent_workers() -> None:
    reference = run(make("resumable_random"), 0, EPOCHS)
    state = stop_at(make("resumable_random"), 0, 5)
    with make("resumable_random", workers=2, persistent_workers=True) as resumed:
        resumed.load_state_dict(state)
        resumed.skip(13)  # 3 left in epoch 0, 8 (all) of epoch 1, 2 of epoch 2
        assert run(resumed, 0, EPOCHS) == rest(reference, 0, 5, 13)


def test_a_sharded_iterable_skip_resumes_exactly() -> None:
    def factory() -> StatefulDataLoader[Any]:
        loader = shards_loader(every=2)
        loader.skip(12)  # 10 batches an epoch: carries 2 into the second epoch
        return loader

    items = assert_resumable(factory, epochs=2)
    reference = run(shards_loader(), 0, 2)
    assert [batch.tolist() for batch in items] == flat(cut(reference, 0, 0, 12))


def test_a_skip_out_of_order_counts_the_batches_delivered_beyond() -> None:
    loader = make("resumable_random", workers=2, in_order=False)
    state = stop_at(loader, 0, 4)
    loader.close()
    reference = run(make("resumable_random"), 0, 1)[0]
    resumed = make("resumable_random")
    resumed.load_state_dict(state)
    resumed.skip(2)
    rest = run(resumed, 0, 1)[0]
    delivered = long_form(state)["batches"] + len(long_form(state)["delivered_beyond"])
    assert len(rest) == len(reference) - delivered - 2
    assert all(batch in reference for batch in rest)


@pytest.mark.parametrize("count", [0, 3, 8, 11])
def test_a_skip_before_iterating_and_between_epochs(count: int) -> None:
    reference = run(make("torch_random"), 0, EPOCHS)
    loader = make("torch_random")
    loader.skip(count)
    assert run(loader, 0, EPOCHS) == cut(reference, 0, 0, count)
    # between epochs: after the first epoch's StopIteration
    loader = make("resumable_random")
    first = run(loader, 0, 1)
    loader.skip(count)
    expected = cut(run(make("resumable_random"), 0, EPOCHS), 1, 0, count)
    assert first + run(loader, 1, EPOCHS) == expected


def test_a_skip_across_the_epoch_end_leaves_an_empty_rest_and_carries_over() -> None:
    reference = run(make("resumable_random"), 0, EPOCHS)
    state = stop_at(make("resumable_random"), 0, 6)
    resumed = make("resumable_random")
    resumed.load_state_dict(state)
    resumed.skip(2)  # exactly the rest of epoch 0
    assert run(resumed, 0, 2) == [[], reference[1]]
    resumed = make("resumable_random")
    resumed.load_state_dict(state)
    resumed.skip(5)  # 2 of epoch 0, then 3 of epoch 1
    assert resumed.state_dict()["skips"] == [3, 5, [[0, 6, 5]]]
    assert run(resumed, 0, 2) == [[], reference[1][3:]]
    assert resumed.state_dict()["skips"][0] == 0


def test_the_skip_is_in_the_state_and_a_later_resume_stays_exact() -> None:
    def factory() -> StatefulDataLoader[Any]:
        loader = make("torch_random", n=10, batch_size=2)
        loader.skip(7)  # 5 batches an epoch: carries 2 into the second epoch
        return loader

    items = assert_resumable(factory, epochs=3)
    reference = run(make("torch_random", n=10, batch_size=2), 0, 3)
    assert [batch.tolist() for batch in items] == flat(cut(reference, 0, 0, 7))


def test_a_resume_after_a_skip_with_workers_and_another_worker_count() -> None:
    state = stop_at(make("resumable_random"), 1, 2)
    skipped = make("resumable_random")
    skipped.load_state_dict(state)
    skipped.skip(3)
    after = json.loads(json.dumps(skipped.state_dict()))
    expected = run(skipped, 1, EPOCHS)
    with make("resumable_random", workers=2) as resumed:
        resumed.load_state_dict(after)
        assert run(resumed, 1, EPOCHS) == expected


def test_a_skip_reads_no_skipped_item() -> None:
    loader = make("torch_random")
    state = stop_at(loader, 0, 2)
    resumed = make("torch_random")
    resumed.load_state_dict(state)
    resumed.skip(4)
    rest = run(resumed, 0, 1)[0]
    reads = cast(Counted, resumed.dataset).reads
    assert len(reads) == 3 * 2 - 1 and sorted(reads) == sorted(flat(rest))
    sampled = make("resumable_random")
    sampled.skip(5)
    assert cast(Counted, sampled.dataset).reads == []
    assert len(flat(run(sampled, 0, 1)[0])) == len(cast(Counted, sampled.dataset).reads) == 23 - 15


def distributed(rank: int, world: int, workers: int = 0) -> StatefulDataLoader[Any]:
    data = Counted(29)
    sampler = ResumableDistributedSampler(data, world, rank, seed=7)
    return StatefulDataLoader(data, batch_size=2, sampler=sampler, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_skips_the_same_batches_of_the_global_order(workers: int) -> None:
    world = 2
    reference = [run(distributed(rank, world), 0, 2) for rank in range(world)]
    states = [stop_at(distributed(rank, world), 0, 3) for rank in range(world)]
    resumed = []
    for rank in range(world):
        loader = distributed(rank, world, workers)
        loader.load_state_dict(states[rank])
        loader.skip(4)
        resumed.append(loader)
    skipped = [loader.state_dict() for loader in resumed]
    assert skipped[0]["order"] == skipped[1]["order"]
    for rank, loader in enumerate(resumed):
        with loader:
            assert run(loader, 0, 2) == rest(reference[rank], 0, 3, 4)


def test_a_skip_then_an_elastic_resume_deals_each_other_sample_once() -> None:
    states = [stop_at(distributed(rank, 2), 0, 2) for rank in range(2)]
    seen: list[int] = []
    for rank in range(2):
        loader = distributed(rank, 2)
        loader.load_state_dict(states[rank])
        loader.skip(1)  # 1 batch of 2 samples on each of 2 ranks: 4 positions of the order
        after = loader.state_dict()
    for rank in range(3):
        loader = distributed(rank, 3)
        loader.load_state_dict(after)
        seen += flat(run(loader, 0, 1)[0])
    reference = [run(distributed(rank, 2), 0, 1)[0] for rank in range(2)]
    before = flat(flat(part[:2]) for part in reference)
    skipped = flat(part[2] for part in reference)
    assert len(seen) == 6 * 3  # 29 - 8 - 4 = 17 left, padded to 6 per rank on 3 ranks
    assert sorted(set(before + skipped + seen)) == list(range(29))
    assert not set(seen) & set(skipped) and len(set(seen) - set(before)) == 17


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(8, 40),
    before_world=st.integers(1, 3),
    after_world=st.integers(1, 4),
    stop=st.integers(0, 3),
    count=st.integers(0, 4),
)
def test_a_skip_on_n_ranks_then_a_resume_on_m_ranks_leaves_out_those_samples_only(
    n: int, before_world: int, after_world: int, stop: int, count: int
) -> None:
    def loader(rank: int, world: int) -> StatefulDataLoader[Any]:
        sampler = ResumableDistributedSampler(Counted(n), world, rank, seed=3)
        return StatefulDataLoader(Counted(n), batch_size=2, sampler=sampler)

    reference = [run(loader(rank, before_world), 0, 1)[0] for rank in range(before_world)]
    stop = min(stop, len(reference[0]))
    count = min(count, len(reference[0]) - stop)
    state = stop_at(loader(0, before_world), 0, stop)
    skipping = loader(0, before_world)
    skipping.load_state_dict(state)
    skipping.skip(count)  # every rank does the same, and their states are equal
    after = json.loads(json.dumps(skipping.state_dict()))
    rest_ = [loader(rank, after_world) for rank in range(after_world)]
    for resumed in rest_:
        resumed.load_state_dict(after)
    seen = flat(flat(run(resumed, 0, 1)[0]) for resumed in rest_)
    done = flat(flat(part[:stop]) for part in reference)
    skipped = flat(flat(part[stop : stop + count]) for part in reference)
    assert set(done) | set(skipped) | set(seen) == set(range(n))  # nothing lost
    left = n - len(set(done) | set(skipped))  # nothing else left out, padding < M samples
    assert left <= len(seen) < left + after_world


def test_skip_refuses_bad_values() -> None:
    loader = make("sequential")
    with pytest.raises(ValueError, match=r"num_batches must be an int >= 0, got num_batches=-1"):
        loader.skip(-1)
    with pytest.raises(TypeError, match=r"num_batches must be an int, got 1.5 \(float\)"):
        loader.skip(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"num_batches must be an int, got True \(bool\)"):
        loader.skip(True)  # a bool is an int to mypy, refused at run time
    before = loader.state_dict()
    loader.skip(0)
    assert loader.state_dict() == before
    assert [b.tolist() for b in loader][:1] == [[0, 1, 2]]


def test_skip_refuses_a_live_iterator_and_what_it_cannot_move() -> None:
    loader = make("sequential")
    iterator = iter(loader)
    next(iterator)
    with pytest.raises(RuntimeError, match=r"an iterator of this loader is inside epoch 0"):
        loader.skip(2)
    del iterator
    loader.skip(2)  # the abandoned epoch ends at the next iter(): the skip begins the next
    assert next(iter(loader)).tolist() == [6, 7, 8]

    class Stream(IterableDataset[int]):
        def __iter__(self) -> Any:
            return iter(range(5))

    with pytest.raises(TypeError, match=r"needs a map-style dataset"):
        StatefulDataLoader(Stream(), batch_size=2).skip(1)


class NoAdvance(ResumableSequentialSampler):
    advance = None  # type: ignore[assignment]


def test_skip_refuses_samplers_it_cannot_move_without_drawing() -> None:
    data = Counted(10)
    loader = StatefulDataLoader(data, batch_size=2, sampler=NoAdvance(data))
    with pytest.raises(TypeError, match=r"sampler NoAdvance has a state but no advance"):
        loader.skip(1)
    shards = ShardedIterableDataset(partial(plain_shard, 6), num_shards=2)
    with pytest.raises(TypeError, match=r"shards of this ShardedIterableDataset .* no skip"):
        StatefulDataLoader(shards, batch_size=2).skip(1)


def plain_shard(n: int, index: int, count: int) -> Any:
    from checkpointable.iterators import ChunkedSourceIterator

    return ChunkedSourceIterator(list(range(n)), num_instances=count, instance_rank=index)


def test_a_stream_skips_through_its_loader() -> None:
    stream = Stream(make("sequential"))
    for _ in range(3):
        stream.next()
    state = stream.state_dict()
    resumed = Stream(make("sequential"))
    resumed.load_state_dict(state)
    cast(StatefulDataLoader[Any], resumed.loader).skip(2)
    assert resumed.next().tolist() == [15, 16, 17]


def test_a_state_of_an_unknown_version_or_a_damaged_skip_log_is_refused() -> None:
    # states of versions 2 (without skips), 3 and 4 load: tests/test_state_versions.py
    state = stop_at(make("sequential"), 0, 2)
    assert state["version"] == 5
    with pytest.raises(IncompatibleStateError, match=r"format version 6"):
        make("sequential").load_state_dict({**state, "version": 6})
    with pytest.raises(IncompatibleStateError, match=r"'skip_log'"):
        make("sequential").load_state_dict({**state, "skips": [0, 0, [[1]]]})


def test_inspect_shows_the_skips() -> None:
    loader = make("sequential")
    loader.load_state_dict(stop_at(make("sequential"), 0, 6))
    loader.skip(4)
    text = " ".join(describe(loader.state_dict()))
    assert "skipped 4 batches" in text and "pass 0 from batch 6: 4" in text
    assert "2 more batches to skip at the start of the next pass" in text


# ---------------------------------------------------------------- the samplers' advance


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), start=st.integers(0, 45), count=st.integers(0, 50))
def test_advance_skips_the_next_samples_of_the_pass(n: int, start: int, count: int) -> None:
    start = min(start, n)
    full = list(ResumableRandomSampler(range(n), seed=2))
    sampler = ResumableRandomSampler(range(n), seed=2)
    iterator = iter(sampler)
    head = [index for _, index in zip(range(start), iterator, strict=False)]
    done = sampler.advance(count)
    assert done == min(count, n - len(head))
    assert head + list(sampler) == full[: len(head)] + full[len(head) + done :]
    assert sampler.position == n


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 30),
    world=st.integers(1, 4),
    taken=st.integers(0, 8),
    count=st.integers(0, 10),
    drop_last=st.booleans(),
)
def test_advance_on_every_rank_moves_the_same_global_progress(
    n: int, world: int, taken: int, count: int, drop_last: bool
) -> None:
    def ranks() -> list[ResumableDistributedSampler]:
        return [
            ResumableDistributedSampler(range(n), world, r, seed=1, drop_last=drop_last)
            for r in range(world)
        ]

    full = [list(s) for s in ranks()]
    samplers = ranks()
    taken = min(taken, len(full[0]))
    for sampler in samplers:
        iterator = iter(sampler)
        for _ in range(taken):
            next(iterator)
        sampler.advance(count)
    states = [s.state_dict() for s in samplers]
    assert all(state == states[0] for state in states)
    skipped = min(count, len(full[0]) - taken)
    assert [list(s) for s in samplers] == [part[taken + skipped :] for part in full]


def test_advance_after_a_pass_ran_out_begins_the_next_pass() -> None:
    sampler = ResumableSequentialSampler(range(5))
    assert list(sampler) == [0, 1, 2, 3, 4]
    assert sampler.advance(2) == 2
    assert list(sampler) == [2, 3, 4]
    with pytest.raises(ValueError, match=r"num_samples must be an int >= 0"):
        sampler.advance(-1)
    with pytest.raises(TypeError, match=r"num_samples must be an int, got True"):
        sampler.advance(True)


def sharded_loader(folder: Path, rank: int, workers: int = 0) -> StatefulDataLoader[Any]:
    dataset = ShardedDataset(
        str(folder / "*.jsonl"), world_size=2, rank=rank, seed=4, window=2, block_rows=3
    )
    return StatefulDataLoader(
        dataset, batch_size=2, sampler=dataset.sampler, collate_fn=ids_of, num_workers=workers
    )


def ids_of(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


def passes(loader: Any, count: int) -> Epochs:
    """`count` passes without set_epoch: a ShardedDataset's next pass is its next epoch."""
    return [list(loader) for _ in range(count)]


@pytest.mark.parametrize(("batch", "count", "workers"), [(1, 2, 0), (3, 6, 0), (2, 7, 2)])
def test_a_sharded_dataset_skips_through_its_sampler(
    tmp_path: Path, batch: int, count: int, workers: int
) -> None:
    write_shards(tmp_path, "jsonl", [7, 5, 9])  # 21 rows: 11 and 10 a rank, 6 batches
    for rank in range(2):
        reference = passes(sharded_loader(tmp_path, rank), 2)
        loader = sharded_loader(tmp_path, rank)
        iterator = iter(loader)
        for _ in range(batch):
            next(iterator)
        state = json.loads(json.dumps(loader.state_dict()))
        del iterator
        with sharded_loader(tmp_path, rank, workers) as resumed:
            resumed.load_state_dict(state)
            resumed.skip(count)
            assert passes(resumed, 2) == rest(reference, 0, batch, count)


class Numbers:
    """A shard: the ints ``100 * index + j`` for ``j < size``, with a state and ``skip``."""

    def __init__(self, index: int, size: int) -> None:
        self.items = [100 * index + j for j in range(size)]
        self.next = 0

    def __iter__(self) -> Numbers:
        return self

    def __next__(self) -> int:
        if self.next >= len(self.items):
            raise StopIteration
        self.next += 1
        return self.items[self.next - 1]

    def state_dict(self) -> dict[str, int]:
        return {"next": self.next}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.next = state["next"]

    def skip(self, num_items: int) -> int:
        skipped = min(num_items, len(self.items) - self.next)
        self.next += skipped
        return skipped


def numbers(sizes: list[int], index: int, count: int) -> Numbers:
    return Numbers(index, sizes[index])


def shards_loader(
    workers: int = 0, drop_last: bool = False, every: int = 1
) -> StatefulDataLoader[Any]:
    dataset = ShardedIterableDataset(partial(numbers, [9, 3, 6]), num_shards=3)
    return StatefulDataLoader(
        dataset,
        batch_size=2,
        num_workers=workers,
        drop_last=drop_last,
        snapshot_every_n_steps=every,
    )


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(0, 9),
    count=st.integers(0, 12),
    drop_last=st.booleans(),
    every=st.sampled_from([1, 3]),
)
def test_a_sharded_iterable_skips_through_its_shards(
    batch: int, count: int, drop_last: bool, every: int
) -> None:
    reference = run(shards_loader(drop_last=drop_last), 0, 2)
    batch = min(batch, len(reference[0]))
    state = stop_at(shards_loader(drop_last=drop_last, every=every), 0, batch)
    resumed = shards_loader(drop_last=drop_last, every=every)
    resumed.load_state_dict(state)
    resumed.skip(count)
    assert run(resumed, 0, 2) == rest(reference, 0, batch, count)


def test_a_sharded_iterable_skip_with_two_workers() -> None:
    reference = run(shards_loader(), 0, 2)
    state = stop_at(shards_loader(workers=2), 0, 3)
    with shards_loader(workers=2) as resumed:
        resumed.load_state_dict(state)
        resumed.skip(7)  # 9 batches an epoch: 6 left, then 1 of the next epoch
        assert run(resumed, 0, 2) == rest(reference, 0, 3, 7)
    loader = shards_loader(workers=2)
    loader.skip(2)
    with loader:
        assert run(loader, 0, 1) == cut(reference, 0, 0, 2)[:1]
