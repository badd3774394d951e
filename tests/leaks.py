"""The one leak check of the test suite: processes, threads and /dev/shm entries of our own.

The machines that run the suite are shared, so a check may count only what the test itself
created: its child processes (found by their parent pid), the threads of this process, and the
shared-memory entries whose names prove them ours. Those are torch's segments, named
``torch_<pid>_...`` after the process that made them (this process or a process that this test
started), and multiprocessing's named semaphores (``sem.mp-...``) whose names this process drew
(recorded as they are drawn).
"""

from __future__ import annotations

import multiprocessing.process
import multiprocessing.synchronize
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHM = Path("/dev/shm")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting for its reaper counts as ended)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _helper(pid: int) -> bool:
    """multiprocessing's own process-wide helpers (resource tracker, fork server) stay."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" in command or b"forkserver" in command


def child_pids() -> set[int]:
    """The live child processes of this process, but multiprocessing's helpers."""
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


def our_threads() -> set[threading.Thread]:
    """Our workers' and relays' threads, and multiprocessing's queue feeder threads."""
    names = ("QueueFeeder", "checkpointable")
    return {thread for thread in threading.enumerate() if thread.name.startswith(names)}


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `condition` holds within `seconds` (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class Recorder:
    """The pids of the processes started and the semaphore names drawn while it records."""

    def __init__(self) -> None:
        self.pids: set[int] = {os.getpid()}
        self.semaphores: set[str] = set()

    def ours(self, name: str) -> bool:
        """Whether the /dev/shm entry `name` was made by this test."""
        match = re.match(r"torch_(\d+)_", name)
        if match is not None:
            return int(match.group(1)) in self.pids
        return name in self.semaphores

    def left_in_shm(self) -> set[str]:
        if not SHM.is_dir():
            return set()
        return {name for name in os.listdir(SHM) if self.ours(name)}


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record, in this process, every process started and every semaphore name drawn."""
    recorder = Recorder()
    start = multiprocessing.process.BaseProcess.start
    make_name = multiprocessing.synchronize.SemLock._make_name  # type: ignore[attr-defined]

    def recorded_start(process: Any) -> None:
        start(process)
        recorder.pids.add(process.pid)

    def recorded_name() -> str:
        name: str = make_name()
        recorder.semaphores.add("sem." + name.lstrip("/"))
        return name

    multiprocessing.process.BaseProcess.start = recorded_start  # type: ignore[method-assign]
    multiprocessing.synchronize.SemLock._make_name = staticmethod(recorded_name)  # type: ignore[attr-defined]
    try:
        yield recorder
    finally:
        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
        multiprocessing.synchronize.SemLock._make_name = staticmethod(make_name)  # type: ignore[attr-defined]


@contextmanager
def no_leaks_of_ours(seconds: float = 10.0) -> Iterator[Recorder]:
    """Fail if, `seconds` after the block, a process, thread or /dev/shm entry that the block
    made is still there."""
    import gc

    gc.collect()
    processes, threads = child_pids(), our_threads()
    with recording() as recorder:
        yield recorder
        gc.collect()
        assert eventually(lambda: child_pids() <= processes, seconds), (
            f"left processes {child_pids() - processes}"
        )
        assert eventually(lambda: our_threads() <= threads, seconds), (
            f"left threads {our_threads() - threads}"
        )
        assert eventually(lambda: not recorder.left_in_shm(), seconds), (
            f"left {recorder.left_in_shm()} in /dev/shm"
        )
