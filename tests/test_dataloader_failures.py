"""Failures surface clearly, nothing hangs, and no process, thread or shared memory is left."""

from __future__ import annotations

import contextlib
import gc
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import SequentialSampler

import checkpointable
from checkpointable import ArgumentValueError
from checkpointable.dataloader import StatefulDataLoader
from tests._loader_data import Faulty, Sleepy, Squares, failing_init, unpicklable_collate


def child_pids() -> set[int]:
    """The live (not zombie) child processes of this process, found by their parent pid."""
    me, pids = os.getpid(), set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if (
                fields
                and int(fields[1]) == me
                and fields[0] != "Z"
                and not _helper(int(entry.name))
            ):
                pids.add(int(entry.name))
    return pids


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _helper(pid: int) -> bool:
    """multiprocessing's own process-wide helpers (resource tracker, fork server) stay."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" in command or b"forkserver" in command


def eventually(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def loader_threads() -> set[threading.Thread]:
    return {
        t for t in threading.enumerate() if t.name.startswith(("QueueFeeder", "checkpointable"))
    }


@pytest.fixture
def no_leaks():
    """Check after the test that no worker process, queue thread or shm file was left."""
    gc.collect()
    processes, threads = child_pids(), loader_threads()
    shm = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    yield
    gc.collect()
    assert eventually(lambda: child_pids() <= processes), f"left {child_pids() - processes}"
    assert eventually(lambda: loader_threads() <= threads), f"left {loader_threads() - threads}"
    if os.path.isdir("/dev/shm"):
        left = lambda: {name for name in set(os.listdir("/dev/shm")) - shm if ours(name)}  # noqa: E731
        assert eventually(lambda: not left()), f"left {left()} in /dev/shm"


def ours(name: str) -> bool:
    """Whether a new /dev/shm file may come from this test: not a torch segment of a process
    that is alive and is not one of ours. (multiprocessing's named semaphores, ``sem.mp-*``,
    carry no pid: a second test run on the same machine can make this check fail.)"""
    match = re.match(r"torch_(\d+)_", name)
    if match is None:
        return True
    pid = int(match.group(1))
    if pid == os.getpid() or not Path(f"/proc/{pid}").exists():
        return True
    try:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return True
    return parent == os.getpid()


# ---------------------------------------------------------------- errors from workers


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_exception_carries_the_worker_traceback(num_workers, no_leaks):
    loader = StatefulDataLoader(Faulty(12), batch_size=2, num_workers=num_workers)
    pattern = r"item 7 is broken"
    if num_workers:
        pattern = r"(?s)Caught ValueError in DataLoader worker process 1\.\nOriginal Traceback.*"
        pattern += r"in __getitem__.*item 7 is broken"
    batches = iter(loader)
    got = []
    with pytest.raises(ValueError, match=pattern):
        for batch in batches:
            got.append(batch)
    assert len(got) == 3
    rest = list(batches)  # as torch: the failed batch is skipped, the epoch goes on
    assert [int(i) for b in got + rest for i in b[0]] == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]
    del batches, loader


@pytest.mark.timeout(60)
def test_a_failing_worker_init_fn_is_reported(no_leaks):
    loader = StatefulDataLoader(
        Squares(8), batch_size=2, num_workers=2, worker_init_fn=failing_init
    )
    with pytest.raises(RuntimeError, match=r"(?s)worker process 0.*worker 0 cannot start"):
        list(loader)
    del loader


@pytest.mark.timeout(60)
def test_a_batch_that_cannot_be_pickled_is_an_error_not_a_hang(no_leaks):
    loader = StatefulDataLoader(
        Squares(8), batch_size=2, num_workers=1, collate_fn=unpicklable_collate
    )
    with pytest.raises(Exception, match="while pickling its batch"):
        next(iter(loader))
    loader.close()


@pytest.mark.timeout(60)
def test_an_unpicklable_dataset_under_spawn_fails_with_a_hint(no_leaks):
    loader = StatefulDataLoader(
        Squares(4), num_workers=1, collate_fn=lambda items: items, multiprocessing_context="spawn"
    )
    with (
        pytest.warns(UserWarning, match="must be picklable"),
        pytest.raises(Exception, match="pickle"),
    ):
        iter(loader)


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_epoch_raises_promptly_and_leaves_nothing(no_leaks):
    before = child_pids()
    loader = StatefulDataLoader(Sleepy(200, 0.01), batch_size=2, num_workers=2)
    batches = iter(loader)
    next(batches)
    workers = child_pids() - before
    assert len(workers) == 2
    os.kill(min(workers), signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"worker \d \(pid \d+\) exited unexpectedly.*SIGKILL"):
        for _ in batches:
            pass
    assert time.monotonic() - start < 10  # about a second: the liveness check interval
    assert list(batches) == []
    del batches, loader


@pytest.mark.timeout(60)
def test_timeout_raises_and_stops_the_workers(no_leaks):
    loader = StatefulDataLoader(Sleepy(4, 5.0), batch_size=1, num_workers=1, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0.5 seconds"):
        next(iter(loader))
    assert time.monotonic() - start < 4
    loader.close()


@pytest.mark.timeout(60)
def test_persistent_workers_that_died_between_epochs_are_replaced(no_leaks):
    before = child_pids()
    loader = StatefulDataLoader(Squares(10), batch_size=2, num_workers=2, persistent_workers=True)
    assert len(list(loader)) == 5
    workers = child_pids() - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGINT)  # as a Ctrl-C that reached the whole process group
    assert eventually(lambda: not any(alive(pid) for pid in workers))
    assert len(list(loader)) == 5
    loader.close()


# ---------------------------------------------------------------- leaks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [False, True])
def test_deleting_the_loader_mid_epoch_stops_everything(persistent, no_leaks):
    loader = StatefulDataLoader(
        Squares(50), batch_size=2, num_workers=2, persistent_workers=persistent
    )
    batches = iter(loader)
    next(batches)
    assert len(child_pids()) >= 2
    del batches, loader  # the no_leaks fixture checks that the workers are gone


@pytest.mark.timeout(60)
def test_an_exception_in_the_training_loop_stops_the_workers(no_leaks):
    before = child_pids()
    loader = StatefulDataLoader(Squares(50), batch_size=2, num_workers=2)

    def train() -> None:
        for step, _ in enumerate(loader):
            if step == 3:
                raise KeyError("loss is nan")

    with contextlib.suppress(KeyError):
        train()
    assert eventually(lambda: child_pids() <= before)  # the loop's iterator was collected
    state = loader.state_dict()
    assert state["batches"] == 4 and state["in_epoch"]


@pytest.mark.timeout(60)
def test_a_new_epoch_and_load_state_dict_stop_the_previous_epochs_workers(no_leaks):
    loader = StatefulDataLoader(Squares(50), batch_size=2, num_workers=2)
    first = iter(loader)
    next(first)
    state = loader.state_dict()
    second = iter(loader)  # the previous epoch is abandoned
    next(second)
    assert list(first) == []
    loader.load_state_dict(state)
    assert list(second) == []
    assert int(next(iter(loader))[0][0]) == 2
    loader.close()
    del first, second, loader


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["exit", "interrupt", "killed"])
def test_workers_go_away_when_the_main_process_exits_is_interrupted_or_killed(how):
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from pathlib import Path
        from checkpointable.dataloader import StatefulDataLoader
        loader = StatefulDataLoader(
            list(range(10000)), batch_size=2, num_workers=2, persistent_workers=True
        )
        batches = iter(loader)
        next(batches)
        tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
        children = [p for t in tasks for p in (t / "children").read_text().split()]
        print(" ".join(children), flush=True)
        how = sys.argv[1]
        if how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "interrupt":
            for batch in batches:
                time.sleep(0.01)
        """
    )
    src = str(Path(checkpointable.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    child = subprocess.Popen(
        [sys.executable, "-c", script, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    workers = [int(p) for p in child.stdout.readline().split()]
    assert len(workers) == 2, child.stderr.read() if child.stderr else ""
    if how == "interrupt":
        child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    if how == "interrupt":
        assert "KeyboardInterrupt" in stderr
    assert eventually(lambda: not any(alive(pid) for pid in workers), 15), stderr


# ---------------------------------------------------------------- arguments


def test_torchs_argument_checks_and_messages_are_kept():
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        StatefulDataLoader(range(3), shuffle=True, sampler=SequentialSampler(range(3)))
    with pytest.raises(ValueError, match="num_workers option should be non-negative"):
        StatefulDataLoader(range(3), num_workers=-1)
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        StatefulDataLoader(range(3), batch_size=0)
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        StatefulDataLoader(range(3), persistent_workers=True)
    with pytest.raises(ValueError, match="prefetch_factor option could only be specified"):
        StatefulDataLoader(range(3), prefetch_factor=2)


def test_our_own_arguments_are_checked():
    with pytest.raises(ValueError, match=r"snapshot_every_n_steps must be >= 0 or None, got snap"):
        StatefulDataLoader(range(3), snapshot_every_n_steps=-1)
    with pytest.raises(TypeError, match=r"snapshot_every_n_steps must be an int or None, got '2'"):
        StatefulDataLoader(range(3), snapshot_every_n_steps="2")  # type: ignore[arg-type]
    loader = StatefulDataLoader(range(3), timeout=1.0)
    with pytest.raises(ArgumentValueError, match=r"timeout=1.0 needs num_workers > 0"):
        iter(loader)
    with pytest.raises(AssertionError):  # what torch raises there
        iter(loader)
    assert "snapshot_every_n_steps=1" in repr(StatefulDataLoader(range(3)))


@pytest.mark.timeout(60)
def test_pinning_runs_in_a_thread_with_workers(monkeypatch, no_leaks):
    pinned: list[int] = []

    def fake_pin(data: Any, device: Any = None) -> Any:
        pinned.append(threading.get_ident())
        return data

    import checkpointable._loader.epochs as loader_module
    import checkpointable._loader.pool as pool_module

    monkeypatch.setattr(loader_module, "pin_device", lambda loader: "fake")
    monkeypatch.setattr(pool_module, "pin_memory", fake_pin)
    monkeypatch.setattr(loader_module, "pin_memory", fake_pin)
    for workers in (0, 2):
        loader = StatefulDataLoader(Squares(9), batch_size=2, num_workers=workers, pin_memory=True)
        assert len(list(loader)) == 5
        loader.close()
    assert len(pinned) == 10
    assert pinned[0] == threading.get_ident() and pinned[-1] != threading.get_ident()
