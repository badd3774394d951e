"""The worker processes of a loader, their queues, the pin-memory thread, and their shutdown.

`WorkerPool` starts `num_workers` daemon processes running `worker.worker_loop`, each with its
own task queue and all sharing one result queue (``torch.multiprocessing`` queues, so tensors
travel through shared memory). The main process waits for results in slices of `POLL` seconds
and checks between slices that every worker is alive, so a worker killed by a signal or by the
out-of-memory killer raises a clear error within about a second (or within ``timeout``), never a
hang. Shutdown is registered with `weakref.finalize`, so it also runs when the pool is garbage
collected (``del loader``, an exception in the training loop) and at interpreter exit; it asks
the workers to exit, then terminates those that do not, and closes every queue.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import signal
import threading
import time
import warnings
import weakref
from typing import Any

import torch
import torch.multiprocessing
from torch._utils import ExceptionWrapper
from torch.utils.data._utils.pin_memory import pin_memory

from .worker import BATCH, EPOCH, ERROR, TASK, WorkerSpec, worker_loop

__all__ = ["POLL", "WorkerPool"]

#: Seconds between liveness checks while the main process waits for a batch.
POLL = 1.0
#: Seconds given to workers (and the pin-memory thread) to exit before they are terminated.
JOIN = 2.0


class WorkerPool:
    """`num_workers` worker processes serving one loader (persistent) or one epoch.

    Args:
        spec: what each worker needs (dataset, collate_fn, seeds...).
        num_workers: number of processes, >= 1.
        context: a multiprocessing context, or None for ``torch.multiprocessing`` (the
            platform's default start method), as torch's DataLoader.
        timeout: seconds to wait for a batch before raising, 0 for no limit.
        pin_device: the accelerator type to pin batches for in a thread, or None.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        num_workers: int,
        context: Any,
        timeout: float,
        pin_device: str | None,
    ) -> None:
        ctx: Any = context if context is not None else torch.multiprocessing
        self.num_workers = num_workers
        self._timeout = timeout
        self._results = ctx.Queue()
        self._generation_value = ctx.Value("q", 0, lock=False)
        self.generation = 0
        self._queues: list[Any] = []
        self._processes: list[Any] = []
        self._pinned: queue.Queue[Any] | None = None
        self._pin_stop: threading.Event | None = None
        self._pin_thread: threading.Thread | None = None
        self._finalizer = weakref.finalize(
            self, _shutdown, self._processes, self._queues, self._results, [None, None]
        )
        try:
            for worker_id in range(num_workers):
                tasks = ctx.Queue()
                tasks.cancel_join_thread()  # never wait at exit for tasks nobody will read
                process = ctx.Process(
                    target=worker_loop,
                    args=(spec, worker_id, tasks, self._results, self._generation_value),
                    daemon=True,
                )
                try:
                    process.start()
                except (TypeError, AttributeError, pickle.PicklingError):
                    method = ctx.get_start_method() if hasattr(ctx, "get_start_method") else "?"
                    warnings.warn(
                        f"StatefulDataLoader: could not start a worker under the {method!r} start "
                        "method: the dataset, collate_fn and worker_init_fn must be picklable "
                        "(module-level functions and classes, no lambdas), or use "
                        "multiprocessing_context='fork' where available",
                        stacklevel=4,
                    )
                    raise
                self._queues.append(tasks)
                self._processes.append(process)
        except BaseException:
            self.shutdown()
            raise
        if pin_device is not None:
            self._start_pin_thread(pin_device)

    def _start_pin_thread(self, device: str) -> None:
        self._pinned = queue.Queue()
        self._pin_stop = threading.Event()
        self._pin_thread = threading.Thread(
            target=_pin_loop,
            args=(self._results, self._pinned, self._pin_stop, device),
            name="checkpointable-pin-memory",
            daemon=True,
        )
        self._pin_thread.start()
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self,
            _shutdown,
            self._processes,
            self._queues,
            self._results,
            [self._pin_stop, self._pin_thread],
        )

    @property
    def alive(self) -> bool:
        """Whether the pool has not been shut down and all its workers are running."""
        return self._finalizer.alive and all(p.exitcode is None for p in self._processes)

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return [process.pid for process in self._processes]

    def begin_epoch(self, starts: list[Any]) -> int:
        """Start a new generation of tasks; `starts[w]` tells worker w how to begin the epoch."""
        self.generation += 1
        self._generation_value.value = self.generation
        for tasks, start in zip(self._queues, starts, strict=True):
            tasks.put((EPOCH, self.generation, start))
        return self.generation

    def send(self, worker_id: int, task_id: int, payload: Any) -> None:
        """Ask worker `worker_id` for the batch of task `task_id` of the current generation."""
        self._queues[worker_id].put((TASK, self.generation, task_id, payload))

    def receive(self) -> tuple[Any, ...]:
        """Wait for the next reply of any worker.

        Raises:
            RuntimeError: a worker died, the pin-memory thread died, or no reply came within
                ``timeout`` seconds (when it is > 0).
        """
        timeout = self._timeout
        deadline = time.monotonic() + timeout if timeout > 0 else None
        source = self._pinned if self._pinned is not None else self._results
        while True:
            wait = POLL if deadline is None else max(min(POLL, deadline - time.monotonic()), 0)
            try:
                message = source.get(timeout=wait)
            except queue.Empty:
                self.check_alive()
                if deadline is not None and time.monotonic() >= deadline:
                    self.shutdown()
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
                continue
            return message if self._pinned is not None else pickle.loads(message)

    def check_alive(self) -> None:
        """Raise (after shutting the pool down) if a worker or the pin-memory thread died."""
        for worker_id, process in enumerate(self._processes):
            if process.exitcode is not None:
                message = _death_message(worker_id, process.pid, process.exitcode)
                self.shutdown()
                raise RuntimeError(message)
        if self._pin_thread is not None and not self._pin_thread.is_alive():
            self.shutdown()
            raise RuntimeError("DataLoader's pin memory thread exited unexpectedly")

    def shutdown(self) -> None:
        """Stop the workers and the pin-memory thread and close the queues (idempotent)."""
        self._finalizer()


def _death_message(worker_id: int, pid: int, exitcode: int) -> str:
    text = (
        f"DataLoader worker {worker_id} (pid {pid}) exited unexpectedly with exit code {exitcode}"
    )
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        text += f": it was killed by {name}"
        if -exitcode == signal.SIGKILL:
            text += " (the out-of-memory killer sends SIGKILL: check the memory it used)"
        elif -exitcode == signal.SIGBUS:
            text += " (often too little shared memory, e.g. a small /dev/shm in a container)"
    return text


def _pin_loop(source: Any, sink: queue.Queue[Any], stop: threading.Event, device: str) -> None:
    """Move each batch from the result queue to pinned memory, in a thread of the main process."""
    torch.set_num_threads(1)
    where = f"in the pin memory thread for device {device}"
    while not stop.is_set():
        try:
            raw = source.get(timeout=POLL)
        except queue.Empty:
            continue
        except (OSError, EOFError, ValueError):  # the queue was closed: the pool is shutting down
            return
        message: Any = None
        try:
            message = pickle.loads(raw)
            if message[3] == BATCH:
                message = (*message[:4], pin_memory(message[4], device), *message[5:])
        except Exception:
            head = message[:3] if isinstance(message, tuple) else (0, -1, -1)
            message = (*head, ERROR, ExceptionWrapper(where=where), None, False)
        sink.put(message)


def _shutdown(processes: list[Any], queues: list[Any], results: Any, pin: list[Any]) -> None:
    """Ask the workers to exit, terminate those that do not, stop the pin thread, close queues."""
    stop, thread = pin
    if stop is not None:
        stop.set()
    for tasks in queues:
        with contextlib.suppress(OSError, ValueError):
            tasks.put(None)
    if thread is not None:
        thread.join(timeout=JOIN)
    deadline = time.monotonic() + JOIN
    for process in processes:
        process.join(timeout=max(deadline - time.monotonic(), 0.0))
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=JOIN)
        if process.is_alive():
            process.kill()
            process.join()
    for tasks in queues:
        tasks.cancel_join_thread()
        tasks.close()
    results.cancel_join_thread()
    results.close()
