"""Shuffles and bucketing: resumability, bounded replay, None items, configuration checks."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    BucketedReadaheadBatchIterator,
    BufferedShuffleIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
)
from checkpointable.testing import assert_resumable

from .util import CountingSource


def source(n: int) -> NativeCheckpointableIterator:
    return NativeCheckpointableIterator(list(range(n)))


@pytest.mark.resumable("BufferedShuffleIterator")
@given(n=st.integers(0, 40), buffer_size=st.integers(1, 12), seed=st.integers(0, 100))
def test_buffered_shuffle_is_resumable(n: int, buffer_size: int, seed: int) -> None:
    items = assert_resumable(lambda: BufferedShuffleIterator(source(n), buffer_size, seed))
    assert sorted(items) == list(range(n))


def test_buffered_shuffle_keeps_none_items() -> None:
    items = [None, 1, None, 2, None]
    shuffled = assert_resumable(
        lambda: BufferedShuffleIterator(NativeCheckpointableIterator(items), 3, seed=1)
    )
    assert len(shuffled) == 5 and shuffled.count(None) == 3


def test_buffered_shuffle_on_an_endless_source_resumes_with_a_bounded_replay() -> None:
    size = 200
    counting = CountingSource(list(range(10**6)))
    it = BufferedShuffleIterator(counting, size, seed=3)
    for _ in range(20_000):
        next(it)
    state = it.state_dict()
    assert len(json.dumps(state)) < 10_000, "the buffer is not in the state"
    counting.reads = 0
    resumed = BufferedShuffleIterator(counting, size, seed=3)
    resumed.load_state_dict(state)
    replayed = counting.reads
    assert replayed <= 4 * size * (math.log(size) + 2)
    tail = [next(it) for _ in range(1000)]
    counting2 = CountingSource(list(range(10**6)))
    again = BufferedShuffleIterator(counting2, size, seed=3)
    again.load_state_dict(state)
    assert [next(again) for _ in range(1000)] == tail


def test_buffered_shuffle_state_of_another_buffer_size_is_refused() -> None:
    state = BufferedShuffleIterator(source(5), 3).state_dict()
    with pytest.raises(
        IncompatibleStateError, match="buffer_size=3, but this object has buffer_size=4"
    ):
        BufferedShuffleIterator(source(5), 4).load_state_dict(state)


def test_buffered_shuffle_state_over_a_shorter_source_is_refused() -> None:
    it = BufferedShuffleIterator(source(50), 4, seed=0)
    for _ in range(30):
        next(it)
    state = it.state_dict()
    short = state["source"]["num_items_yielded"] + state["replay"] - 1
    with pytest.raises(IncompatibleStateError, match="the source ended after"):
        BufferedShuffleIterator(source(short), 4, seed=0).load_state_dict(state)


@pytest.mark.resumable("BlockwiseShuffleIterator")
@given(n=st.integers(0, 30), block_size=st.integers(1, 8), seed=st.integers(0, 100))
def test_blockwise_shuffle_is_resumable(n: int, block_size: int, seed: int) -> None:
    items = assert_resumable(lambda: BlockwiseShuffleIterator(source(n), block_size, seed))
    for start in range(0, n, block_size):
        assert sorted(items[start : start + block_size]) == list(
            range(start, min(n, start + block_size))
        )


def test_blockwise_shuffle_restore_reads_one_block() -> None:
    counting = CountingSource(list(range(1000)))
    it = BlockwiseShuffleIterator(counting, 50, seed=2)
    for _ in range(333):
        next(it)
    counting.reads = 0
    resumed = BlockwiseShuffleIterator(counting, 50, seed=2)
    resumed.load_state_dict(it.state_dict())
    assert counting.reads <= 50


@pytest.mark.resumable("BucketedReadaheadBatchIterator")
@given(
    lengths=st.lists(st.integers(1, 6), max_size=30),
    read_ahead=st.integers(1, 10),
    batch_size=st.integers(1, 4),
    shuffle=st.booleans(),
    use_boundary=st.booleans(),
)
def test_bucketed_readahead_is_resumable(
    lengths: list[int], read_ahead: int, batch_size: int, shuffle: bool, use_boundary: bool
) -> None:
    words = ["x" * length + str(i) for i, length in enumerate(lengths)]

    def make() -> BucketedReadaheadBatchIterator:
        return BucketedReadaheadBatchIterator(
            NativeCheckpointableIterator(words),
            read_ahead=read_ahead,
            key=lambda w: len(w.rstrip("0123456789")),
            batch_size=lambda w: batch_size + len(w) % 2,
            boundary_key=(lambda w: len(w.rstrip("0123456789"))) if use_boundary else None,
            shuffle=shuffle,
            seed=7,
        )

    batches = assert_resumable(make)
    assert sorted(w for b in batches for w in b) == sorted(words)


def test_bucketed_readahead_on_an_endless_source() -> None:
    def make() -> BucketedReadaheadBatchIterator:
        words = InfinitePermutationSourceIterator(
            [f"{'x' * (i % 7)}{i}" for i in range(50)], seed=1
        )
        return BucketedReadaheadBatchIterator(words, read_ahead=20, key=len, batch_size=3, seed=2)

    assert_resumable(make, max_items=60)


def test_bucketed_readahead_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="read_ahead must be a positive int"):
        BucketedReadaheadBatchIterator(source(3), 0, None, 2)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        BucketedReadaheadBatchIterator(source(3), 3, None, 0)
    it = BucketedReadaheadBatchIterator(source(3), 3, None, 2, boundary_key=lambda x: None)
    with pytest.raises(ValueError, match="boundary_key returned None"):
        next(it)


@pytest.mark.parametrize(
    "make",
    [
        lambda: BufferedShuffleIterator(source(3), 0),
        lambda: BlockwiseShuffleIterator(source(3), -2),
    ],
)
def test_shuffles_reject_a_non_positive_size(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match="must be a positive int"):
        make()
