"""Inside a worker process: knowing that the process it serves is gone, and its signals.

A `ParentWatch` is made in the consumer's process *before* the worker starts, so it holds the
consumer's pid even if the consumer dies before the worker runs its first line (reading
``os.getppid()`` in the worker would then read the pid of a reaper). In the worker, `gone()`
answers from the parent pid where the worker's parent is the consumer (``fork``, ``spawn``) and
from a pidfd of the consumer under every start method (the parent of a ``forkserver`` worker
is the fork server, which outlives the consumer). Where there is no pidfd, it asks the kernel
whether the pid still exists.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import NoReturn

__all__ = ["ParentWatch", "WorkerStop"]


class WorkerStop(BaseException):
    """Raised in a worker process by SIGTERM: unwind, running ``finally`` blocks."""


def _raise_stop(signum: int, frame: FrameType | None) -> NoReturn:
    raise WorkerStop


class ParentWatch:
    """The link of a worker process to the process it serves (the consumer).

    Args:
        direct: whether the worker's parent is the consumer (fork and spawn; not forkserver).
    """

    def __init__(self, direct: bool) -> None:
        self.pid = os.getpid()
        self.direct = direct
        self._descriptor = -1  # a pidfd of the consumer, opened in the worker
        self._lost = False  # the consumer was gone when the worker started

    def __getstate__(self) -> dict[str, object]:
        return {"pid": self.pid, "direct": self.direct}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.pid = int(state["pid"])  # type: ignore[call-overload]
        self.direct = bool(state["direct"])
        self._descriptor, self._lost = -1, False

    def attach(self, interrupt: bool) -> None:
        """Called first thing in the worker process.

        SIGTERM then unwinds the worker (`WorkerStop`), connection errors reported only because
        the consumer died are not printed, and SIGINT either ends the worker (`interrupt`, as
        torch's DataLoader workers) or is ignored (the consumer stops its workers itself).
        """
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:
                self._descriptor = pidfd_open(self.pid)
            except ProcessLookupError:
                self._lost = True
            except OSError:
                self._descriptor = -1
        signal.signal(signal.SIGTERM, _raise_stop)
        if not interrupt:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self._quiet()

    def gone(self) -> bool:
        """Whether the consumer's process has ended (a few microseconds)."""
        if self._lost or (self.direct and os.getppid() != self.pid):
            return True
        if self._descriptor >= 0:
            readable, _, _ = select.select([self._descriptor], [], [], 0)
            return bool(readable)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def wait(self, seconds: float) -> bool:
        """Whether the consumer ends within `seconds` (it closes its sockets a moment before
        the kernel reports it gone)."""
        deadline = time.monotonic() + seconds
        while not self.gone():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._descriptor >= 0:
                select.select([self._descriptor], [], [], left)
            else:
                time.sleep(min(left, 0.05))
        return True

    def _quiet(self) -> None:
        """Drop the connection errors that torch's descriptor hand-over thread reports when the
        consumer is killed mid-transfer: the worker is about to notice and exit."""

        def ignored(kind: type[BaseException] | None) -> bool:
            if kind is None or not issubclass(kind, ConnectionError | EOFError):
                return False
            return self.wait(1.0)

        previous_sys = sys.excepthook
        previous_thread = threading.excepthook

        def sys_hook(
            kind: type[BaseException], error: BaseException, trace: TracebackType | None
        ) -> None:
            if not ignored(kind):
                previous_sys(kind, error, trace)

        def thread_hook(args: threading.ExceptHookArgs) -> None:
            if not ignored(args.exc_type):
                previous_thread(args)

        sys.excepthook = sys_hook
        threading.excepthook = thread_hook

    def close(self) -> None:
        """Close the pidfd (at the worker's end)."""
        if self._descriptor >= 0:
            with contextlib.suppress(OSError):
                os.close(self._descriptor)
            self._descriptor = -1
