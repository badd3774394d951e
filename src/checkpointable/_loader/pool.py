"""The worker processes of a loader: torch's rules on top of the one worker runtime.

`WorkerPool` starts `num_workers` daemon processes (as torch's) running `worker.worker_loop`
through a `WorkerGroup` of ``checkpointable._runtime``, which owns their start, the watch on
this process, liveness checks, death reports, IPC errors and shutdown. What is the loader's:
one task queue per worker and one shared result queue, the generation counter that lets
workers skip the tasks of an abandoned epoch, the start-up handshake (an error of
``worker_init_fn`` is raised by ``iter(loader)``, as torchdata does), and pinning in a relay
thread. Each worker gets a slab of the group (``checkpointable._runtime.slabs``): the tensors
of its batches arrive through reused shared memory, not one descriptor hand-over each.
"""

from __future__ import annotations

import multiprocessing
import queue
from functools import partial
from multiprocessing.context import BaseContext
from typing import Any

from torch.utils.data._utils.pin_memory import pin_memory

from .._runtime.channels import Sender, relay
from .._runtime.context import ForWorker
from .._runtime.group import WorkerGroup
from .._runtime.messages import Kind, Reply, Task
from .worker import WorkerSpec, worker_loop

__all__ = ["WorkerPool"]


class WorkerPool:
    """`num_workers` worker processes serving one loader (persistent) or one epoch.

    Args:
        spec: what each worker needs (dataset, collate_fn, seeds...).
        num_workers: number of processes, >= 1.
        context: a multiprocessing context or start method name, or None for the platform's
            default start method, as torch's DataLoader.
        timeout: seconds to wait for a batch before raising, 0 for no limit.
        pin_device: the accelerator type to pin batches for in a thread, or None.

    Raises:
        TypeError: the spec cannot be pickled for a ``spawn`` or ``forkserver`` worker.
        RuntimeError: a worker's ``worker_init_fn`` failed (torch's message, with the worker's
            traceback), or a worker died while starting.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        num_workers: int,
        context: Any,
        timeout: float,
        pin_device: str | None,
    ) -> None:
        ctx = context if isinstance(context, BaseContext) else multiprocessing.get_context(context)
        self.num_workers = num_workers
        self._timeout = timeout
        group = WorkerGroup("StatefulDataLoader", ctx, label="DataLoader", daemon=True)
        self._group = group
        payload = ForWorker(
            "StatefulDataLoader", "the dataset, collate_fn and worker_init_fn", spec
        )
        self._results = group.queue()
        self._generation_value = ctx.Value("q", 0, lock=False)
        self.generation = 0
        self._queues = [group.queue(sentinels=1) for _ in range(num_workers)]
        self._senders = [Sender(tasks) for tasks in self._queues]
        group.attach(self)
        self._source: Any = self._results
        try:
            for worker_id, tasks in enumerate(self._queues):
                slab = group.slab(worker_id)
                args = (payload, worker_id, tasks, self._results, self._generation_value, slab)
                group.start(worker_loop, args)
            self._wait_ready()
        except BaseException:
            group.close()
            raise
        if pin_device is not None:
            pinned: queue.Queue[Any] = group.queue(local=True)
            convert = partial(_pin_reply, device=pin_device)
            group.start_thread(
                relay,
                (self._results, pinned, group.stop, convert, group.loads),
                "checkpointable-pin-memory",
            )
            self._source = pinned

    def _wait_ready(self) -> None:
        """Wait until every worker ran its start-up; raise the first worker's failure."""
        failures: dict[int, Any] = {}
        ready = 0
        while ready < self.num_workers:
            reply = self._group.receive(self._results, True)
            if reply.kind is Kind.READY:
                ready += 1
                if reply.failure is not None:
                    failures[reply.worker] = reply.failure
        if failures:
            self._group.close()
            failures[min(failures)].reraise()

    @property
    def alive(self) -> bool:
        """Whether the pool has not been shut down and all its workers are running."""
        return not self._group.finished and all(
            process.exitcode is None for process in self._group.processes
        )

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers."""
        return self._group.pids

    def begin_epoch(self, starts: list[Any]) -> int:
        """Start a new generation of tasks; `starts[w]` tells worker w how to begin the epoch."""
        self.generation += 1
        self._generation_value.value = self.generation
        for send, start in zip(self._senders, starts, strict=True):
            send((-1, self.generation, start, True))
        return self.generation

    def send(self, worker_id: int, task_id: int, payload: Any) -> None:
        """Ask worker `worker_id` for the batch of task `task_id` of the current generation."""
        task: Task = (task_id, self.generation, payload, False)
        self._senders[worker_id](task)

    def receive(self) -> Reply:
        """Wait for the next reply of any worker.

        Raises:
            WorkerDied: a worker died (torch's "DataLoader worker (pid N) is killed by signal"
                message), or the pin-memory thread died; the pool is then shut down.
            RuntimeError: no reply came within ``timeout`` seconds (when it is > 0).
        """
        decode = self._source is self._results
        reply: Reply = self._group.receive(self._source, decode, self._timeout)
        return reply

    def check_alive(self) -> None:
        """Raise (after shutting the pool down) if a worker or the pin-memory thread died."""
        self._group.check()

    def shutdown(self) -> None:
        """Stop the workers and the pin-memory thread and close the queues (idempotent)."""
        self._group.close()


def _pin_reply(reply: Reply, device: str) -> Reply:
    """Move a batch to pinned memory (in the relay thread of the main process)."""
    if reply.kind is Kind.ITEMS and reply.failure is None:
        reply.data = pin_memory(reply.data, device)
    return reply
