"""`PrefetchIterator`: runs the source pipeline ahead of the consumer in a worker."""

from __future__ import annotations

import logging
from typing import Any

from .._checks import require_bool, require_positive
from .._runtime.channels import relay
from .._runtime.context import ForWorker, check_context, resolve_context, track
from .._runtime.group import JOIN_SECONDS, WorkerGroup
from .._runtime.messages import Kind
from .base import CheckpointableIterator, WorkerStage
from .workers import prefetch_worker, same

logger = logging.getLogger("checkpointable")

__all__ = ["PrefetchIterator"]

#: What a death report adds: the iterator can go on.
EPILOGUE = " The iterator keeps its last position, from which the next call restarts the workers."


class PrefetchIterator(WorkerStage):
    """Runs `source_iterator` in a worker process that keeps `buffer_size` items ready.

    The worker starts on the first ``next()``. Under ``fork`` it runs a copy of the source
    pipeline; under ``spawn`` and ``forkserver`` the pipeline is pickled (configuration and
    position), so its functions must be module-level functions, and an unpicklable pipeline
    raises a `TypeError` saying so. With ``use_threads=True`` the pipeline runs in a thread of this
    process instead. In a daemonic process (e.g. a torch DataLoader worker), which may not start
    processes, a thread is used with a `RuntimeWarning`. Prefetching never silently turns off.

    The worker runs at most `buffer_size` items ahead of the items served. It sends each item at
    once while the consumer keeps up, and gathers items into batches while the consumer is
    behind (one message costs more than one small item), so fast pipelines are not bound by
    the cost of inter-process messages.

    ``close()`` (or a ``with`` block) stops the worker; garbage collection and interpreter exit
    stop it too. An exception in the source pipeline is raised by ``next()`` with the worker's
    traceback attached as its cause; a worker killed by a signal raises `RuntimeError` within
    about a second. After an error, the next ``next()`` restarts the worker from the last
    position. After ``close()``, ``next()`` and ``setstate()`` raise `RuntimeError`.

    Args:
        source_iterator: the pipeline to run ahead.
        buffer_size: how many items the worker prepares ahead of the consumer (>= 1); also the
            length of the windows of the state (see State).
        buffer_in_main_process: keep the buffer in this process: the worker hands items one by
            one (through a queue of size 1) to a fetcher thread that fills a local buffer. This
            is infinibatch's "experimental" design: with the buffer in the worker, a worker busy
            producing items (or sharing torch tensors) can starve its queue's feeder thread of
            the GIL, and the consumer then waits although items are ready. No effect with
            threads, whose buffer is always in this process.
        log_empty_buffer_warning: log a warning (logger ``"checkpointable"``) whenever ``next()``
            finds the buffer empty, i.e. waits for the source pipeline.
        multiprocessing_context: None (the default start method), ``"fork"``, ``"spawn"``,
            ``"forkserver"`` or a multiprocessing context.
        use_threads: run the pipeline in a thread instead of a process (for pipelines that
            release the GIL, or that cannot be pickled or copied).

    Raises:
        ArgumentTypeError: `source_iterator` is not a `CheckpointableIterator`, or an argument
            has the wrong type.
        ValueError: ``buffer_size <= 0`` or an unknown start method.

    State: ``{"source", "item_offset"}``: the source's state at the start of the current window
    of `buffer_size` items and the number of items delivered since. The worker sends the
    source's state once per window, so ``getstate()`` costs nothing per item and does not depend
    on how far the worker ran ahead. Restoring restarts the worker from that source state and
    skips `item_offset` items, in ``setstate()`` itself (so a state that the source cannot reach
    is refused there): a bounded replay of fewer than `buffer_size` items (of the
    `buffer_size` the state was saved with; a state restores under any buffer size, start
    method, or threads).

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> source = NativeCheckpointableIterator(range(5))
    >>> with PrefetchIterator(source, buffer_size=2, use_threads=True) as it:
    ...     first = next(it)
    ...     state = it.getstate()
    ...     rest = list(it)
    ...     it.setstate(state)
    ...     again = list(it)
    >>> first, rest, again
    (0, [1, 2, 3, 4], [1, 2, 3, 4])
    >>> state["item_offset"], state["source"]["num_items_yielded"]
    (1, 0)
    """

    _POSITION_KEYS = ("source", "item_offset")
    _OFFSET_KEY = "item_offset"
    _transient = (
        "_group",
        "_channel",
        "_slots",
        "_batch",
        "_marks",
        "_closed",
        "_exhausted",
    )

    # Defaults of the transient attributes (a copy made by pickling starts with these).
    _group: WorkerGroup | None = None
    _channel: Any = None  # the queue of batches read by next()
    _slots: Any = None  # the worker's buffer slots, given back as items are served
    _batch: list[Any] = []  # noqa: RUF012 (never mutated) the batch being served
    _marks: list[list[Any]] = []  # noqa: RUF012 (never mutated) [index, source state] in it
    _index = 0  # the next item of _batch
    _mark = 0  # the next entry of _marks
    _mark_at = -1  # the index in _batch of that entry, or -1
    _exhausted = False

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        buffer_size: int,
        buffer_in_main_process: bool = False,
        log_empty_buffer_warning: bool = False,
        *,
        multiprocessing_context: Any = None,
        use_threads: bool = False,
    ) -> None:
        super().__init__(source_iterator)
        name = type(self).__name__
        self._buffer_size = require_positive(buffer_size, name, "buffer_size")
        self._buffer_in_main_process = require_bool(
            buffer_in_main_process, name, "buffer_in_main_process"
        )
        self._log_empty_buffer_warning = require_bool(
            log_empty_buffer_warning, name, "log_empty_buffer_warning"
        )
        self._multiprocessing_context = check_context(name, multiprocessing_context)
        self._use_threads = require_bool(use_threads, name, "use_threads")
        self._decode = False  # whether messages arrive pickled (from a process)
        self._positioned = False  # whether the source is at _source_state
        self._restore(None)

    def __next__(self) -> Any:
        index = self._index
        batch = self._batch
        if index < len(batch):
            self._index = index + 1
            if index == self._mark_at:  # the last item of a window
                self._source_state, self._offset = self._marks[self._mark][1], 0
                self._mark += 1
                marks = self._marks
                self._mark_at = marks[self._mark][0] if self._mark < len(marks) else -1
            else:
                self._offset += 1
            return batch[index]
        return self._next_batch()

    def _next_batch(self) -> Any:
        """Give the served batch's slots back, receive the next batch and serve its first item."""
        if self._slots is not None:
            release = self._slots.release
            for _ in self._batch:
                release()
        self._batch, self._index = [], 0
        group = self._group
        if group is None:
            group = self._start()
        channel = self._channel
        if self._log_empty_buffer_warning and channel.empty():
            logger.warning("%s: next() found the prefetch buffer empty", type(self).__name__)
        try:
            message = group.receive(channel, self._decode)
        except BaseException:  # a dead worker, or interrupted mid-message: restart next time
            self._stop()
            raise
        if message.kind is Kind.ITEMS and message.data:
            self._batch, self._marks = message.data, message.state
            self._mark = 0
            self._mark_at = self._marks[0][0] if self._marks else -1
            return self.__next__()
        self._stop()
        if message.failure is not None:
            message.failure.reraise()
        self._exhausted = True
        raise StopIteration

    def _start(self) -> WorkerGroup:
        name = type(self).__name__
        self._check_open()
        if self._exhausted:
            raise StopIteration
        context = resolve_context(
            name, self._multiprocessing_context, self._use_threads, stacklevel=3
        )
        skipped = self._place_source()  # items the source is past the window's start
        payload = ForWorker(name, "source_iterator", self._source_iterator)
        group = WorkerGroup(name, context, epilogue=EPILOGUE)
        try:
            in_main = context is not None and self._buffer_in_main_process
            # Two messages in flight at most: the worker gathers items into a batch meanwhile.
            channel = group.queue(2, drain=True)
            slots = group.semaphore(self._buffer_size)
            skip = self._offset - skipped
            args = (payload, skip, self._offset, self._buffer_size, channel, slots, group.stop)
            group.start(prefetch_worker, args)
            self._decode = context is not None
            if in_main:
                local = group.queue(drain=True, local=True)  # bounded by the slots
                group.start_thread(relay, (channel, local, group.stop, same), f"{name}-fetcher")
                channel, self._decode = local, False
        except BaseException:
            group.shutdown()
            raise
        self._group, self._channel, self._slots = group, channel, slots
        group.attach(self)
        track(self)
        return group

    def _stop(self, thread_timeout: float | None = JOIN_SECONDS) -> None:
        group = self._group
        self._forget_workers()
        if group is not None:
            group.close(thread_timeout)

    def _forget(self) -> None:
        self._stop(thread_timeout=None)  # a thread must be done with the source before setstate
        self._exhausted = False

    def _shut(self) -> None:
        self._stop()

    def _forget_workers(self) -> None:
        """Drop the workers and the batch (after a fork: they belong to the parent's workers);
        the next ``next()`` restarts from the position."""
        self._group = self._channel = self._slots = None
        self._batch, self._marks, self._index, self._mark, self._mark_at = [], [], 0, 0, -1
        self._positioned = False

    def _repr_args(self) -> dict[str, Any]:
        return {
            "buffer_size": self._buffer_size,
            "buffer_in_main_process": self._buffer_in_main_process,
            "log_empty_buffer_warning": self._log_empty_buffer_warning,
            "multiprocessing_context": self._multiprocessing_context,
            "use_threads": self._use_threads,
        }
