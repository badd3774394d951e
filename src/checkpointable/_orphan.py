"""Keep a worker process quiet when the process it serves is killed mid-transfer.

torch hands tensors between processes through shared memory and passes their file descriptors
from a background thread of the sending process (``multiprocessing.resource_sharer``). When the
receiving process is killed (SIGKILL, OOM) during such a hand-over, that thread fails with a
connection error and reports it through ``sys.excepthook``, although the worker is about to
notice that its parent is gone and exit. These hooks drop exactly those reports.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from types import TracebackType

__all__ = ["quiet_when_orphaned"]


def quiet_when_orphaned() -> None:
    """In a worker process: ignore connection errors reported because the parent died."""
    parent = os.getppid()

    def ignored(kind: type[BaseException] | None) -> bool:
        if kind is None or not issubclass(kind, ConnectionError | EOFError):
            return False
        return _parent_gone(parent)

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


def _parent_gone(parent: int, wait: float = 1.0) -> bool:
    """Whether process `parent` has ended, waiting up to `wait` seconds for it to.

    A killed parent closes its sockets (the error we are looking at) a moment before the
    kernel re-parents its children, so the check waits for the end instead of reading
    ``os.getppid()`` once: with a pidfd where there is one (Linux), which needs no polling.
    """
    if os.getppid() != parent:
        return True
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        descriptor = pidfd_open(parent)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        readable, _, _ = select.select([descriptor], [], [], wait)
        return bool(readable)
    finally:
        os.close(descriptor)
