"""Per-item transforms: resumability under varying inputs, bounded replay, bad input."""

from __future__ import annotations

from random import Random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable.iterators import (
    FilterIterator,
    FixedBatchIterator,
    MapIterator,
    NativeCheckpointableIterator,
    RecurrentIterator,
    SamplingRandomMapIterator,
    SelectManyIterator,
    WindowedIterator,
)
from checkpointable.testing import assert_resumable

from .util import CountingSource


def source(n: int) -> NativeCheckpointableIterator:
    return NativeCheckpointableIterator(list(range(n)))


@pytest.mark.resumable("MapIterator", "FilterIterator")
@given(n=st.integers(0, 25), modulus=st.integers(1, 4))
def test_map_and_filter_are_resumable(n: int, modulus: int) -> None:
    assert assert_resumable(lambda: MapIterator(source(n), lambda x: x * 3)) == [
        3 * x for x in range(n)
    ]
    kept = assert_resumable(lambda: FilterIterator(source(n), lambda x: x % modulus == 0))
    assert kept == [x for x in range(n) if x % modulus == 0]


@pytest.mark.resumable("FixedBatchIterator")
@given(n=st.integers(0, 25), batch_size=st.integers(1, 7))
def test_fixed_batch_is_resumable(n: int, batch_size: int) -> None:
    batches = assert_resumable(lambda: FixedBatchIterator(source(n), batch_size))
    assert [x for b in batches for x in b] == list(range(n))
    assert all(len(b) == batch_size for b in batches[:-1])


@pytest.mark.resumable("SelectManyIterator")
@given(sizes=st.lists(st.integers(0, 4), max_size=8), use_selector=st.booleans())
def test_select_many_is_resumable(sizes: list[int], use_selector: bool) -> None:
    collections = [[f"{i}.{j}" for j in range(size)] for i, size in enumerate(sizes)]
    if use_selector:
        items = assert_resumable(
            lambda: SelectManyIterator(source(len(sizes)), lambda i: iter(collections[i]))
        )
    else:
        items = assert_resumable(
            lambda: SelectManyIterator(NativeCheckpointableIterator(collections))
        )
    assert items == [x for c in collections for x in c]


def test_select_many_restore_reads_one_collection() -> None:
    calls: list[int] = []

    def selector(i: int) -> range:
        calls.append(i)
        return range(100)

    it = SelectManyIterator(source(10), selector)
    for _ in range(250):
        next(it)
    calls.clear()
    resumed = SelectManyIterator(source(10), selector)
    resumed.load_state_dict(it.state_dict())
    assert calls == [2]
    assert next(resumed) == next(it) == 50


def test_select_many_refuses_a_state_beyond_its_collection() -> None:
    it = SelectManyIterator(NativeCheckpointableIterator([[1, 2, 3]]))
    next(it), next(it)
    state = it.state_dict()
    with pytest.raises(IncompatibleStateError, match="item 2 of a collection that has only 1"):
        SelectManyIterator(NativeCheckpointableIterator([[1]])).load_state_dict(state)


@pytest.mark.resumable("WindowedIterator")
@given(n=st.integers(0, 20), width=st.integers(1, 6))
def test_windowed_is_resumable(n: int, width: int) -> None:
    windows = assert_resumable(lambda: WindowedIterator(source(n), width))
    assert windows == [tuple(range(i, i + width)) for i in range(n - width + 1)]


def test_windowed_restore_reads_at_most_two_windows() -> None:
    counting = CountingSource(list(range(100)))
    it = WindowedIterator(counting, 5)
    for _ in range(37):
        next(it)
    state = it.state_dict()
    counting.reads = 0
    resumed = WindowedIterator(counting, 5)
    resumed.load_state_dict(state)
    expected = next(it)
    counting.reads = 0
    assert next(resumed) == expected
    assert counting.reads <= 2 * 5


@pytest.mark.resumable("RecurrentIterator")
@given(n=st.integers(0, 15))
def test_recurrent_is_resumable(n: int) -> None:
    def step(state: dict[str, Any], item: int) -> tuple[dict[str, Any], int]:
        state["total"] += item  # in-place modification is allowed
        state["history"].append(item)
        return state, state["total"]

    totals = assert_resumable(
        lambda: RecurrentIterator(source(n), step, {"total": 0, "history": []})
    )
    assert totals == [sum(range(i + 1)) for i in range(n)]


def test_recurrent_refuses_a_state_that_is_not_plain_data() -> None:
    with pytest.raises(TypeError, match=r"initial_state\[0\] is a tuple"):
        RecurrentIterator(source(3), lambda s, x: (s, x), [(1, 2)])
    it = RecurrentIterator(source(3), lambda s, x: ((s, x), x), 0)
    next(it)
    with pytest.raises(TypeError, match="the recurrent state is a tuple"):
        it.state_dict()


@pytest.mark.resumable("SamplingRandomMapIterator")
@given(n=st.integers(0, 15), seed=st.integers(0, 1000))
def test_sampling_random_map_is_resumable_and_draws_in_sequence(n: int, seed: int) -> None:
    items = assert_resumable(
        lambda: SamplingRandomMapIterator(source(n), lambda rng, x: (x, rng.random()), seed)
    )
    rng = Random(seed)
    assert items == [(x, rng.random()) for x in range(n)]


def test_transforms_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive int, got batch_size=0"):
        FixedBatchIterator(source(3), 0)
    with pytest.raises(TypeError, match=r"batch_size must be an int, got 2\.0"):
        FixedBatchIterator(source(3), 2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width must be a positive int"):
        WindowedIterator(source(3), -1)
    with pytest.raises(TypeError, match="transform must be callable, got int"):
        MapIterator(source(3), 3)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="source_iterator must be a CheckpointableIterator, got list"
    ) as info:
        MapIterator([1, 2], str)  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)


def test_a_state_of_another_pipeline_names_both_classes() -> None:
    batches = FixedBatchIterator(source(10), 2)
    next(batches)
    with pytest.raises(
        IncompatibleStateError, match="saved by 'FixedBatchIterator', not by 'MapIterator'"
    ):
        MapIterator(source(10), str).load_state_dict(batches.state_dict())
    nested = MapIterator(FixedBatchIterator(source(10), 2), str)
    with pytest.raises(
        IncompatibleStateError,
        match="saved by 'NativeCheckpointableIterator', not by 'FixedBatchIterator'",
    ):
        nested.load_state_dict({"type": "MapIterator", "source": source(3).getstate()})


def test_a_state_of_another_version_or_shape_is_refused() -> None:
    it = MapIterator(source(4), str)
    with pytest.raises(IncompatibleStateError, match="format version 99"):
        it.load_state_dict({**it.state_dict(), "version": 99})
    with pytest.raises(IncompatibleStateError, match=r"lacks the key\(s\) \['source'\]"):
        it.load_state_dict({"type": "MapIterator"})
    with pytest.raises(IncompatibleStateError, match=r"unexpected key\(s\) \['extra'\]"):
        it.load_state_dict({**it.state_dict(), "extra": 1})
    with pytest.raises(TypeError, match="a state must be a dict, got list"):
        it.load_state_dict([1])  # type: ignore[arg-type]


def test_setstate_none_resets_the_whole_pipeline() -> None:
    it = FixedBatchIterator(MapIterator(source(6), lambda x: -x), 4)
    assert next(it) == [0, -1, -2, -3]
    it.setstate(None)
    assert list(it) == [[0, -1, -2, -3], [-4, -5]]


def test_getstate_is_state_dict_without_version_and_both_load() -> None:
    it = FixedBatchIterator(source(9), 2)
    next(it)
    assert it.state_dict() == {"version": 3, **it.getstate()}
    for state in (it.getstate(), it.state_dict()):
        resumed = FixedBatchIterator(source(9), 2)
        resumed.load_state_dict(state)
        assert next(resumed) == [2, 3]
        resumed.setstate(it.getstate())
        assert next(resumed) == [2, 3]


def test_a_pickled_pipeline_continues_where_it_was() -> None:
    import pickle

    it = WindowedIterator(SelectManyIterator(NativeCheckpointableIterator([[1, 2], [3, 4, 5]])), 2)
    next(it)
    copy = pickle.loads(pickle.dumps(it))
    assert list(copy) == list(it) == [(2, 3), (3, 4), (4, 5)]


def test_context_manager_closes_the_pipeline() -> None:
    closed: list[str] = []

    class Closing(CountingSource):
        def close(self) -> None:
            closed.append("closed")

    with MapIterator(Closing([1]), str) as it:
        assert next(it) == "1"
    assert closed == ["closed"]


def test_repr_shows_the_configuration() -> None:
    assert repr(FixedBatchIterator(source(3), 2)) == (
        "FixedBatchIterator(NativeCheckpointableIterator(iterable='[0, 1, 2]'), batch_size=2)"
    )
