"""The worker process: its loop lives at module level so that it pickles under ``spawn``.

A worker seeds its RNGs as torch's workers do (``base_seed + worker_id`` for ``random`` and
``torch``, torch's seed sequence for numpy), sets the information ``get_worker_info()`` returns,
runs ``worker_init_fn`` and replies `Kind.READY` (with the failure of ``worker_init_fn``, if
any), then serves the `Task` messages of its own task queue:

- a task that ``begin``s a generation: begin an epoch; its payload says which dataset state to
  load (map style) or how to start each stream this worker reads (iterable style);
- any other task: produce one batch, from an index list (map style) or from the stream
  numbered by the payload (iterable style); a task of an older generation (an epoch the main
  process abandoned) is skipped;
- ``None``: exit.

Each `Reply` is pickled here, in the worker's main thread, so a batch that cannot be pickled is
reported as an error instead of being lost in the queue's feeder thread (a hang). Its `kind` is
`Kind.ITEMS` (a batch, or a failure: torch's ``ExceptionWrapper`` with the formatted traceback)
or `Kind.END` (the stream has no batch left); its `state` is the dataset's or stream's state
when one is attached.
"""

from __future__ import annotations

import contextlib
import pickle
import queue
import random
from dataclasses import dataclass
from typing import Any

import torch
from torch._utils import ExceptionWrapper
from torch.utils.data._utils import HAS_NUMPY
from torch.utils.data._utils import worker as torch_worker

from .._runtime.channels import POLL_SECONDS, Receiver, Sender
from .._runtime.messages import Encoder, Kind, Reply, Task
from .._runtime.slabs import HandOffEncoder, Slab
from .._runtime.watch import ParentWatch, WorkerStop
from .._state import StateBase
from .batcher import Batcher, fetch_map
from .sharded import ShardedIterableDataset

__all__ = ["WorkerSpec", "worker_loop"]


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
class SourceStart:
    """How a stream begins an epoch: its state to load (if `load`), batches to skip, ended."""

    state: Any
    load: bool
    replay: int
    ended: bool


def worker_loop(
    spec: WorkerSpec | bytes,
    worker_id: int,
    tasks: Any,
    results: Any,
    generation: Any,
    slab: Slab | None,
    watch: ParentWatch,
) -> None:
    """The body of worker process `worker_id` (see the module's docstring); `spec` arrives
    pickled under spawn and forkserver. The tensors of its batches go through `slab` (when
    not None) to the main process."""
    watch.attach(interrupt=True)
    # Ctrl-C reaches the whole process group: the main process reports it, the worker just exits.
    with contextlib.suppress(KeyboardInterrupt, WorkerStop):
        loaded: WorkerSpec = pickle.loads(spec) if isinstance(spec, bytes) else spec
        encode = Encoder() if slab is None else HandOffEncoder(slab, worker_id)
        worker = _Worker(loaded, worker_id, results, encode)
        worker.serve(tasks, generation, watch)
    results.cancel_join_thread()  # the main process wants nothing more
    watch.close()


class _Worker:
    def __init__(self, spec: WorkerSpec, worker_id: int, results: Any, encode: Encoder) -> None:
        self.spec = spec
        self.encode = encode
        self.worker_id = worker_id
        self.results = results
        self.send = Sender(results)
        self.where = f"in DataLoader worker process {worker_id}"
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
        failure = None
        try:
            if spec.worker_init_fn is not None:
                spec.worker_init_fn(worker_id)
        except Exception:
            failure = ExceptionWrapper(where=self.where)
        self.streams: dict[int, Batcher] = {}
        self._send(Reply(Kind.READY, worker=worker_id, failure=failure))

    def serve(self, tasks: Any, generation: Any, watch: ParentWatch) -> None:
        current = 0
        receive = Receiver(tasks)
        while True:
            try:
                message: Task | None = receive(POLL_SECONDS)
            except queue.Empty:
                if watch.gone():
                    return  # the main process is gone
                continue
            if message is None:
                return
            task, task_generation, payload, begin = message
            if begin:
                current = task_generation
                self._begin(payload)
                continue
            if task_generation != current or task_generation < generation.value:
                continue  # a task of an epoch the main process abandoned
            reply = self._run(payload)
            reply.task, reply.worker, reply.generation = task, self.worker_id, current
            self._send(reply)

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
                stream = Batcher(
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

    def _run(self, payload: Any) -> Reply:
        """Produce one task's reply (its task, worker and generation are set by the caller)."""
        if self.pending_error is not None:
            error, self.pending_error = self.pending_error, None
            return Reply(Kind.ITEMS, failure=error)
        spec = self.spec
        try:
            if spec.kind == "map":
                batch = fetch_map(spec.dataset, payload, spec.auto_collation, spec.collate_fn)
                state = StateBase.nested_state(spec.dataset) if spec.dataset_stateful else None
                return Reply(Kind.ITEMS, data=batch, state=state)
            stream = self.streams[payload]
            try:
                batch, state, exhausted = stream.next()
            except StopIteration:
                return Reply(Kind.END, state=stream.final_state(), exhausted=True)
            return Reply(Kind.ITEMS, data=batch, state=state, exhausted=exhausted)
        except Exception:
            return Reply(Kind.ITEMS, failure=ExceptionWrapper(where=self.where))

    def _send(self, reply: Reply) -> None:
        try:
            payload = self.encode(reply)
        except Exception:
            reply.data, reply.state, reply.exhausted = None, None, False
            reply.failure = ExceptionWrapper(
                where=f"{self.where}, while pickling its batch for the queue"
            )
            payload = self.encode(reply)
        self.send(payload)
