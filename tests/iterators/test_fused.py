"""Batches read through fused streams, lazy positions, and bounded shuffle restores."""

from __future__ import annotations

from itertools import islice
from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    BufferedShuffleIterator,
    FilterIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    MapIterator,
    NativeCheckpointableIterator,
)
from checkpointable.testing import assert_resumable

from .util import CountingSource


def _plus_one(n: int) -> int:
    return n + 1


def _odd(n: int) -> bool:
    return n % 2 == 1


def _chain(items: Any, batch_size: int) -> FixedBatchIterator:
    it: Any = NativeCheckpointableIterator(items)
    it = MapIterator(it, _plus_one)
    it = FilterIterator(it, _odd)
    it = MapIterator(it, _plus_one)
    return FixedBatchIterator(it, batch_size)


def _expected(items: list[int], batch_size: int) -> list[list[int]]:
    kept = [n + 2 for n in items if (n + 1) % 2 == 1]
    return [kept[i : i + batch_size] for i in range(0, len(kept), batch_size)]


class _Sized:  # a sequence that is not a built-in: read through __getitem__
    def __init__(self, n: int) -> None:
        self._n = n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self._n:
            raise IndexError(index)
        return index


def _generated(n: int) -> Any:  # an iterable that is neither a sequence nor seekable
    class Restartable:
        def __iter__(self) -> Any:
            return iter(range(n))

    return Restartable()


@pytest.mark.parametrize("kind", ["list", "sequence", "iterable"])
@given(n=st.integers(0, 60), batch_size=st.integers(1, 9))
def test_fused_batches_are_the_same_and_resumable(kind: str, n: int, batch_size: int) -> None:
    items: Any = {"list": list(range(n)), "sequence": _Sized(n), "iterable": _generated(n)}[kind]
    batches = assert_resumable(lambda: _chain(items, batch_size))
    assert batches == _expected(list(range(n)), batch_size)


def test_restoring_an_inner_iterator_is_seen_by_the_batches_over_it() -> None:
    source = NativeCheckpointableIterator(list(range(20)))
    batches = FixedBatchIterator(MapIterator(source, _plus_one), 4)
    first = next(batches)
    next(batches)
    source.setstate(None)
    assert next(batches) == first
    assert source.getstate() == {"type": "NativeCheckpointableIterator", "num_items_yielded": 4}


def test_a_source_subclass_that_counts_its_items_sees_every_item() -> None:
    counting = CountingSource(list(range(50)))
    batches = FixedBatchIterator(MapIterator(counting, _plus_one), 8)
    assert len(list(batches)) == 7
    assert counting.reads == 50


@pytest.mark.parametrize("batches_done", [1, 10, 300, 3000])
def test_shuffle_chain_restore_reads_at_most_the_buffer(batches_done: int) -> None:
    """Map -> BufferedShuffle -> FixedBatch: a restore re-reads (transforms) only the buffered
    items, wherever the state was taken, and resumes the same batches."""
    buffer_size, batch_size = 100, 10
    calls = [0]

    def counted(n: int) -> int:
        calls[0] += 1
        return n

    def chain() -> FixedBatchIterator:
        source = NativeCheckpointableIterator(range(10**6))
        shuffled = BufferedShuffleIterator(MapIterator(source, counted), buffer_size, seed=5)
        return FixedBatchIterator(shuffled, batch_size)

    run = chain()
    for _ in islice(run, batches_done):
        pass
    state = run.state_dict()
    expected = list(islice(run, 5))
    resumed = chain()
    calls[0] = 0
    resumed.load_state_dict(state)
    assert calls[0] <= buffer_size
    assert list(islice(resumed, 5)) == expected


@given(n=st.integers(0, 50), block_size=st.integers(1, 7), batch_size=st.integers(1, 9))
def test_batches_over_a_blockwise_shuffle_cross_blocks_and_resume(
    n: int, block_size: int, batch_size: int
) -> None:
    def chain() -> FixedBatchIterator:
        blocks = BlockwiseShuffleIterator(NativeCheckpointableIterator(range(n)), block_size, 3)
        return FixedBatchIterator(MapIterator(blocks, _plus_one), batch_size)

    served = list(BlockwiseShuffleIterator(NativeCheckpointableIterator(range(n)), block_size, 3))
    batches = assert_resumable(chain)
    assert [item for batch in batches for item in batch] == [item + 1 for item in served]
    assert sorted(served) == list(range(n))


@pytest.mark.parametrize("kind", ["list", "sequence", "iterable"])
def test_a_shuffle_restore_over_any_source_resumes_the_same_items(kind: str) -> None:
    items: Any = {"list": list(range(400)), "sequence": _Sized(400), "iterable": _generated(400)}
    source = items[kind]

    def chain() -> BufferedShuffleIterator:
        return BufferedShuffleIterator(
            MapIterator(NativeCheckpointableIterator(source), _plus_one), 16, 2
        )

    assert sorted(assert_resumable(chain)) == list(range(1, 401))


def test_a_counting_source_under_a_shuffle_counts_what_a_restore_moves_over() -> None:
    counting = CountingSource(list(range(500)))
    run = BufferedShuffleIterator(MapIterator(counting, _plus_one), 8, seed=1)
    for _ in range(300):
        next(run)
    state = run.getstate()
    again = CountingSource(list(range(500)))
    BufferedShuffleIterator(MapIterator(again, _plus_one), 8, seed=1).setstate(state)
    assert again.reads == state["replay"]  # its __next__ sees every item moved over


def _reference_passes(items: list[int], seed: int, shuffle: bool, k: int, rank: int) -> Any:
    """infinibatch's order: passes shuffled in turn by one Random(seed); rank r of k takes the
    items r, r + k, ... of the concatenated passes."""
    rng = Random(seed)
    position = 0
    while True:
        permutation = items.copy()
        if shuffle:
            rng.shuffle(permutation)
        for item in permutation:
            if position % k == rank:
                yield item
            position += 1


@given(
    n=st.integers(1, 7),
    k=st.integers(1, 9),
    data=st.data(),
    shuffle=st.booleans(),
    batch_size=st.integers(1, 5),
)
def test_batches_over_a_permutation_source_follow_the_passes_and_resume(
    n: int, k: int, data: st.DataObject, shuffle: bool, batch_size: int
) -> None:
    rank = data.draw(st.integers(0, k - 1))

    def build() -> FixedBatchIterator:
        source = InfinitePermutationSourceIterator(
            list(range(n)), seed=4, shuffle=shuffle, num_instances=k, instance_rank=rank
        )
        return FixedBatchIterator(MapIterator(source, _plus_one), batch_size)

    expected = list(islice(_reference_passes(list(range(n)), 4, shuffle, k, rank), 6 * batch_size))
    run = build()
    states, batches = [], []
    for _ in range(6):
        states.append(run.state_dict())
        batches.append(next(run))
    assert [item - 1 for batch in batches for item in batch] == expected
    for index, state in enumerate(states):
        resumed = build()
        resumed.load_state_dict(state)
        assert list(islice(resumed, 6 - index)) == batches[index:]


def test_a_replay_beyond_the_source_is_refused_before_the_draws() -> None:
    """A damaged state's replay count (10**18) is checked against the source first: refused
    at once, without drawing (or holding) one slot per item."""
    run = BufferedShuffleIterator(NativeCheckpointableIterator(list(range(30))), 8, seed=1)
    for _ in range(5):
        next(run)
    state = run.getstate()
    state["replay"] = 10**18
    fresh = BufferedShuffleIterator(NativeCheckpointableIterator(list(range(30))), 8, seed=1)
    with pytest.raises(IncompatibleStateError, match=r"replays 1000000000000000000 items"):
        fresh.setstate(state)
