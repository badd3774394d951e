"""Telling our processes and shared-memory entries from everyone else's (Linux ``/proc``).

The leak checks of the test suite, the torture harness and the soak all count only what they
created themselves, since the machines they run on are shared: processes below a given one
(optionally made a child subreaper, so that orphans stay below it), torch segments named
``torch_<pid>_...`` after a pid of ours, and the multiprocessing semaphore names
(``sem.mp-...``) that our processes drew, recorded as they are drawn.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.synchronize
import os
import re
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "alive",
    "become_subreaper",
    "children",
    "descendants",
    "ours_in_shm",
    "outlived",
    "reap",
    "record_semaphores",
    "shm_entries",
]

_PR_SET_CHILD_SUBREAPER = 36


def _stat(pid: int, task: int | None = None) -> list[str]:
    """The fields of /proc/<pid>/stat (or of its thread `task`) after the command name:
    state, ppid, ..."""
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    """Whether process `pid` runs: one of its threads has not ended (a zombie waiting for its
    reaper counts as ended; a main thread that ended first shows as a zombie while the other
    threads still run, and the process still holds its resources)."""
    try:
        tasks = [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except (OSError, ValueError):
        return False
    for task in tasks:
        fields = _stat(pid, task)
        if fields and fields[0] not in ("Z", "X"):
            return True
    return False


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] not in ("Z", "X"):
                parents[int(entry.name)] = int(fields[1])
    return parents


def children(pid: int) -> set[int]:
    """The live child processes of `pid`."""
    return {child for child, parent in _parents().items() if parent == pid}


def descendants(root: int) -> set[int]:
    """The live processes below `root`."""
    parents = _parents()
    found: set[int] = set()
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        below = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(below)
        frontier.extend(below)
    return found


def reap() -> None:
    """Collect the exit status of every ended child of this process."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] != 0:
            pass


def outlived(seconds: float) -> set[int]:
    """The processes below this one still alive `seconds` from now (reaping those that end
    meanwhile); they are then killed, so that nothing is left for what comes next."""
    deadline = time.monotonic() + seconds
    left = descendants(os.getpid())
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        reap()
        left = descendants(os.getpid())
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reap()
    return left


def become_subreaper() -> bool:
    """Have the orphans of this process's descendants re-parented to it; whether it worked
    (Linux only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def shm_entries() -> set[str]:
    """The names in /dev/shm (empty where there is none)."""
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def ours_in_shm(names: Iterable[str], semaphores: set[str], pids: set[int]) -> set[str]:
    """Those of `names` that are ours: a recorded semaphore, or a torch segment of our pids."""
    found = set()
    for name in names:
        match = re.match(r"torch_(\d+)_", name)
        if name in semaphores or (match is not None and int(match.group(1)) in pids):
            found.add(name)
    return found


def record_semaphores(sink: Callable[[str], None]) -> Callable[[], None]:
    """From now on, give `sink` the /dev/shm name of every semaphore this process draws;
    returns the function that stops recording."""
    lock: Any = multiprocessing.synchronize.SemLock
    make_name = lock._make_name

    def recorded() -> str:
        name: str = make_name()
        sink("sem." + name.lstrip("/"))
        return name

    lock._make_name = staticmethod(recorded)

    def stop() -> None:
        lock._make_name = staticmethod(make_name)

    return stop
