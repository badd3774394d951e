"""One epoch read by worker processes: dispatch, reordering, delivery and bookkeeping.

`WorkerEpoch` keeps up to ``prefetch_factor * num_workers`` tasks in flight. With ``in_order``
it delivers results in task order, holding early ones in a reordering buffer; otherwise it
delivers each result as it arrives. What a task is and how a delivery moves the state depends on
the dataset's style: `MapTasks` (a task is a position in the epoch's index lists) or
`SourceTasks` (a task asks a stream for its next batch, streams taken round-robin).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from .._runtime.messages import Kind, Reply
from .indices import EpochIndices, IndexPlan
from .main_epochs import record_sampler
from .pool import WorkerPool
from .state import LoaderState

__all__ = ["MapTasks", "SourceTasks", "WorkerEpoch"]

_SKIP = object()  # a settled task without a batch to deliver (an exhausted stream)


class MapTasks:
    """Map style: task ids are positions in the epoch; in order, position p goes to worker p % N.

    A stateful sampler's state is captured right before and right after each task's indices are
    drawn and kept with the task; the position written is the one of the task just below the
    low watermark (see `record_sampler`).
    """

    def __init__(
        self,
        state: LoaderState,
        indices: EpochIndices,
        plan: IndexPlan,
        num_workers: int,
        in_order: bool,
        capture: bool,
    ) -> None:
        self._state = state
        self._indices = indices
        self._plan = plan
        self._num_workers = num_workers
        self._in_order = in_order
        self._capture = capture
        self._next = state.batches
        self._skip = set(state.beyond)
        # position -> a stateful sampler's (state before, state after, exhausted) of its draw
        self._captured: dict[int, tuple[Any, Any, bool]] = {}
        self._exhausted = False

    def next_task(self, load: list[int]) -> tuple[int, int, Any] | None:
        if self._exhausted:
            return None
        while True:
            before = self._plan.capture() if self._capture else None
            try:
                task = next(self._indices)
            except StopIteration:
                self._exhausted = True
                return None
            position = self._next
            self._next += 1
            if self._capture:
                after = self._plan.capture()
                self._captured[position] = (before, after, self._indices.exhausted)
            if position not in self._skip:
                break
        if self._in_order:
            worker = position % self._num_workers
        else:
            worker = min(range(self._num_workers), key=load.__getitem__)
        return position, worker, task

    def observe(self, reply: Reply) -> None:
        pass

    def settle(self, reply: Reply) -> Any:
        position, worker, dataset_state = reply.task, reply.worker, reply.state
        state = self._state
        before = state.batches
        state.deliver(position)
        if self._capture and state.batches != before:
            record_sampler(state, *self._captured[state.batches - 1])
            for key in range(before - 1, state.batches - 1):
                self._captured.pop(key, None)
        if dataset_state is not None and state.dataset_states is not None:
            state.dataset_states[worker] = {"state": dataset_state, "fresh": False}
        if reply.failure is not None:
            reply.failure.reraise()
        return reply.data


class SourceTasks:
    """Iterable style: each task asks a stream (a worker's dataset copy, or a shard) for a batch.

    Streams are asked round-robin, skipping those known to be exhausted; in order, the delivered
    sequence is the round-robin over the streams that still have batches, whatever the timing.
    Out of order (`per_worker` given), a stream is skipped while its worker already has
    `per_worker` tasks, as torch limits each worker to ``prefetch_factor`` tasks: a slow worker
    then never takes the whole window, and the others keep delivering. The state keeps, per
    stream, its state at the last snapshot and the batches delivered since, exact either way (a
    stream's batches arrive in the order its worker made them).
    """

    def __init__(
        self,
        state: LoaderState,
        owners: list[int],
        check_length: Callable[[int], None] | None = None,
        per_worker: int | None = None,
    ) -> None:
        self._state = state
        self._check_length = check_length
        self._per_worker = per_worker
        self._owners = owners  # stream -> worker
        self._cycle = state.next_stream
        self._ended = {i for i, entry in enumerate(state.streams) if entry["ended"]}
        self._stream_of: dict[int, int] = {}
        self._next_id = 0

    def next_task(self, load: list[int]) -> tuple[int, int, Any] | None:
        count = len(self._owners)
        for _ in range(count):
            stream = self._cycle
            self._cycle = (stream + 1) % count
            worker = self._owners[stream]
            busy = self._per_worker is not None and load[worker] >= self._per_worker
            if stream not in self._ended and not busy:
                task_id = self._next_id
                self._next_id += 1
                self._stream_of[task_id] = stream
                return task_id, worker, stream
        return None

    def observe(self, reply: Reply) -> None:
        if reply.kind is Kind.END or reply.exhausted:
            self._ended.add(self._stream_of[reply.task])

    def settle(self, reply: Reply) -> Any:
        stream_state, exhausted = reply.state, reply.exhausted
        stream = self._stream_of.pop(reply.task)
        state = self._state
        entry = state.streams[stream]
        state.next_stream = (stream + 1) % len(state.streams)
        if reply.failure is not None:
            reply.failure.reraise()
        if stream_state is not None:
            state.take_snapshot(stream, stream_state)
        if reply.kind is Kind.END:
            entry["ended"] = True
            return _SKIP
        if stream_state is None:
            entry["replay"] += 1
        if exhausted:
            entry["ended"] = True
        state.batches += 1
        if self._check_length is not None:
            self._check_length(state.batches)
        return reply.data


class WorkerEpoch(Iterator[Any]):
    """The iterator of one epoch read by a `WorkerPool`.

    Args:
        pool: the started pool, whose current generation is this epoch's.
        tasks: `MapTasks` or `SourceTasks`.
        in_order: deliver in task order (torch's default) or as results arrive.
        window: tasks in flight at most (``prefetch_factor * num_workers``).
        finish: called once when the epoch ends.
        owns_pool: shut the pool down when the epoch is closed (workers not persistent).
    """

    def __init__(
        self,
        pool: WorkerPool,
        tasks: MapTasks | SourceTasks,
        in_order: bool,
        window: int,
        finish: Callable[[], None],
        owns_pool: bool,
    ) -> None:
        self._pool = pool
        self._owns_pool = owns_pool
        self._tasks = tasks
        self._in_order = in_order
        self._window = window
        self._finish = finish
        self._generation = pool.generation
        self._order: deque[int] = deque()
        self._arrived: dict[int, Reply] = {}
        self._load = [0] * pool.num_workers
        self._in_flight = 0
        self._done = False
        self._fill()

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        while True:
            order, arrived = self._order, self._arrived
            if self._in_order:
                while order and order[0] in arrived:
                    batch = self._settle(arrived.pop(order.popleft()))
                    if batch is not _SKIP:
                        return batch
                if not order:
                    break
            elif not self._in_flight:
                break
            try:
                message = self._pool.receive()
            except BaseException:
                self._done = True
                raise
            if message.generation != self._generation:
                continue  # a reply to a task of an abandoned epoch
            self._tasks.observe(message)
            if self._in_order:
                arrived[message.task] = message
            else:
                batch = self._settle(message)
                if batch is not _SKIP:
                    return batch
        self._done = True
        self._finish()
        raise StopIteration

    @property
    def done(self) -> bool:
        """Whether this epoch ended (or was closed): it delivers no more batches."""
        return self._done

    def close(self) -> None:
        """Stop this epoch: later ``next()`` calls raise StopIteration, the state is left as is."""
        self._done = True
        if self._owns_pool:
            self._pool.shutdown()

    def _settle(self, message: Reply) -> Any:
        self._load[message.worker] -= 1
        self._in_flight -= 1
        try:
            return self._tasks.settle(message)
        finally:
            self._fill()

    def _fill(self) -> None:
        while self._in_flight < self._window:
            task = self._tasks.next_task(self._load)
            if task is None:
                return
            task_id, worker, payload = task
            self._pool.send(worker, task_id, payload)
            self._load[worker] += 1
            self._in_flight += 1
            if self._in_order:
                self._order.append(task_id)
