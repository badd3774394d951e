"""Faults of the one worker runtime, under load and with real kills: no worker outlives its
consumer, a killed loader worker is reported with torch's words every time, running out of file
descriptors gets torch's hint."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import checkpointable
from checkpointable._runtime.group import WorkerGroup
from checkpointable.dataloader import StatefulDataLoader
from tests._loader_data import Squares
from tests.leaks import child_pids, eventually, no_leaks_of_ours

SRC = str(Path(checkpointable.__file__).resolve().parent.parent)
ROOT = str(Path(__file__).resolve().parents[1])  # where the package `tests` is
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, ROOT])}


@pytest.fixture
def two_cpu_hogs() -> Iterator[None]:
    """Keep two CPU-bound processes busy during the test, as other jobs on a shared machine."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["prefetch", "parallel_map"])
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_no_worker_outlives_a_consumer_killed_right_after_it_starts_them(
    method: str, kind: str
) -> None:
    script = str(Path(ROOT) / "tests" / "fault_scripts" / "orphans.py")
    result = subprocess.run(
        [sys.executable, script, method, kind, "100", str(random.randrange(2**31))],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["trials"] == 100
    assert report["left"] == [], f"alive 5 s after their consumer was killed: {report['left']}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_loader_worker_is_reported_every_time_under_load(two_cpu_hogs: None) -> None:
    chance = random.Random()
    before = child_pids()
    killed: set[int] = set()
    with no_leaks_of_ours(killed=killed):
        _kill_loader_workers(chance, before, killed)


def _kill_loader_workers(chance: random.Random, before: set[int], killed: set[int]) -> None:
    for trial in range(40):
        loader = StatefulDataLoader(Squares(10_000), batch_size=4, num_workers=2)
        batches = iter(loader)
        next(batches)
        victim = chance.randrange(2)
        pid = batches._pool.pids[victim]  # type: ignore[attr-defined]
        killed.add(pid)
        killer = threading.Timer(chance.uniform(0.0, 0.02), os.kill, (pid, signal.SIGKILL))
        killer.start()
        pattern = (
            rf"DataLoader worker \(pid {pid}\) is killed by signal: Killed\. It was worker "
            rf"{victim}, killed by SIGKILL\."
        )
        with pytest.raises(RuntimeError, match=pattern):
            for _ in batches:
                pass
        killer.join()
        assert eventually(lambda: child_pids() <= before, 10), f"trial {trial}: workers left"
        del batches, loader


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_running_out_of_file_descriptors_gets_torchs_hint() -> None:
    script = textwrap.dedent(
        """
        import resource
        import torch
        from checkpointable.dataloader import StatefulDataLoader

        class Tensors(torch.utils.data.Dataset):
            def __len__(self):
                return 100_000
            def __getitem__(self, index):
                return torch.full((8,), index)

        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
        loader = StatefulDataLoader(Tensors(), batch_size=1, num_workers=2)
        kept = []
        try:
            for batch in loader:
                kept.append(batch)  # each kept batch holds a shared-memory file descriptor
        except RuntimeError as error:
            print(str(error))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=100
    )
    assert "Too many open files" in result.stdout, result.stderr[-3000:]
    assert "ulimit -n" in result.stdout
    assert "set_sharing_strategy('file_system')" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_spawn_worker_gets_its_own_pickle_of_what_holds_tensors(no_leaks: None) -> None:
    # A pickle of a tensor hands its shared memory over once: two workers reading one pickle
    # failed with EOFError in the second one.
    torch = pytest.importorskip("torch")
    from functools import partial

    from checkpointable.iterators import NativeCheckpointableIterator, ParallelMapIterator
    from tests.iterators.workload import add_tensor_sum

    dataset = torch.utils.data.TensorDataset(torch.arange(12))
    loader = StatefulDataLoader(
        dataset, batch_size=3, num_workers=2, multiprocessing_context="spawn"
    )
    assert [int(x) for (batch,) in loader for x in batch] == list(range(12))
    transform = partial(add_tensor_sum, torch.ones(3))
    source = NativeCheckpointableIterator(list(range(6)))
    with ParallelMapIterator(source, transform, 2, 1, multiprocessing_context="spawn") as mapped:
        assert list(mapped) == [n + 3 for n in range(6)]


def test_the_resource_tracker_runs_before_a_spawn_group_makes_its_semaphores() -> None:
    # Regression: the tracker started lazily, at the first named semaphore, took milliseconds to
    # come up, and a consumer SIGKILLed meanwhile left that semaphore in /dev/shm for good
    # (about 2 of 3 consumers killed 0-10 ms after starting spawn workers).
    script = textwrap.dedent(
        """
        import multiprocessing
        from multiprocessing import resource_tracker
        from checkpointable._runtime.group import WorkerGroup

        tracker = resource_tracker._resource_tracker
        before = tracker._fd is not None
        made = []
        original = resource_tracker.register

        def register(name, kind):
            made.append(tracker._fd is not None)
            original(name, kind)

        resource_tracker.register = register
        group = WorkerGroup("test", multiprocessing.get_context("spawn"))
        group.queue()
        group.close()
        print(before, all(made), len(made) > 0)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["False", "True", "True"], result.stderr[-2000:]


def _set_and_check_forever(stop: Any) -> None:
    while True:
        stop.set()
        stop.is_set()


def _wait_then_check(stop: Any) -> None:
    stop.wait(0.01)
    stop.is_set()


@pytest.mark.timeout(120)
def test_a_consumer_killed_while_it_sets_the_stop_event_never_blocks_a_worker() -> None:
    """A worker checks its group's stop event and waits on it (a prefetch worker that is done);
    the consumer sets it at shutdown. A consumer SIGKILLed in the middle of that must leave
    nothing held: a multiprocessing Event's lock would stay held, and the worker block forever
    (the orphans the torture harness found under load)."""
    context = multiprocessing.get_context("fork")
    for _ in range(10):
        group = WorkerGroup("test", context)
        stop = group.stop
        setter = context.Process(target=_set_and_check_forever, args=(stop,), daemon=True)
        setter.start()
        time.sleep(0.05)
        assert setter.pid is not None
        os.kill(setter.pid, signal.SIGKILL)
        setter.join()
        checker = threading.Thread(target=_wait_then_check, args=(stop,), daemon=True)
        checker.start()
        checker.join(5.0)
        assert not checker.is_alive(), "the stop event stayed locked by the killed process"
        group.close()
