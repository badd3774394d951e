"""PrefetchIterator: resumable under threads, fork and spawn; its state, arguments and errors.

Lifecycle tests shared with ParallelMapIterator (close, gc, exit, kill, daemonic processes)
are in test_concurrency.py.
"""

from __future__ import annotations

import functools
import logging
import pickle
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import ArgumentTypeError, IncompatibleStateError
from checkpointable.iterators import (
    FixedBatchIterator,
    MapIterator,
    NativeCheckpointableIterator,
    PrefetchIterator,
)
from checkpointable.testing import assert_resumable

from . import workload


def prefetched(n: int = 13, buffer_size: int = 3, **options: Any) -> PrefetchIterator:
    return PrefetchIterator(workload.doubled(n), buffer_size, **options)


def expected(n: int = 13) -> list[int]:
    return [2 * i for i in range(n)]


@pytest.mark.resumable("PrefetchIterator")
@settings(max_examples=15, deadline=None)
@given(n=st.integers(0, 16), buffer_size=st.integers(1, 5), in_main=st.booleans())
def test_resumes_at_every_position_with_threads(n: int, buffer_size: int, in_main: bool) -> None:
    factory = functools.partial(
        prefetched, n, buffer_size, buffer_in_main_process=in_main, use_threads=True
    )
    assert assert_resumable(factory) == expected(n)


@pytest.mark.resumable("PrefetchIterator")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("in_main", [False, True], ids=["buffer_in_worker", "buffer_in_main"])
def test_resumes_at_every_position_in_a_fork_process(in_main: bool) -> None:
    factory = functools.partial(
        prefetched, 11, 3, buffer_in_main_process=in_main, multiprocessing_context="fork"
    )
    assert assert_resumable(factory) == expected(11)


@pytest.mark.resumable("PrefetchIterator")
@pytest.mark.timeout(120)
def test_resumes_in_a_spawn_process() -> None:
    # A spawn worker imports torch when checkpointable does (~2 s on a busy machine): few
    # positions. Step 5 is one item into the second window of 4: its restore replays one item.
    factory = functools.partial(prefetched, 6, 4, multiprocessing_context="spawn")
    assert assert_resumable(factory, positions=[5]) == expected(6)


def test_state_is_the_window_start_and_the_offset_whatever_the_worker_ran_ahead() -> None:
    with prefetched(10, 4, use_threads=True) as it:
        states = []
        for _ in range(6):
            next(it)
            states.append(it.getstate())
    sources = [state["source"]["source"]["num_items_yielded"] for state in states]
    assert sources == [0, 0, 0, 4, 4, 4]
    assert [state["item_offset"] for state in states] == [1, 2, 3, 0, 1, 2]
    assert set(states[0]) == {"type", "source", "item_offset"}


class Counting:
    """A transform counting its calls (threads share it): how far the worker ran ahead."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, n: int) -> int:
        self.calls += 1
        return n


def test_the_worker_runs_at_most_buffer_size_items_ahead_and_does_run_ahead() -> None:
    counting = Counting()
    source = MapIterator(NativeCheckpointableIterator(list(range(100))), counting)
    with PrefetchIterator(source, 5, use_threads=True) as it:
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        time.sleep(0.2)
        assert 5 <= counting.calls <= 3 + 5
        assert list(it) == list(range(3, 100))


@pytest.mark.timeout(60)
def test_an_unpicklable_item_is_reported_at_its_position_after_the_items_before_it() -> None:
    items = [0, 1, 2, 3, 4, threading.Lock(), 6]
    with PrefetchIterator(
        NativeCheckpointableIterator(items), 4, multiprocessing_context="fork"
    ) as it:
        assert next(it) == 0
        time.sleep(0.2)  # the worker meanwhile gathered the next items into one batch
        assert [next(it) for _ in range(4)] == [1, 2, 3, 4]
        with pytest.raises(TypeError, match="an item of source_iterator cannot be pickled"):
            next(it)


@pytest.mark.parametrize("new_size", [1, 2, 7])
def test_a_state_restores_under_another_buffer_size(new_size: int) -> None:
    with prefetched(12, 5, use_threads=True) as it:
        head = [next(it) for _ in range(8)]
        state = it.getstate()
        tail = list(it)
    with prefetched(12, new_size, use_threads=True) as it:
        it.setstate(state)
        assert it.getstate() == state
        assert list(it) == tail
    assert head + tail == expected(12)


def test_setstate_none_goes_back_to_the_start_and_stops_the_running_worker() -> None:
    with prefetched(6, 2, use_threads=True) as it:
        assert [next(it), next(it), next(it)] == [0, 2, 4]
        it.setstate(None)
        assert list(it) == expected(6)


def test_a_pickled_copy_continues_from_the_position_without_the_workers() -> None:
    with prefetched(8, 3, use_threads=True) as it:
        head = [next(it) for _ in range(4)]
        copy = pickle.loads(pickle.dumps(it))
        assert copy._group is None
        with copy:
            assert head + list(copy) == expected(8)
        assert list(it) == expected(8)[4:]


@pytest.mark.resumable("PrefetchIterator")
@pytest.mark.timeout(60)
def test_inside_a_pipeline() -> None:
    def factory() -> FixedBatchIterator:
        prefetch = prefetched(11, 2, multiprocessing_context="fork")
        return FixedBatchIterator(MapIterator(prefetch, workload.square), 3)

    batches = assert_resumable(factory, positions=range(0, 5))
    assert [n for batch in batches for n in batch] == [(2 * i) ** 2 for i in range(11)]


def test_a_source_exception_reaches_the_caller_with_the_worker_traceback() -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(9))), workload.fail_at_5)
    with PrefetchIterator(source, 2, multiprocessing_context="fork") as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        state = it.getstate()
        with pytest.raises(ValueError, match="item 5 is bad") as caught:
            next(it)
        remote = str(caught.value.__cause__)
        assert "fail_at_5" in remote and "PrefetchIterator worker (process" in remote
        assert it.getstate() == state  # the position is kept: the next call tries again
        with pytest.raises(ValueError, match="item 5 is bad"):
            next(it)


def test_a_source_exception_in_a_thread_keeps_its_own_traceback() -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(9))), workload.fail_at_5)
    with PrefetchIterator(source, 3, use_threads=True) as it:
        assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
        with pytest.raises(ValueError, match="item 5 is bad") as caught:
            next(it)
        assert any(entry.name == "fail_at_5" for entry in caught.traceback)


def test_an_exception_that_cannot_be_pickled_arrives_as_runtime_error_with_its_text() -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(5))), workload.fail_unpicklably)
    with (
        PrefetchIterator(source, 2, multiprocessing_context="fork") as it,
        pytest.raises(RuntimeError, match="TwoArgumentError: 42: no way back"),
    ):
        list(it)


def test_log_empty_buffer_warning_logs_when_the_consumer_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(3))), workload.slow_double)
    with (
        caplog.at_level(logging.WARNING, logger="checkpointable"),
        PrefetchIterator(source, 2, log_empty_buffer_warning=True, use_threads=True) as it,
    ):
        assert list(it) == [0, 2, 4]
    assert "found the prefetch buffer empty" in caplog.text


def test_no_warning_is_logged_by_default(caplog: pytest.LogCaptureFixture) -> None:
    source = MapIterator(NativeCheckpointableIterator(list(range(3))), workload.slow_double)
    with caplog.at_level(logging.WARNING), PrefetchIterator(source, 2, use_threads=True) as it:
        assert list(it) == [0, 2, 4]
    assert caplog.text == ""


def test_next_and_setstate_raise_after_close_but_getstate_still_works() -> None:
    it = prefetched(5, 2, use_threads=True)
    next(it)
    state = it.getstate()
    it.close()
    it.close()  # idempotent
    with pytest.raises(RuntimeError, match="PrefetchIterator has been closed"):
        next(it)
    with pytest.raises(RuntimeError, match="PrefetchIterator has been closed"):
        it.setstate(state)
    assert it.getstate() == state


def test_a_state_from_other_data_raises_a_clear_error() -> None:
    with prefetched(10, 4, use_threads=True) as it:
        for _ in range(9):
            next(it)
        state = it.getstate()
    with (
        prefetched(5, 4, use_threads=True) as short,
        pytest.raises(IncompatibleStateError, match="only 5 items"),
    ):
        short.setstate(state)
    state["item_offset"] = -1
    with prefetched(10, 4, use_threads=True) as it:
        with pytest.raises(IncompatibleStateError, match="'item_offset' must be an int >= 0"):
            it.setstate(state)
        with pytest.raises(IncompatibleStateError, match="saved by 'MapIterator'"):
            it.setstate(state["source"])


def test_a_window_offset_beyond_the_source_is_refused_at_load() -> None:
    with prefetched(10, 8, use_threads=True) as it:
        for _ in range(6):
            next(it)
        state = it.getstate()
    with (
        prefetched(4, 8, use_threads=True) as short,
        pytest.raises(IncompatibleStateError, match=r"6 items past .* saved over other data"),
    ):
        short.setstate(state)  # the window start exists; its items are skipped at load


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"buffer_size": 0}, ValueError, r"buffer_size must be a positive int, got buffer_size=0"),
        ({"buffer_size": -2}, ValueError, r"buffer_size=-2"),
        ({"buffer_size": 2.5}, ArgumentTypeError, r"buffer_size must be an int, got 2.5"),
        ({"buffer_in_main_process": "yes"}, ArgumentTypeError, r"buffer_in_main_process must"),
        ({"log_empty_buffer_warning": 1}, ArgumentTypeError, r"log_empty_buffer_warning must"),
        ({"use_threads": None}, ArgumentTypeError, r"use_threads must be a bool"),
        ({"multiprocessing_context": "thread"}, ValueError, r"start method in \["),
        ({"multiprocessing_context": 3}, ArgumentTypeError, r"multiprocessing_context must be"),
    ],
)
def test_bad_arguments_are_named(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    options = {"buffer_size": 2, **arguments}
    with pytest.raises(error, match=message):
        PrefetchIterator(workload.doubled(3), **options)


def test_a_source_that_is_not_checkpointable_is_refused() -> None:
    with pytest.raises(ArgumentTypeError, match="source_iterator must be a CheckpointableIterator"):
        PrefetchIterator([1, 2, 3], 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError):  # the seed's exception type still catches it
        PrefetchIterator(iter([1, 2, 3]), 2)  # type: ignore[arg-type]


def test_repr_shows_the_configuration() -> None:
    it = PrefetchIterator(NativeCheckpointableIterator([1]), 4, multiprocessing_context="spawn")
    assert repr(it) == (
        "PrefetchIterator(NativeCheckpointableIterator(iterable='[1]'), buffer_size=4, "
        "buffer_in_main_process=False, log_empty_buffer_warning=False, "
        "multiprocessing_context='spawn', use_threads=False)"
    )
