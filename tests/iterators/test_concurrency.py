"""Lifecycle of PrefetchIterator and ParallelMapIterator: no process or thread is left behind
(close, garbage collection, an exception in the loop, interpreter exit, a dead parent), a killed
worker raises a clear error, spawn refuses unpicklable functions clearly, a daemonic process
falls back to threads with a warning, and tensors sent by a prefetch process stay valid."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

import checkpointable
from checkpointable.iterators import (
    CheckpointableIterator,
    MapIterator,
    NativeCheckpointableIterator,
    ParallelMapIterator,
    PrefetchIterator,
)
from tests.leaks import child_pids, our_threads

from . import workload

SRC = str(Path(checkpointable.__file__).resolve().parent.parent)
ROOT = str(Path(__file__).resolve().parents[2])  # where the package `tests` is


prefetch, parallel_map = workload.prefetch_of, workload.parallel_map_of
KINDS = [prefetch, parallel_map]
IDS = ["prefetch", "parallel_map"]
# a factory of KINDS: (method, n=...) -> a running iterator with workers
Kind = Callable[..., PrefetchIterator | ParallelMapIterator]


def workers() -> set[object]:
    """Our worker processes and threads, and multiprocessing's queue feeder threads."""
    return set(child_pids()) | set(our_threads())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["thread", "fork"])
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_close_leaves_nothing_behind(kind: Kind, method: str, no_leaks: None) -> None:
    it = kind(method)
    assert [next(it) for _ in range(3)] == [0, 2, 4]
    assert workers()
    it.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_garbage_collection_of_an_unclosed_iterator_stops_its_workers(
    kind: Kind, no_leaks: None
) -> None:
    it = kind("fork")
    next(it)
    del it
    gc.collect()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_an_exception_in_the_consuming_loop_leaves_nothing_behind(
    kind: Kind, no_leaks: None
) -> None:
    with pytest.raises(KeyError), kind("fork") as it:
        for item in it:
            if item == 6:
                raise KeyError(item)
    it = kind("thread")
    with pytest.raises(KeyError):
        for item in it:
            if item == 6:
                raise KeyError(item)
    del it, item
    gc.collect()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_killed_worker_raises_promptly_and_the_iterator_can_go_on(
    kind: Kind, no_leaks: None
) -> None:
    it = kind("fork", n=100_000)
    with it:
        head = [next(it) for _ in range(10)]
        victim = next(p for p in multiprocessing.active_children() if "checkpointable" in p.name)
        assert victim.pid is not None  # a started process
        os.kill(victim.pid, signal.SIGKILL)
        with pytest.raises(
            RuntimeError,
            match=r"Iterator worker \(pid \d+\) is killed by signal: Killed\. It was worker \d, "
            r"killed by SIGKILL\..* restarts the workers",
        ):
            for _ in range(100_000):
                head.append(next(it))
        state = it.getstate()
        more = [next(it) for _ in range(10)]  # restarted from the last position
    assert head + more == [2 * i for i in range(len(head) + 10)]
    assert state is not None


@pytest.mark.timeout(60)
def test_close_stops_workers_stuck_in_the_pipeline(no_leaks: None) -> None:
    source = NativeCheckpointableIterator(list(range(10)))
    pool = ParallelMapIterator(source, workload.stuck_after_0, 2, 1, multiprocessing_context="fork")
    other_source = NativeCheckpointableIterator(list(range(10)))
    stuck = PrefetchIterator(MapIterator(other_source, workload.stuck_after_0), 2)
    with pool, stuck:
        assert next(pool) == next(stuck) == 0  # the workers are now stuck in the next items


@pytest.mark.timeout(60)
def test_ctrl_c_in_a_worker_process_is_left_to_the_consumer() -> None:
    with prefetch("fork", n=50) as it:
        head = [next(it) for _ in range(3)]
        for process in multiprocessing.active_children():
            if "checkpointable" in process.name:
                assert process.pid is not None  # a started process
                os.kill(process.pid, signal.SIGINT)
        time.sleep(0.2)
        assert head + list(it) == [2 * i for i in range(50)]


def run_a_copy_in_a_forked_child(
    iterator: PrefetchIterator | ParallelMapIterator, connection: Connection
) -> None:
    connection.send(list(iterator))
    iterator.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_a_forked_copy_of_a_running_iterator_restarts_from_its_position(
    kind: Kind, no_leaks: None
) -> None:
    with kind("thread", n=30) as it:
        head = [next(it) for _ in range(7)]
        receiver, sender = multiprocessing.Pipe(duplex=False)
        child = multiprocessing.get_context("fork").Process(
            target=run_a_copy_in_a_forked_child, args=(it, sender)
        )
        child.start()
        assert receiver.poll(30)
        in_child = receiver.recv()
        child.join(30)
        assert head + list(it) == head + in_child == [2 * i for i in range(30)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_an_unpicklable_function_under_spawn_raises_a_clear_type_error(
    method: str, no_leaks: None
) -> None:
    source = NativeCheckpointableIterator([1, 2, 3])
    it: CheckpointableIterator = ParallelMapIterator(
        source, lambda n: n + 1, 2, 1, multiprocessing_context=method
    )
    with it, pytest.raises(TypeError, match=r"transform must be picklable .* module level"):
        next(it)
    it = PrefetchIterator(MapIterator(source, lambda n: n), 2, multiprocessing_context=method)
    with (
        it,
        pytest.raises(
            TypeError,
            match=r"source_iterator must be picklable to be sent to a '(spawn|forkserver)' worker",
        ),
    ):
        next(it)
    with PrefetchIterator(MapIterator(source, lambda n: n), 2, use_threads=True) as it:
        assert list(it) == [1, 2, 3]  # threads need no pickling


def run_in_a_daemonic_process(connection: Connection) -> None:
    """Runs both iterators with their default (process) configuration in a daemonic process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with prefetch("fork", n=5) as it:
            prefetched = list(it)
        with parallel_map("fork", n=5) as it:
            mapped = list(it)
    connection.send((prefetched, mapped, [str(w.message) for w in caught]))


@pytest.mark.timeout(60)
def test_a_daemonic_process_falls_back_to_threads_with_a_warning() -> None:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=run_in_a_daemonic_process, args=(sender,), daemon=True
    )
    process.start()
    assert receiver.poll(30)
    prefetched, mapped, messages = receiver.recv()
    process.join(30)
    assert prefetched == mapped == [0, 2, 4, 6, 8]
    assert len(messages) == 2
    assert all("daemonic process" in m and "threads instead" in m for m in messages)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("in_main", [False, True], ids=["buffer_in_worker", "buffer_in_main"])
def test_tensors_sent_by_a_prefetch_process_stay_valid(in_main: bool, no_leaks: None) -> None:
    torch = pytest.importorskip("torch")
    source = MapIterator(NativeCheckpointableIterator(list(range(6))), workload.tensor_of)
    it = PrefetchIterator(source, 8, in_main, multiprocessing_context="fork")
    with it:
        first = next(it)
        time.sleep(0.5)  # the worker meanwhile produced every item and reached the end
        tensors = [first, *it]
    for n, tensor in enumerate(tensors):
        assert torch.equal(tensor, torch.full((4,), n))


def run_script(body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    script = f"import sys\nsys.path.insert(0, {ROOT!r})\n" + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


def gone(pid: int) -> bool:
    """Whether process `pid` ended (a zombie waiting for a reaper counts as ended)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("method", "processes"), [("fork", 2), ("spawn", 1)])
def test_the_interpreter_exits_promptly_with_unclosed_iterators(
    method: str, processes: int
) -> None:
    # Under fork, also a PrefetchIterator over a ParallelMapIterator (grandchildren); under
    # spawn, where each worker imports torch, one worker per iterator.
    result = run_script(
        f"""
        import multiprocessing
        from checkpointable.iterators import PrefetchIterator
        from tests.iterators.workload import parallel_map_of, prefetch_of
        it, pool = prefetch_of({method!r}), parallel_map_of({method!r}, processes={processes})
        threads = prefetch_of("thread")
        firsts = [next(it), next(pool), next(threads)]
        if {method!r} == "fork":
            nested = PrefetchIterator(parallel_map_of("fork"), 2)
            firsts.append(next(nested))
        print(*firsts, flush=True)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert set(lines[0].split()) == {"0"}
    pids = [int(pid) for pid in lines[1].split()]
    assert len(pids) == (4 if method == "fork" else 2)  # pool workers and prefetch processes
    assert all(gone(pid) for pid in pids)
    assert "Traceback" not in result.stderr, result.stderr


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("method", "processes"), [("fork", 2), ("forkserver", 1)])
def test_workers_exit_when_their_parent_is_killed(method: str, processes: int) -> None:
    # Under forkserver the workers' parent is the fork server, which outlives the consumer.
    result = run_script(
        f"""
        import multiprocessing, os, signal
        from tests.iterators.workload import parallel_map_of, prefetch_of
        it, pool = prefetch_of({method!r}), parallel_map_of({method!r}, processes={processes})
        next(it), next(pool)
        print(*[p.pid for p in multiprocessing.active_children()], flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )  # returns once every process holding its output (the workers) has ended
    assert result.returncode == -signal.SIGKILL
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 1 + processes
    deadline = time.monotonic() + 30
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(gone(pid) for pid in pids)
