"""ParallelMapIterator: MapIterator's output, resumable under threads, fork and spawn.

Lifecycle tests shared with PrefetchIterator (close, gc, exit, kill, daemonic processes) are
in test_concurrency.py.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import ArgumentTypeError, IncompatibleStateError
from checkpointable.iterators import (
    MapIterator,
    NativeCheckpointableIterator,
    ParallelMapIterator,
    PrefetchIterator,
)
from checkpointable.testing import assert_resumable

from . import workload


def mapped(
    n: int = 11, processes: int = 2, per_process: int = 2, **options: Any
) -> ParallelMapIterator:
    source = NativeCheckpointableIterator(list(range(n)))
    return ParallelMapIterator(source, workload.square, processes, per_process, **options)


def squares(n: int = 11) -> list[int]:
    return [i * i for i in range(n)]


@pytest.mark.resumable("ParallelMapIterator")
@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 20), processes=st.integers(1, 3), per_process=st.integers(1, 3))
def test_resumes_at_every_position_with_threads(n: int, processes: int, per_process: int) -> None:
    factory = functools.partial(mapped, n, processes, per_process, use_threads=True)
    assert assert_resumable(factory) == squares(n)


@pytest.mark.resumable("ParallelMapIterator")
@pytest.mark.timeout(120)
def test_resumes_at_every_position_with_fork_processes() -> None:
    factory = functools.partial(mapped, 11, 2, 2, multiprocessing_context="fork")
    assert assert_resumable(factory) == squares(11)


@pytest.mark.resumable("ParallelMapIterator")
@pytest.mark.timeout(120)
def test_resumes_with_a_spawn_process() -> None:
    # A spawn worker imports torch when checkpointable does (~2 s on a busy machine): one
    # worker, few positions. Step 5 is one item into the third chunk of 2: its restore re-reads
    # that chunk and transforms only its second item.
    factory = functools.partial(mapped, 6, 1, 2, multiprocessing_context="spawn")
    assert assert_resumable(factory, positions=[5]) == squares(6)


@pytest.mark.resumable("ParallelMapIterator")
@pytest.mark.timeout(120)
def test_nested_under_a_prefetch_iterator() -> None:
    def factory() -> PrefetchIterator:
        return PrefetchIterator(mapped(10, 2, 2, multiprocessing_context="fork"), 3)

    assert assert_resumable(factory, positions=[0, 1, 4, 7, 10]) == squares(10)


@pytest.mark.resumable("PrefetchIterator", "ParallelMapIterator")
@pytest.mark.timeout(120)
def test_nested_in_threads_restores_in_a_fresh_process() -> None:
    factory = functools.partial(nested_in_threads, 9)
    assert assert_resumable(factory, fresh_process=True) == squares(9)


def nested_in_threads(n: int) -> PrefetchIterator:
    return PrefetchIterator(mapped(n, 2, 2, use_threads=True), 3, use_threads=True)


@pytest.mark.timeout(120)
def test_both_run_and_restore_under_forkserver() -> None:
    with prefetch_of_squares("forkserver") as it:
        assert list(it) == squares(7)
    with mapped(7, 1, 2, multiprocessing_context="forkserver") as it:
        head = [next(it) for _ in range(3)]
        state = it.getstate()
        assert head + list(it) == squares(7)
        it.setstate(state)  # the pool is reused: no new process
        assert list(it) == squares(7)[3:]


def prefetch_of_squares(method: str) -> PrefetchIterator:
    source = MapIterator(NativeCheckpointableIterator(list(range(7))), workload.square)
    return PrefetchIterator(source, 2, multiprocessing_context=method)


def test_the_state_is_the_chunk_start_and_the_offset() -> None:
    with mapped(9, 2, 2, use_threads=True) as it:
        states = []
        for _ in range(9):
            next(it)
            states.append(it.getstate())
    assert [s["source"]["num_items_yielded"] for s in states] == [0, 0, 0, 4, 4, 4, 4, 8, 9]
    assert [s["offset"] for s in states] == [1, 2, 3, 0, 1, 2, 3, 0, 0]
    assert set(states[0]) == {"type", "source", "offset"}


class Recorder:
    """A transform that records the items it was called on (threads share it)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, n: int) -> int:
        with self.lock:
            self.seen.append(n)
        return n * n


@pytest.mark.parametrize(("processes", "per_process"), [(2, 2), (1, 1), (3, 1), (1, 5)])
def test_restoring_transforms_no_yielded_item_again_and_any_pool_size_resumes(
    processes: int, per_process: int
) -> None:
    with mapped(20, 2, 3, use_threads=True) as it:
        head = [next(it) for _ in range(9)]  # chunks of 6: in the second chunk, at offset 3
        state = it.getstate()
    assert (state["source"]["num_items_yielded"], state["offset"]) == (6, 3)
    recorder = Recorder()
    source = NativeCheckpointableIterator(list(range(20)))
    with ParallelMapIterator(source, recorder, processes, per_process, use_threads=True) as it:
        it.setstate(state)
        assert it.getstate() == state
        tail = list(it)
    assert head + tail == squares(20)
    assert sorted(recorder.seen) == list(range(9, 20))


@pytest.mark.timeout(60)
def test_setstate_on_a_running_iterator_reuses_the_pool_and_drops_results_in_flight() -> None:
    with mapped(30, 2, 2, multiprocessing_context="fork") as it:
        head = [next(it) for _ in range(5)]
        state = it.getstate()
        for _ in range(10):
            next(it)
        pool = it._group
        it.setstate(state)
        assert it.getstate() == state
        assert head + list(it) == squares(30)
        assert it._group is pool


def test_a_transform_exception_comes_after_the_items_before_it_with_the_worker_traceback() -> None:
    source = NativeCheckpointableIterator(list(range(12)))
    with ParallelMapIterator(
        source, workload.fail_at_5, 2, 3, multiprocessing_context="fork"
    ) as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        state = it.getstate()
        with pytest.raises(ValueError, match="item 5 is bad") as caught:
            next(it)
        remote = str(caught.value.__cause__)
        assert "fail_at_5" in remote and "ParallelMapIterator worker (process" in remote
        assert it.getstate() == state
        with pytest.raises(ValueError, match="item 5 is bad"):  # tried again from the position
            next(it)


def test_a_source_exception_comes_at_its_position() -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(12))), workload.fail_at_5)
    with ParallelMapIterator(source, workload.square, 2, 1, use_threads=True) as it:
        assert [next(it) for _ in range(5)] == squares(5)
        with pytest.raises(ValueError, match="item 5 is bad"):
            next(it)


def test_an_exception_that_cannot_be_pickled_arrives_as_runtime_error_with_its_text() -> None:
    source = NativeCheckpointableIterator(list(range(6)))
    it = ParallelMapIterator(
        source, workload.fail_unpicklably, 1, 1, multiprocessing_context="fork"
    )
    with it, pytest.raises(RuntimeError, match="TwoArgumentError: 42: no way back"):
        assert [next(it), next(it)] == [0, 1]
        next(it)


def test_unpicklable_items_raise_a_type_error_at_their_position() -> None:
    items = [1, 2, threading.Lock(), 4]
    source = NativeCheckpointableIterator(items)
    with ParallelMapIterator(source, str, 1, 1, multiprocessing_context="fork") as it:
        assert [next(it), next(it)] == ["1", "2"]
        with pytest.raises(TypeError, match="items of source_iterator must be picklable"):
            next(it)


def test_a_state_from_other_data_raises_a_clear_error() -> None:
    with mapped(10, 2, 2, use_threads=True) as it:
        for _ in range(7):
            next(it)
        state = it.getstate()
    with (
        mapped(5, 2, 2, use_threads=True) as short,
        pytest.raises(IncompatibleStateError, match=r"3 items past .* source ends after 1"),
    ):
        short.setstate(state)  # refused at load, not at the next item
    with (
        mapped(10, 2, 2, use_threads=True) as it,
        pytest.raises(IncompatibleStateError, match="'offset' must be an int >= 0"),
    ):
        it.setstate({**state, "offset": "3"})


def test_next_and_setstate_raise_after_close() -> None:
    it = mapped(5, use_threads=True)
    next(it)
    state = it.getstate()
    it.close()
    it.close()
    with pytest.raises(RuntimeError, match="ParallelMapIterator has been closed"):
        next(it)
    with pytest.raises(RuntimeError, match="ParallelMapIterator has been closed"):
        it.setstate(state)
    assert it.getstate() == state


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"num_processes": 0}, ValueError, r"num_processes must be a positive int, got num_pro"),
        ({"num_items_per_process": -1}, ValueError, r"num_items_per_process=-1"),
        ({"num_processes": "2"}, ArgumentTypeError, r"num_processes must be an int, got '2'"),
        ({"transform": 3}, ArgumentTypeError, r"transform must be callable, got int"),
        ({"use_threads": "no"}, ArgumentTypeError, r"use_threads must be a bool"),
        ({"multiprocessing_context": "fork2"}, ValueError, r"multiprocessing_context='fork2'"),
    ],
)
def test_bad_arguments_are_named(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"transform": workload.square, "num_processes": 2, "num_items_per_process": 2}
    with pytest.raises(error, match=message):
        ParallelMapIterator(NativeCheckpointableIterator([1]), **{**options, **arguments})


def test_a_source_that_is_not_checkpointable_is_refused() -> None:
    with pytest.raises(ArgumentTypeError, match="source_iterator must be a CheckpointableIterator"):
        ParallelMapIterator(range(3), workload.square, 1, 1)  # type: ignore[arg-type]


def test_repr_shows_the_configuration() -> None:
    it = ParallelMapIterator(NativeCheckpointableIterator([1]), workload.square, 2, 8)
    assert repr(it) == (
        "ParallelMapIterator(NativeCheckpointableIterator(iterable='[1]'), transform=square, "
        "num_processes=2, num_items_per_process=8, multiprocessing_context=None, "
        "use_threads=False)"
    )
