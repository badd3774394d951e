"""The worker process: its loop lives at module level so that it pickles under ``spawn``.

A worker seeds its RNGs as torch's workers do (``base_seed + worker_id`` for ``random`` and
``torch``, torch's seed sequence for numpy), sets the information ``get_worker_info()`` returns,
runs ``worker_init_fn``, then serves messages from its own task queue:

- ``(EPOCH, generation, start)``: begin an epoch; `start` says which dataset state to load (map
  style) or how to start each stream this worker reads (iterable style);
- ``(TASK, generation, task_id, payload)``: produce one batch, from an index list (map style) or
  from the stream numbered `payload` (iterable style); a task of an older generation (an epoch
  the main process abandoned) is skipped;
- ``None``: exit.

Each reply is pickled here, in the worker's main thread, so a batch that cannot be pickled is
reported as an error instead of being lost in the queue's feeder thread (a hang). A reply is
``(generation, task_id, worker_id, kind, data, state, exhausted)``: `kind` is `BATCH`, `END`
(the stream has no batch left) or `ERROR` (`data` is then torch's ``ExceptionWrapper`` with the
formatted traceback); `state` is the dataset's or stream's state when one is attached.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import random
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any

import torch
from torch._utils import ExceptionWrapper
from torch.utils.data._utils import HAS_NUMPY
from torch.utils.data._utils import worker as torch_worker

from .._orphan import quiet_when_orphaned
from .sharded import ShardedIterableDataset
from .streams import Stream, fetch_map

__all__ = ["BATCH", "END", "EPOCH", "ERROR", "IDLE_CHECK", "TASK", "WorkerSpec", "worker_loop"]

TASK, EPOCH = 0, 1
BATCH, END, ERROR = 0, 1, 2

#: Seconds between checks that the parent process is still there, while a worker is idle.
IDLE_CHECK = 1.0


@dataclass
class WorkerSpec:
    """What every worker of a loader needs; pickled once per worker at its start."""

    kind: str  # "map", "iterable" or "sharded"
    dataset: Any
    auto_collation: bool
    batch_size: int | None  # iterable styles: items per batch (None: one item, no batching)
    drop_last: bool
    collate_fn: Any
    worker_init_fn: Any
    base_seed: int
    num_workers: int
    snapshot_every: int
    dataset_stateful: bool  # map style: attach the dataset's state to every batch


@dataclass
class StreamStart:
    """How a stream begins an epoch: its state to load (if `load`), batches to skip, ended."""

    state: Any
    load: bool
    replay: int
    ended: bool


def worker_loop(
    spec: WorkerSpec, worker_id: int, tasks: Any, results: Any, generation: Any
) -> None:
    """The body of worker process `worker_id` (see the module's docstring)."""
    # Ctrl-C reaches the whole process group: the main process reports it, the worker just exits.
    with contextlib.suppress(KeyboardInterrupt):
        _Worker(spec, worker_id, results).serve(tasks, generation)


class _Worker:
    def __init__(self, spec: WorkerSpec, worker_id: int, results: Any) -> None:
        self.spec = spec
        self.worker_id = worker_id
        self.results = results
        self.where = f"in DataLoader worker process {worker_id}"
        quiet_when_orphaned()
        torch.set_num_threads(1)
        seed = spec.base_seed + worker_id
        random.seed(seed)
        torch.manual_seed(seed)
        if HAS_NUMPY:
            import numpy

            numpy.random.seed(torch_worker._generate_state(spec.base_seed, worker_id))
        torch_worker._worker_info = torch_worker.WorkerInfo(
            id=worker_id, num_workers=spec.num_workers, seed=seed, dataset=spec.dataset
        )
        self.pending_error: ExceptionWrapper | None = None
        try:
            if spec.worker_init_fn is not None:
                spec.worker_init_fn(worker_id)
        except Exception:
            self.pending_error = ExceptionWrapper(where=self.where)
        self.streams: dict[int, Stream] = {}

    def serve(self, tasks: Any, generation: Any) -> None:
        # The parent's end of a pipe closes when it dies (even before this worker got to run).
        parent = multiprocessing.parent_process()
        parent_pid = os.getppid()
        current = 0
        while True:
            try:
                message = tasks.get(timeout=IDLE_CHECK)
            except queue.Empty:
                if os.getppid() != parent_pid or (parent is not None and not parent.is_alive()):
                    return  # the main process is gone
                continue
            if message is None:
                self.results.cancel_join_thread()  # the main process wants nothing more
                return
            if message[0] == EPOCH:
                current = message[1]
                self._begin(message[2])
                continue
            _, task_generation, task_id, payload = message
            if task_generation != current or task_generation < generation.value:
                continue  # a task of an epoch the main process abandoned
            self._send(task_generation, task_id, self._run(payload))

    def _begin(self, start: Any) -> None:
        """Begin an epoch: load the map-style dataset's state, or start this worker's streams."""
        spec = self.spec
        try:
            if spec.kind == "map":
                if start is not None:
                    spec.dataset.load_state_dict(start)
                return
            self.streams = {}
            for stream_id, how in start.items():
                stream = Stream(
                    spec.batch_size, spec.drop_last, spec.collate_fn, spec.snapshot_every
                )
                self.streams[stream_id] = stream
                if how.ended:
                    continue
                if spec.kind == "sharded":
                    dataset: ShardedIterableDataset = spec.dataset
                    stream.start(
                        dataset.open_shard(stream_id), True, how.state, how.load, how.replay
                    )
                else:
                    stateful = spec.dataset_stateful
                    stream.start(spec.dataset, stateful, how.state, how.load, how.replay)
        except Exception:
            self.pending_error = ExceptionWrapper(where=self.where)

    def _run(self, payload: Any) -> tuple[int, Any, Any, bool]:
        """Produce one task's reply: (kind, data, state, exhausted)."""
        if self.pending_error is not None:
            error, self.pending_error = self.pending_error, None
            return ERROR, error, None, False
        spec = self.spec
        try:
            if spec.kind == "map":
                batch = fetch_map(spec.dataset, payload, spec.auto_collation, spec.collate_fn)
                state = spec.dataset.state_dict() if spec.dataset_stateful else None
                return BATCH, batch, state, False
            stream = self.streams[payload]
            try:
                batch, state, exhausted = stream.next()
            except StopIteration:
                return END, None, stream.final_state(), True
            return BATCH, batch, state, exhausted
        except Exception:
            return ERROR, ExceptionWrapper(where=self.where), None, False

    def _send(self, generation: int, task_id: int, reply: tuple[int, Any, Any, bool]) -> None:
        head = (generation, task_id, self.worker_id)
        try:
            payload = ForkingPickler.dumps((*head, *reply))
        except Exception:
            error = ExceptionWrapper(where=f"{self.where}, while pickling its batch for the queue")
            payload = ForkingPickler.dumps((*head, ERROR, error, None, False))
        self.results.put(bytes(payload))
