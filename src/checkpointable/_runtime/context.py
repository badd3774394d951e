"""Choosing how workers start, and what is sent to them: start methods, threads, pickling.

A worker runs in a process started by a multiprocessing context (fork, spawn, forkserver) or
in a thread of the consumer's process. What a process worker needs is pickled here, in the
consumer, before the process starts, so an unpicklable dataset or function is a clear
`TypeError` naming the argument and the fix. After a fork, `track`-ed owners forget the
workers of their parent.
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
import weakref
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from .._errors import ArgumentTypeError
from .messages import dumps

__all__ = ["ForWorker", "check_context", "resolve_context", "track"]


def check_context(owner: str, value: Any) -> Any:
    """Validate `multiprocessing_context`: None, a start method name or a context object."""
    if value is None or isinstance(value, BaseContext):
        return value
    methods = multiprocessing.get_all_start_methods()
    if isinstance(value, str):
        if value not in methods:
            raise ValueError(
                f"{owner}: multiprocessing_context must be None, a start method in {methods} "
                f"or a multiprocessing context, got multiprocessing_context={value!r}"
            )
        return value
    raise ArgumentTypeError(
        f"{owner}: multiprocessing_context must be None, a start method name or a "
        f"multiprocessing context, got {value!r} ({type(value).__name__})"
    )


def resolve_context(
    owner: str, value: Any, use_threads: bool, stacklevel: int = 2
) -> BaseContext | None:
    """The context to start workers with, or None for threads.

    A daemonic process (a torch DataLoader worker, a multiprocessing pool worker) may not have
    children: there the workers run in threads, with a warning saying so.
    """
    if use_threads:
        return None
    if multiprocessing.current_process().daemon:
        warnings.warn(
            f"{owner}: this is a daemonic process (e.g. a torch DataLoader worker), which cannot "
            "start worker processes; the workers run in threads instead (same output and "
            "state). Pass use_threads=True to choose threads explicitly.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
        return None
    if isinstance(value, BaseContext):
        return value
    context: BaseContext = multiprocessing.get_context(value)
    return context


@dataclass(frozen=True)
class ForWorker:
    """An argument of a worker that `WorkerGroup.start` passes as `for_worker` makes it, once
    per process: a pickle that holds torch tensors hands their shared memory over once, so one
    pickle must not be read by two processes.

    Attributes:
        owner: the consumer's class name, for messages.
        name: what the value is, for messages ("transform", "source_iterator", ...).
        value: the value itself.
    """

    owner: str
    name: str
    value: Any

    def for_process(self, context: BaseContext | None) -> Any:
        return for_worker(self.owner, self.name, self.value, context)


def for_worker(owner: str, name: str, value: Any, context: BaseContext | None) -> Any:
    """`value` as passed to a worker: itself for threads and fork, else its pickle.

    Pickling here rather than in ``Process.start()`` turns an unpicklable value into a clear
    `TypeError` naming the argument and the fix.
    """
    if context is None or context.get_start_method() == "fork":
        return value
    try:
        return dumps(value)
    except Exception as error:
        raise TypeError(
            f"{owner}: {name} must be picklable to be sent to a "
            f"{context.get_start_method()!r} worker process, but pickling failed: {error}. "
            "Define its functions and classes at module level (def, not lambda or nested "
            "functions), or use multiprocessing_context='fork' where available"
        ) from error


_TRACKED: weakref.WeakSet[Any] = weakref.WeakSet()


def track(owner: Any) -> None:
    """Have ``owner._forget_workers()`` called in the child after a fork of this process."""
    _TRACKED.add(owner)


def _forget_in_child() -> None:
    for owner in list(_TRACKED):
        owner._forget_workers()
    _TRACKED.clear()


os.register_at_fork(after_in_child=_forget_in_child)
