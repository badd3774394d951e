"""The one leak check of the test suite: processes, threads and /dev/shm entries of our own.

The machines that run the suite are shared, so a check may count only what the test itself
created (`checkpointable.testing._processes` tells ours from others'): its child processes, the
threads of this process, and the shared-memory entries whose names prove them ours (torch
segments named after a process the test started, semaphore names this process drew).
"""

from __future__ import annotations

import gc
import multiprocessing.process
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from checkpointable.testing._processes import (
    alive,
    children,
    ours_in_shm,
    record_semaphores,
    shm_entries,
)

__all__ = ["alive", "child_pids", "eventually", "no_leaks_of_ours", "our_threads"]


def _helper(pid: int) -> bool:
    """multiprocessing's own process-wide helpers (resource tracker, fork server) stay."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"resource_tracker" in command or b"forkserver" in command


def child_pids() -> set[int]:
    """The live child processes of this process, but multiprocessing's helpers."""
    return {pid for pid in children(os.getpid()) if not _helper(pid)}


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


@contextmanager
def no_leaks_of_ours(seconds: float = 10.0, killed: set[int] | None = None) -> Iterator[None]:
    """Fail if, `seconds` after the block, a process, thread or /dev/shm entry that the block
    made is still there.

    `killed`: pids the block SIGKILLed on purpose. A kill that lands inside torch's
    ``shm_open``-then-unlink of a new shared-memory segment leaves that segment's name (torch's
    DataLoader has the same window), so the segments named after these pids are excused.
    """
    gc.collect()
    processes, threads, shm = child_pids(), our_threads(), shm_entries()
    pids, semaphores = {os.getpid()}, set[str]()
    start = multiprocessing.process.BaseProcess.start

    def recorded_start(process: Any) -> None:
        start(process)
        pids.add(process.pid)

    multiprocessing.process.BaseProcess.start = recorded_start  # type: ignore[method-assign, assignment]
    stop_recording = record_semaphores(semaphores.add)
    try:
        yield
    finally:
        multiprocessing.process.BaseProcess.start = start  # type: ignore[method-assign]
        stop_recording()
    gc.collect()

    def left_in_shm() -> set[str]:
        excused = {f"torch_{pid}_" for pid in killed or ()}
        left = ours_in_shm(shm_entries() - shm, semaphores, pids)
        return {name for name in left if not name.startswith(tuple(excused))}

    assert eventually(lambda: child_pids() <= processes, seconds), (
        f"left processes {child_pids() - processes}"
    )
    assert eventually(lambda: our_threads() <= threads, seconds), (
        f"left threads {our_threads() - threads}"
    )
    assert eventually(lambda: not left_in_shm(), seconds), f"left {left_in_shm()} in /dev/shm"
