"""Source iterators: resumability, O(1) restore, sharding and bad input."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import ArgumentTypeError, IncompatibleStateError
from checkpointable.iterators import (
    ChunkedSourceIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
    RandomAccessSourceIterator,
    RandomIterator,
    create_source_iterator,
)
from checkpointable.testing import assert_resumable


class CountingSequence:
    """A sequence that counts item reads, to prove a restore reads nothing."""

    def __init__(self, n: int) -> None:
        self.n, self.reads = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.n:
            raise IndexError(index)
        self.reads += 1
        return index * 10


class Restartable:
    """An iterable that is not a sequence: restored by replay."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.n))


@pytest.mark.resumable("NativeCheckpointableIterator")
@pytest.mark.parametrize(
    "iterable",
    [
        list(range(7)),
        tuple("abcde"),
        range(3, 9),
        "hello",
        [None, 0, None],
        CountingSequence(6),
        Restartable(5),
        {"a": 1, "b": 2},
        torch.arange(4),
        [],
    ],
    ids=lambda x: type(x).__name__,
)
def test_native_is_resumable(iterable: Iterable[Any]) -> None:
    items = assert_resumable(lambda: NativeCheckpointableIterator(iterable))
    assert len(items) == len(list(iter(iterable)))


@pytest.mark.parametrize("make", [lambda n: list(range(n)), CountingSequence])
def test_native_restores_a_sequence_without_reading(make: Callable[[int], Sequence[int]]) -> None:
    data = make(1000)
    it = NativeCheckpointableIterator(data)
    for _ in range(700):
        next(it)
    state = it.state_dict()
    restored_data = make(1000)
    restored = NativeCheckpointableIterator(restored_data)
    restored.load_state_dict(state)
    if isinstance(restored_data, CountingSequence):
        assert restored_data.reads == 0
    assert next(restored) == next(it)


def test_native_rejects_an_iterator_and_a_non_iterable() -> None:
    with pytest.raises(ValueError, match="cannot be rewound") as info:
        NativeCheckpointableIterator(iter([1, 2]))
    assert isinstance(info.value, TypeError)
    with pytest.raises(TypeError, match="must be an iterable, got int"):
        NativeCheckpointableIterator(3)  # type: ignore[arg-type]


def test_native_state_beyond_the_data_is_refused() -> None:
    it = NativeCheckpointableIterator(list(range(10)))
    for _ in range(8):
        next(it)
    with pytest.raises(IncompatibleStateError, match="item 8, but the iterable has only 5"):
        NativeCheckpointableIterator(list(range(5))).load_state_dict(it.state_dict())
    with pytest.raises(IncompatibleStateError, match="only 5 items"):
        NativeCheckpointableIterator(Restartable(5)).load_state_dict(it.state_dict())


@pytest.mark.resumable("ChunkedSourceIterator")
@given(n=st.integers(1, 30), num_instances=st.integers(1, 5), data=st.data())
def test_chunked_parts_are_resumable_and_cover_the_list_in_order(
    n: int, num_instances: int, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(0, num_instances - 1))
    items = list(range(n))
    assert_resumable(lambda: ChunkedSourceIterator(items, num_instances, rank))
    parts = [list(ChunkedSourceIterator(items, num_instances, r)) for r in range(num_instances)]
    assert [x for part in parts for x in part] == items
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_chunked_works_on_a_sequence_without_slicing() -> None:
    assert list(ChunkedSourceIterator(cast("Sequence[int]", CountingSequence(5)), 2, 1)) == [30, 40]


def test_chunked_state_from_another_rank_is_refused() -> None:
    state = ChunkedSourceIterator(list(range(9)), 3, 0).state_dict()
    with pytest.raises(
        IncompatibleStateError, match="instance_rank=0, but this object has instance_rank=1"
    ):
        ChunkedSourceIterator(list(range(9)), 3, 1).load_state_dict(state)


@pytest.mark.resumable("InfinitePermutationSourceIterator")
@given(
    n=st.integers(1, 12),
    seed=st.integers(0, 2**32),
    shuffle=st.booleans(),
    num_instances=st.integers(1, 4),
    data=st.data(),
)
def test_infinite_permutation_is_resumable(
    n: int, seed: int, shuffle: bool, num_instances: int, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(0, num_instances - 1))
    items = list(range(n))
    assert_resumable(
        lambda: InfinitePermutationSourceIterator(items, seed, shuffle, num_instances, rank),
        max_items=3 * n + 5,
    )


@given(n=st.integers(1, 10), num_instances=st.integers(1, 4), passes=st.integers(1, 3))
def test_infinite_permutation_instances_share_each_pass_exactly(
    n: int, num_instances: int, passes: int
) -> None:
    """Taken together, the instances yield every item once per pass."""
    total = n * passes * num_instances
    streams = [
        InfinitePermutationSourceIterator(
            list(range(n)), seed=5, num_instances=num_instances, instance_rank=r
        )
        for r in range(num_instances)
    ]
    merged = [next(streams[i % num_instances]) for i in range(total)]
    for p in range(passes * num_instances):
        assert sorted(merged[p * n : (p + 1) * n]) == list(range(n))


def test_infinite_permutation_with_seed_none_resumes_its_own_order() -> None:
    it = InfinitePermutationSourceIterator(list(range(20)), seed=None)
    head = [next(it) for _ in range(25)]
    state = it.state_dict()
    rest = [next(it) for _ in range(30)]
    resumed = InfinitePermutationSourceIterator(list(range(20)), seed=None)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(30)] == rest
    assert sorted(head[:20]) == list(range(20))


def test_infinite_permutation_refuses_other_data_and_bad_arguments() -> None:
    state = InfinitePermutationSourceIterator([1, 2, 3], seed=1).state_dict()
    with pytest.raises(
        IncompatibleStateError, match="num_items=3, but this object has num_items=4"
    ):
        InfinitePermutationSourceIterator([1, 2, 3, 4], seed=1).load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="seed=1, but this object has seed=2"):
        InfinitePermutationSourceIterator([1, 2, 3], seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="source_items must not be empty"):
        InfinitePermutationSourceIterator([])
    with pytest.raises(ValueError, match="instance_rank must be in range"):
        InfinitePermutationSourceIterator([1], num_instances=2, instance_rank=2)
    with pytest.raises(TypeError, match="seed must be an int or None"):
        InfinitePermutationSourceIterator([1], seed="1")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="num_instances must be a positive int, got num_instances=0"
    ):
        InfinitePermutationSourceIterator([1], num_instances=0)


@pytest.mark.resumable("RandomAccessSourceIterator")
@given(
    n=st.integers(1, 15),
    seed=st.integers(0, 2**40),
    shuffle=st.booleans(),
    num_instances=st.integers(1, 3),
    data=st.data(),
)
def test_random_access_is_resumable(
    n: int, seed: int, shuffle: bool, num_instances: int, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(0, num_instances - 1))
    assert_resumable(
        lambda: RandomAccessSourceIterator(range(n), seed, shuffle, num_instances, rank),
        max_items=3 * n + 4,
    )


@given(n=st.integers(1, 300), seed=st.integers(0, 2**64), passes=st.integers(1, 3))
def test_random_access_passes_are_permutations(n: int, seed: int, passes: int) -> None:
    it = RandomAccessSourceIterator(range(n), seed=seed)
    seen = [[next(it) for _ in range(n)] for _ in range(passes)]
    for one_pass in seen:
        assert sorted(one_pass) == list(range(n))
    if n >= 20 and passes > 1:
        assert seen[0] != seen[1], "each pass is a different permutation"


def test_random_access_restores_far_away_without_reading() -> None:
    data = CountingSequence(10_000)
    it = RandomAccessSourceIterator(cast("Sequence[int]", data), seed=3)
    it.load_state_dict({**it.state_dict(), "num_items_yielded": 2_345_678})
    assert data.reads == 0
    reference = RandomAccessSourceIterator(range(10_000), seed=3)
    reference.load_state_dict({**reference.state_dict(), "num_items_yielded": 2_345_678})
    assert next(it) == 10 * next(reference)


def test_random_access_rejects_bad_data() -> None:
    with pytest.raises(TypeError, match="data must be a sequence"):
        RandomAccessSourceIterator(iter([1]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must not be empty"):
        RandomAccessSourceIterator([])
    with pytest.raises(TypeError, match="seed must be an int"):
        RandomAccessSourceIterator([1], seed=None)  # type: ignore[arg-type]


@pytest.mark.resumable("RandomIterator")
def test_random_iterator_is_resumable() -> None:
    assert_resumable(lambda: RandomIterator(seed=4), max_items=50)


def test_create_source_iterator_picks_the_source() -> None:
    assert isinstance(create_source_iterator([1, 2], seed=0), InfinitePermutationSourceIterator)
    evaluation = create_source_iterator([1, 2, 3], train=False, shuffle=False)
    assert isinstance(evaluation, ChunkedSourceIterator)
    assert list(evaluation) == [1, 2, 3]
    with pytest.raises(ValueError, match="shuffling is not supported when train=False"):
        create_source_iterator([1], train=False)


def test_argument_type_error_is_both_type_and_value_error() -> None:
    with pytest.raises(ArgumentTypeError) as info:
        ChunkedSourceIterator([1, 2], num_instances="2")  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_source_state_is_small_and_plain() -> None:
    it = RandomAccessSourceIterator(range(10**9), seed=1)
    next(it)
    state: dict[str, Any] = it.state_dict()
    assert state == {
        "version": 3,
        "type": "RandomAccessSourceIterator",
        "num_items": 10**9,
        "seed": 1,
        "shuffle": True,
        "num_instances": 1,
        "instance_rank": 0,
        "num_items_yielded": 1,
    }


@pytest.mark.parametrize("n", [5, 5000])
def test_keyed_permutation_is_uniform_enough(n: int) -> None:
    """Over many keys, the first positions take values evenly spread over 8 bins."""
    from checkpointable._iterators._bijection import KeyedPermutation

    counts: Counter[tuple[int, int]] = Counter()
    keys = 3000
    for key in range(keys):
        permutation = KeyedPermutation(n, key)
        counts.update((position, permutation(position) * 8 // n) for position in range(4))
    expected = keys * 4 / len(counts)
    assert all(0.75 * expected < count < 1.25 * expected for count in counts.values())
