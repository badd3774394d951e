"""The consumer's side of the workers of `PrefetchIterator` and `ParallelMapIterator`.

A `WorkerGroup` owns the worker processes (or threads) of one iterator, their queues and a stop
event, and shuts all of them down exactly once: from ``close()``, ``setstate()``, the garbage
collection of the iterator, or interpreter exit. The last two go through
``multiprocessing.util.Finalize`` with a high exit priority, which runs in multiprocessing's
atexit hook *before* that hook joins the non-daemonic children (our workers are non-daemonic so
that they may start workers of their own): without it, exiting with an unclosed iterator would
hang on that join. A finalizer is inert in a forked child, and `track` makes iterators forget
the workers of their parent after a fork, so a copy never reads from its original's queues.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import os
import pickle
import queue
import signal
import threading
import time
import warnings
import weakref
from multiprocessing.context import BaseContext
from typing import Any

from .._errors import ArgumentTypeError
from ._workers import POLL_SECONDS, Lifeline, dumps

__all__ = [
    "JOIN_SECONDS",
    "WorkerDied",
    "WorkerGroup",
    "check_context",
    "check_flag",
    "closed_error",
    "for_worker",
    "resolve_context",
    "track",
]

#: How long `WorkerGroup.shutdown` waits for a worker to stop by itself, then after SIGTERM.
JOIN_SECONDS = 1.0
#: Exit priority of the finalizers: above those of multiprocessing's queues (10).
EXIT_PRIORITY = 100

logger = logging.getLogger("checkpointable")


class WorkerDied(RuntimeError):
    """A worker process was killed or ended before it was told to stop."""


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


def closed_error(owner: str) -> RuntimeError:
    """The error of ``next()`` and ``setstate()`` after ``close()``, as in infinibatch."""
    return RuntimeError(
        f"{owner} has been closed; build a new pipeline and load a state into it to continue"
    )


def check_flag(owner: str, name: str, value: Any) -> bool:
    """Return `value` if it is a bool, else raise `ArgumentTypeError`."""
    if not isinstance(value, bool):
        raise ArgumentTypeError(f"{owner}: {name} must be a bool, got {value!r}")
    return value


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
    return multiprocessing.get_context(value)


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
            "Define its functions at module level (def, not lambda or nested functions), or "
            "pass use_threads=True (or multiprocessing_context='fork')"
        ) from error


_TRACKED: weakref.WeakSet[Any] = weakref.WeakSet()


def track(iterator: Any) -> None:
    """Have `iterator._forget_workers()` called in the child after a fork of this process."""
    _TRACKED.add(iterator)


def _forget_in_child() -> None:
    for iterator in list(_TRACKED):
        iterator._forget_workers()
    _TRACKED.clear()


os.register_at_fork(after_in_child=_forget_in_child)


class WorkerGroup:
    """The worker processes or threads of one iterator, their queues and their stop event.

    Args:
        owner: the iterator's class name, for messages.
        context: a multiprocessing context, or None for threads.
    """

    def __init__(self, owner: str, context: BaseContext | None) -> None:
        self.owner = owner
        self.context = context
        self.pid = os.getpid()
        self.stop: Any = threading.Event() if context is None else context.Event()
        self.processes: list[Any] = []
        self.threads: list[threading.Thread] = []
        self._queues: list[Any] = []  # multiprocessing queues, closed at shutdown
        self._sentinels: list[tuple[Any, int]] = []  # (queue, count): Nones put at shutdown
        self._drained: list[Any] = []  # queues emptied at shutdown
        self._released: list[tuple[Any, int]] = []  # (semaphore, count): released at shutdown
        self._lifeline: tuple[Any, Any] | None = None  # (reader, writer), see Lifeline
        self._finalizer: Any = None  # see attach
        self._finished = False

    def queue(
        self, maxsize: int = 0, *, sentinels: int = 0, drain: bool = False, local: bool = False
    ) -> Any:
        """A queue between workers and consumer (a thread queue if `local` or for threads).

        At shutdown, `sentinels` Nones are put into it (to end workers waiting on it), and a
        `drain` queue is emptied (to free a worker blocked on putting into it at once).
        """
        channel: Any
        if local or self.context is None:
            channel = queue.Queue(maxsize)
        else:
            channel = self.context.Queue(maxsize)
            self._queues.append(channel)
        if sentinels:
            self._sentinels.append((channel, sentinels))
        if drain:
            self._drained.append(channel)
        return channel

    def semaphore(self, value: int) -> Any:
        """A semaphore shared with the workers; released `value` times at shutdown, so that a
        worker waiting on it sees the stop at once."""
        slots: Any = (
            threading.Semaphore(value) if self.context is None else self.context.Semaphore(value)
        )
        self._released.append((slots, value))
        return slots

    def start(self, target: Any, args: tuple[Any, ...], count: int = 1) -> None:
        """Start `count` workers running ``target(*args, lifeline)`` (None for threads)."""
        name = f"checkpointable-{self.owner}"
        for index in range(count):
            if self.context is None:
                self.start_thread(target, (*args, None), f"{name}-{index}")
            else:
                if self._lifeline is None:
                    self._lifeline = self.context.Pipe(duplex=False)
                lifeline = Lifeline(self._lifeline[0])
                process = self.context.Process(  # type: ignore[attr-defined]
                    target=target, args=(*args, lifeline), name=f"{name}-{index}", daemon=False
                )
                process.start()
                self.processes.append(process)

    def start_thread(self, target: Any, args: tuple[Any, ...], name: str) -> None:
        """Start a daemon thread in this process (a worker, or the prefetch fetcher)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def receive(self, channel: Any, decode: bool) -> Any:
        """The next message of `channel`; raise `WorkerDied` if a worker died meanwhile."""
        while True:
            try:
                message = channel.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = self._dead_worker()
                if dead is None:
                    continue
                try:  # a message sent just before the worker ended
                    message = channel.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    raise WorkerDied(self._death(dead)) from None
            return pickle.loads(message) if decode else message

    def check(self) -> None:
        """Raise `WorkerDied` if a worker ended before it was told to stop (a pool could go on
        with fewer workers: we never let it degrade silently)."""
        dead = self._dead_worker()
        if dead is not None:
            raise WorkerDied(self._death(dead))

    def _dead_worker(self) -> Any:
        for process in self.processes:
            if process.exitcode is not None:
                return process
        for thread in self.threads:
            if not thread.is_alive():
                return thread
        return None

    def _death(self, worker: Any) -> str:
        if isinstance(worker, threading.Thread):
            return f"{self.owner}: its thread {worker.name} ended unexpectedly"
        code = worker.exitcode
        if code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return (
            f"{self.owner}: its worker process (pid {worker.pid}) {how} before the end of the "
            "stream (killed, or out of memory?); the iterator keeps its last position, from "
            "which the next call restarts the workers"
        )

    def shutdown(self, thread_timeout: float | None = JOIN_SECONDS) -> None:
        """Stop every worker: ask, wait, then SIGTERM, then SIGKILL; close the queues.

        Threads cannot be killed: they are waited for `thread_timeout` seconds (None: until
        they end) and, if still busy in the source pipeline, left to end by themselves (they
        are daemon threads and stop at their next item).
        """
        if self._finished or self.pid != os.getpid():
            return
        self._finished = True
        self.stop.set()
        for channel, count in self._sentinels:
            for _ in range(count):
                channel.put(None)
        for channel in self._drained:
            _drain(channel)
        for slots, count in self._released:
            for _ in range(count):
                slots.release()
        forced = self._join_processes()
        if self._lifeline is not None:
            for end in self._lifeline:
                end.close()
        for thread in self.threads:
            thread.join(thread_timeout)
            if thread.is_alive():
                logger.warning(
                    "%s: thread %s is still running an item after %s s; it ends after that item",
                    self.owner,
                    thread.name,
                    thread_timeout,
                )
        for channel in self._queues:
            if forced:  # a killed reader may have left data in the pipe: do not wait for it
                channel.cancel_join_thread()
            channel.close()
            channel.join_thread()

    def _join_processes(self) -> bool:
        """Join the processes, terminating then killing the late ones; True if any did not
        end normally (it may then have left a queue's pipe half read)."""
        deadline = time.monotonic() + JOIN_SECONDS
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0.0))
        late = [process for process in self.processes if process.exitcode is None]
        for process in late:
            process.terminate()  # SIGTERM: the worker unwinds and closes its own workers
        deadline = time.monotonic() + JOIN_SECONDS
        for process in late:
            process.join(max(deadline - time.monotonic(), 0.0))
            if process.exitcode is None:
                process.kill()
                process.join()
        return any(process.exitcode != 0 for process in self.processes)

    def attach(self, owner_object: Any) -> None:
        """Shut this group down when `owner_object` is collected or at interpreter exit."""
        self._finalizer = multiprocessing.util.Finalize(
            owner_object, self.shutdown, exitpriority=EXIT_PRIORITY
        )

    def close(self, thread_timeout: float | None = JOIN_SECONDS) -> None:
        """`shutdown` now, and forget the finalizer of `attach`."""
        if self._finalizer is not None:
            self._finalizer.cancel()
        self.shutdown(thread_timeout)


def _drain(channel: Any) -> None:
    """Empty `channel` without waiting, so that a worker blocked on a full queue sees the stop."""
    try:
        while True:
            channel.get_nowait()
    except (queue.Empty, OSError, EOFError):
        pass
