"""The consumer's side of a group of workers: start, watch, receive, report a death, shut down.

A `WorkerGroup` owns the worker processes (or threads) of one consumer (a `PrefetchIterator`,
a `ParallelMapIterator`, a `StatefulDataLoader`'s pool), their queues, semaphores and a stop
event, and shuts all of them down exactly once: from ``close()``, the garbage collection of its
owner, interpreter exit, a dead worker or a broken connection. Exit goes through
``multiprocessing.util.Finalize`` with a high exit priority, which runs in multiprocessing's
atexit hook *before* that hook joins the non-daemonic children (iterator workers are
non-daemonic so that they may start workers of their own): without it, exiting with an unclosed
iterator would hang on that join. A group is inert in a forked child, and `track` makes owners
forget the workers of their parent after a fork, so a copy never reads from its original's
queues.

Receiving polls the channel every `POLL_SECONDS` and checks between polls that every worker is
alive, so a worker killed by a signal (or the out-of-memory killer) raises `WorkerDied` within
about that time, never a hang. An IPC error while a message is decoded (torch hands tensors
over through a connection to the sending worker, which fails when that worker died) is turned
into the same `WorkerDied` report, with the group shut down.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import resource_tracker
from multiprocessing.context import BaseContext
from typing import Any, Protocol

from .channels import POLL_SECONDS, Receiver
from .context import ForWorker
from .messages import Relayed, Reply
from .slabs import Slab, SlabReader, make_slab
from .watch import ParentWatch

__all__ = ["JOIN_SECONDS", "WorkerDied", "WorkerGroup", "death_report"]
#: How long `WorkerGroup.shutdown` waits for a worker to stop by itself, then after SIGTERM.
JOIN_SECONDS = 1.0
#: Exit priority of the finalizers: above those of multiprocessing's queues (10).
EXIT_PRIORITY = 100

logger = logging.getLogger("checkpointable")


class WorkerDied(RuntimeError):
    """A worker process was killed or ended before it was told to stop."""


class _Event(Protocol):
    def is_set(self) -> bool: ...

    def set(self) -> None: ...

    def wait(self, timeout: float | None = ...) -> bool: ...


class SharedFlag:
    """The stop event of a process group: one byte of shared memory, set and read without a
    lock, so that a process SIGKILLed at any point leaves nothing held.

    A multiprocessing ``Event`` guards its flag with a process-shared lock, and its ``set()``
    holds that lock until every waiter has woken: a consumer killed meanwhile leaves it held,
    and its worker, waking from ``wait()`` or checking the flag, blocks forever (an orphan).
    `wait` here looks at the flag every `FLAG_POLL_SECONDS` instead.
    """

    def __init__(self, context: BaseContext) -> None:
        self._flag = context.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag.value:
            left = FLAG_POLL_SECONDS if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, FLAG_POLL_SECONDS))
        return True


#: How often `SharedFlag.wait` looks at the flag (what a worker's exit may lag its stop).
FLAG_POLL_SECONDS = 0.01


def death_report(label: str, index: int, pid: int | None, exitcode: int) -> str:
    """Why worker `index` ended, in torch's words first (users grep their logs for them)."""
    if exitcode < 0:
        number = -exitcode
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        text = (
            f"{label} worker (pid {pid}) is killed by signal: {signal.strsignal(number) or name}. "
            f"It was worker {index}, killed by {name}."
        )
        if number == signal.SIGKILL:
            text += " The out-of-memory killer sends SIGKILL: check the memory the workers use."
        elif number == signal.SIGBUS:
            text += " Often too little shared memory, e.g. a small /dev/shm in a container."
        return text
    return (
        f"{label} worker (pid {pid}) exited unexpectedly with exit code {exitcode}. It was "
        f"worker {index}."
    )


def _out_of_descriptors(error: BaseException) -> bool:
    """Whether `error` came from running out of file descriptors: EMFILE, or a hand-over of
    descriptors that the kernel truncated because this process is (nearly) at its limit."""
    if isinstance(error, OSError) and error.errno == errno.EMFILE:
        return True
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        used = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError):
        return False
    return limit != resource.RLIM_INFINITY and used >= limit - 16


def _emfile_error(error: BaseException) -> RuntimeError:
    return RuntimeError(
        "Too many open files. Communication with the workers is no longer possible. Please "
        "increase the limit using `ulimit -n` in the shell or change the sharing strategy by "
        "calling `torch.multiprocessing.set_sharing_strategy('file_system')` at the beginning "
        f"of your code. ({error})"
    )


class WorkerGroup:
    """The worker processes or threads of one consumer, their queues and their stop event.

    Args:
        owner: the consumer's class name, for messages.
        context: a multiprocessing context, or None for threads.
        label: the name of the workers in a death report (torch's "DataLoader" for a loader).
        epilogue: appended to a death report (what the consumer does next).
        daemon: start daemonic processes (they cannot have children of their own).
    """

    def __init__(
        self,
        owner: str,
        context: BaseContext | None,
        *,
        label: str | None = None,
        epilogue: str = "",
        daemon: bool = False,
    ) -> None:
        self.owner = owner
        self.context = context
        self.label = label or owner
        self.epilogue = epilogue
        self.daemon = daemon
        self.pid = os.getpid()
        if context is not None and context.get_start_method() != "fork":
            # Named semaphores of spawn and forkserver contexts are unlinked by multiprocessing's
            # resource tracker if this process is killed, but only once registered with it:
            # started lazily, at the first one, the tracker takes milliseconds to come up, and a
            # SIGKILL meanwhile left that semaphore in /dev/shm for good.
            resource_tracker.ensure_running()
        self.stop: _Event = threading.Event() if context is None else SharedFlag(context)
        self.processes: list[Any] = []  # closed at shutdown: ask `pids`, not them
        self._pids: list[int] = []
        self.threads: list[threading.Thread] = []
        self._queues: list[Any] = []  # multiprocessing queues, closed at shutdown
        self._sentinels: list[tuple[Any, int]] = []  # (queue, count): Nones put at shutdown
        self._drained: list[Any] = []  # queues emptied at shutdown
        self._released: list[tuple[Any, int]] = []  # (semaphore, count): released at shutdown
        self._finalizer: Any = None  # see attach
        self._finished = False
        self._reader = SlabReader()  # the slabs of `slab`, and the decoding of their messages
        self._receivers: dict[int, Receiver] = {}  # id(channel) -> its reader in this process

    @property
    def finished(self) -> bool:
        """Whether the group was shut down."""
        return self._finished

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

    def slab(self, key: int) -> Slab | None:
        """Shared memory for worker process `key` to hand tensors over (see `slabs`): pass it
        to the worker (an argument of `start`), and messages decoded by `receive` and `loads`
        get their tensors from it. None for threads, or where none can be made."""
        if self.context is None:
            return None
        made = make_slab(self.context.get_start_method() == "fork")
        if made is not None:
            self._reader.add(key, made)
        return made

    def loads(self, raw: bytes) -> Any:
        """Unpickle a message of a worker (its tensors may lie in a slab)."""
        return self._reader.loads(raw)

    def start(self, target: Callable[..., None], args: tuple[Any, ...], count: int = 1) -> None:
        """Start `count` workers running ``target(*args, watch)`` (watch None for threads);
        a `ForWorker` argument is made for each process (a pickle under spawn and forkserver).

        Raises:
            TypeError: a `ForWorker` argument cannot be pickled for a process.
        """
        name = f"checkpointable-{self.owner}"
        context = self.context
        for _ in range(count):
            index = len(self.processes) + len(self.threads)
            own = tuple(a.for_process(context) if isinstance(a, ForWorker) else a for a in args)
            if context is None:
                self.start_thread(target, (*own, None), f"{name}-{index}")
                continue
            watch = ParentWatch(direct=context.get_start_method() != "forkserver")
            process = context.Process(  # type: ignore[attr-defined]
                target=target, args=(*own, watch), name=f"{name}-{index}", daemon=self.daemon
            )
            process.start()
            self.processes.append(process)
            self._pids.append(process.pid)
            for arg in own:  # the worker has its own descriptor (or mapping) now
                if isinstance(arg, Slab):
                    arg.close_fd()

    def start_thread(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        """Start a daemon thread in this process (a worker, or a relay)."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    @property
    def pids(self) -> list[int]:
        """The process ids of the worker processes."""
        return list(self._pids)

    def receive(self, channel: Any, decode: bool, timeout: float = 0.0) -> Any:
        """The next message of `channel` (unpickled if `decode`; a `Reply` sent as its wire
        tuple is a `Reply` again either way).

        Raises:
            WorkerDied: a worker died meanwhile, or the connection to it broke while its
                message was decoded (the group is then shut down).
            RuntimeError: no message came within `timeout` seconds (when > 0), or too many
                open files (the group is then shut down).
        """
        deadline = time.monotonic() + timeout if timeout > 0 else None
        get = self._receivers.get(id(channel))
        if get is None or get.channel is not channel:
            get = self._receivers[id(channel)] = Receiver(channel)
        while True:
            wait = POLL_SECONDS
            if deadline is not None:
                wait = max(min(wait, deadline - time.monotonic()), 0.0)
            try:
                message = get(wait)
            except queue.Empty:
                dead = self._dead_worker()
                if dead is not None:
                    try:  # a message sent just before the worker ended
                        message = get(POLL_SECONDS)
                    except queue.Empty:
                        self._died(dead)
                elif deadline is not None and time.monotonic() >= deadline:
                    self.shutdown()
                    raise RuntimeError(f"{self.label} timed out after {timeout} seconds") from None
                else:
                    continue
            if type(message) is Relayed:
                self._broken(message.error)
            if not decode:  # decoded by the queue already (a `Reply` pickled as its wire tuple)
                return Reply.unwire(message)
            try:
                return self._reader.loads(message)
            except Exception as error:
                self._broken(error)

    def check(self) -> None:
        """Raise `WorkerDied` if a worker ended before it was told to stop (a pool could go on
        with fewer workers: we never let it degrade silently)."""
        dead = self._dead_worker()
        if dead is not None:
            self._died(dead)

    def _dead_worker(self) -> Any:
        if self._finished:
            return None  # stopped, not dead
        for process in self.processes:
            if process.exitcode is not None:
                return process
        for thread in self.threads:
            if not thread.is_alive():
                return thread
        return None

    def _died(self, worker: Any, cause: BaseException | None = None) -> None:
        """Shut the group down and raise `WorkerDied` for `worker`."""
        if isinstance(worker, threading.Thread):
            text = f"{self.owner}: its thread {worker.name} ended unexpectedly"
        else:
            index = self.processes.index(worker)
            text = death_report(self.label, index, worker.pid, worker.exitcode)
        self.shutdown()
        raise WorkerDied(text + self.epilogue) from cause

    def _broken(self, error: BaseException) -> None:
        """A message could not be received: report the worker that died, or the error."""
        if _out_of_descriptors(error):
            self.shutdown()
            raise _emfile_error(error) from error
        if isinstance(error, OSError | EOFError | RuntimeError):  # a hand-over from a worker
            # that is dying: wait (blocking on the processes' sentinels) for it to be reported
            sentinels = [] if self._finished else [process.sentinel for process in self.processes]
            ready = (
                multiprocessing.connection.wait(sentinels, 2 * JOIN_SECONDS) if sentinels else []
            )
            for process in self.processes:
                if process.sentinel in ready:  # its end is being reported: wait to reap it
                    process.join(JOIN_SECONDS)
            dead = self._dead_worker()
            if dead is not None:
                self._died(dead, error)
            if not isinstance(error, RuntimeError):
                self.shutdown()
                raise WorkerDied(
                    f"{self.owner}: the connection to a worker broke while receiving from it "
                    f"({type(error).__name__}: {error})"
                ) from error
        self.shutdown()
        raise error

    def shutdown(self, thread_timeout: float | None = JOIN_SECONDS) -> None:
        """Stop every worker: ask, wait, then SIGTERM, then SIGKILL; close the queues.

        Threads cannot be killed: they are waited for `thread_timeout` seconds (None: until
        they end) and, if still busy, left to end by themselves (they are daemon threads).
        """
        if self._finished or self.pid != os.getpid():
            return
        self._finished = True
        self.stop.set()
        for channel, count in self._sentinels:
            for _ in range(count):
                try:
                    channel.put(None)
                except (OSError, ValueError):  # already closed
                    break
        for channel in self._drained:
            _drain(channel)
        for slots, count in self._released:
            for _ in range(count):
                slots.release()
        forced = self._join_processes()
        for thread in self.threads:
            if thread is threading.current_thread():
                continue
            thread.join(thread_timeout)
            if thread.is_alive():
                logger.warning(
                    "%s: thread %s is still running after %s s; it ends after its current item",
                    self.owner,
                    thread.name,
                    thread_timeout,
                )
        for process in self.processes:  # its sentinel's pipe, now (ended: joined or killed)
            with contextlib.suppress(ValueError):
                process.close()
        # A thread still running may still read a pipe: its descriptors go with the queues then.
        idle = not any(thread.is_alive() for thread in self.threads)
        for channel in self._queues:
            if forced:  # a killed reader may have left data in the pipe: do not wait for it
                channel.cancel_join_thread()
            channel.close()
            channel.join_thread()
            if idle:  # now, not when the last reference to the queue goes (an epoch's iterator)
                _close_pipe(channel)
        self._reader.close()  # what batches still use stays mapped until they are gone

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


def _close_pipe(channel: Any) -> None:
    """Close this process's ends of a closed multiprocessing queue's pipe. A queue that
    started a feeder thread here (a `put`) has it close them when it ends, and
    `Queue.close` does nothing more: only the ends of a queue without one are closed here."""
    if getattr(channel, "_thread", None) is not None:
        return
    for end in (channel._reader, channel._writer):
        with contextlib.suppress(OSError):
            end.close()


def _drain(channel: Any) -> None:
    """Empty `channel` without waiting, so that a worker blocked on a full queue sees the stop."""
    try:
        while True:
            channel.get_nowait()
    except (queue.Empty, OSError, EOFError, ValueError):
        pass
