"""`ParallelMapIterator`: `MapIterator` with the transform run by a pool of workers."""

from __future__ import annotations

import collections
from collections.abc import Callable
from itertools import islice
from typing import Any

from .._checks import require_bool, require_callable, require_positive
from .._errors import IncompatibleStateError
from .._runtime.context import ForWorker, check_context, resolve_context, track
from .._runtime.group import WorkerGroup
from .._runtime.messages import WorkerFailure, dumps
from .base import CheckpointableIterator, WorkerStage
from .prefetch import EPILOGUE
from .workers import map_worker

__all__ = ["ParallelMapIterator"]


class _Chunk:
    """A chunk of source items read and submitted to the pool."""

    __slots__ = ("error", "length", "state")

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state  # the source's state before the chunk's first item
        self.length = 0  # items read (skipped ones included) and submitted
        self.error: BaseException | None = None  # ends the chunk after `length` items


class _Name:
    """Shows a function by its qualified name in a repr."""

    def __init__(self, function: Any) -> None:
        self._text = getattr(function, "__qualname__", None) or repr(function)

    def __repr__(self) -> str:
        return self._text


class ParallelMapIterator(WorkerStage):
    """Applies `transform` to each item in a pool of worker processes: `MapIterator`, parallel.

    The output is that of ``MapIterator(source_iterator, transform)``, in order. The source is
    read in this process in chunks of ``num_processes * num_items_per_process`` items; a chunk is
    cut into tasks of `num_items_per_process` items (to amortise the inter-process
    communication) for the `num_processes` workers, and the next chunk is read and submitted
    while the current one is consumed. The pool starts on the first ``next()`` and is reused
    across ``setstate()``.

    Under ``spawn`` and ``forkserver``, `transform` and the items are pickled: `transform` must
    be a module-level function (or a picklable object), else a `TypeError` says so. With
    ``use_threads=True`` the workers are threads (for transforms that release the GIL); in a
    daemonic process (e.g. a torch DataLoader worker) threads are used with a `RuntimeWarning`.
    An exception in `transform` is raised by ``next()`` at that item, after the items before it,
    with the worker's traceback attached as its cause; a worker killed by a signal raises
    `RuntimeError` within about a second. After an error, the next ``next()`` starts again from
    the last position. ``close()`` (or a ``with`` block), garbage collection and interpreter
    exit stop the pool; after ``close()``, ``next()`` and ``setstate()`` raise `RuntimeError`.

    Args:
        source_iterator: the items.
        transform: the function applied to each item.
        num_processes: number of workers (>= 1).
        num_items_per_process: number of items per task sent to a worker (>= 1).
        multiprocessing_context: None (the default start method), ``"fork"``, ``"spawn"``,
            ``"forkserver"`` or a multiprocessing context.
        use_threads: use a pool of threads instead of processes.

    Raises:
        ArgumentTypeError: `source_iterator` is not a `CheckpointableIterator`, `transform` is
            not callable, or an argument has the wrong type.
        ValueError: `num_processes` or `num_items_per_process` is < 1, or an unknown start method.

    State: ``{"source", "offset"}``: the source's state at the start of the current chunk and
    the number of its items already yielded; it does not depend on how far the workers ran
    ahead. Restoring re-reads that chunk from the source (fewer than one chunk of reads; the
    yielded items are re-read in ``setstate()`` itself, so a state that the source cannot reach
    is refused there) and
    transforms only the items from `offset` on: no yielded item is transformed again. A state
    restores under any pool size, start method, or threads.

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> source = NativeCheckpointableIterator(range(7))
    >>> square = lambda n: n * n  # with processes under spawn: a module-level function
    >>> with ParallelMapIterator(source, square, 2, 2, use_threads=True) as it:
    ...     head = [next(it) for _ in range(5)]
    ...     state = it.getstate()
    ...     tail = list(it)
    >>> head, tail
    ([0, 1, 4, 9, 16], [25, 36])
    >>> state["source"]["num_items_yielded"], state["offset"]
    (4, 1)
    """

    _POSITION_KEYS = ("source", "offset")
    _OFFSET_KEY = "offset"
    _transient = (
        "_group",
        "_tasks",
        "_results",
        "_closed",
        "_buffer",
        "_failure",
        "_chunk_error",
        "_ahead",
        "_pending",
        "_received",
    )

    # Defaults of the transient attributes (a copy made by pickling starts with these).
    _group: WorkerGroup | None = None
    _tasks: Any = None
    _results: Any = None

    # The reading state (see _forget); the position: _source_state, the source's state at the
    # current chunk's start, and _offset, the items of the chunk yielded.
    _chunk_length: int  # items in the current chunk; -1 if unknown or ending in an error
    _chunk_error: BaseException | None  # the error ending the current chunk
    _ahead: _Chunk | None  # the next chunk, read and submitted
    _buffer: list[Any]  # outputs of the task being consumed
    _index: int  # next output of _buffer
    _failure: WorkerFailure | None  # failure of the task being consumed, raised after _buffer
    _pending: collections.deque[int]  # ids of the submitted tasks not yet collected, in order
    _received: dict[int, tuple[list[Any], Any]]  # results that arrived before their turn
    _first_valid_task: int  # results of older tasks (before a restore) are dropped
    _started: bool  # whether the current chunk was read since the last restore or error

    def __init__(
        self,
        source_iterator: CheckpointableIterator,
        transform: Callable[[Any], Any],
        num_processes: int,
        num_items_per_process: int,
        *,
        multiprocessing_context: Any = None,
        use_threads: bool = False,
    ) -> None:
        super().__init__(source_iterator)
        name = type(self).__name__
        self._transform = require_callable(transform, name, "transform")
        self._num_processes = require_positive(num_processes, name, "num_processes")
        self._num_items_per_process = require_positive(
            num_items_per_process, name, "num_items_per_process"
        )
        self._multiprocessing_context = check_context(name, multiprocessing_context)
        self._use_threads = require_bool(use_threads, name, "use_threads")
        self._chunk_size = num_processes * num_items_per_process
        self._decode = False  # whether tasks and results travel pickled (processes)
        self._next_task = 0  # id of the next task submitted
        self._restore(None)

    def __next__(self) -> Any:
        index = self._index
        if index < len(self._buffer):
            self._index = index + 1
            offset = self._offset + 1
            if offset == self._chunk_length:
                self._next_chunk()
            else:
                self._offset = offset
            return self._buffer[index]
        return self._refill()

    def _refill(self) -> Any:
        """Take the next task's outputs, starting or raising where needed."""
        while True:
            failure = self._failure or (None if self._pending else self._chunk_error)
            if failure is not None:  # every item before it was yielded
                self._forget()
                if isinstance(failure, WorkerFailure):
                    failure.reraise()
                raise failure
            if not self._started:
                self._begin()
                continue
            if not self._pending:
                raise StopIteration
            outputs, self._failure = self._collect(self._pending.popleft())
            self._buffer, self._index = outputs, 0
            if outputs:
                return self.__next__()

    def _begin(self) -> None:
        """Read the current chunk from the source, submitting only its items from `offset` on."""
        self._check_open()
        self._start_pool()
        skipped = self._place_source()  # items the source is past the chunk's start
        skip = self._offset
        chunk = self._read(max(self._chunk_size, skip), skip, skipped)
        if chunk.error is None and chunk.length < skip:
            raise IncompatibleStateError(
                f"{type(self).__name__}: the state is at item {skip} of a chunk, but the source "
                f"has only {chunk.length} items from the chunk's start; it was saved over other "
                "data"
            )
        self._started = True
        self._set_current(chunk)
        if chunk.error is None and 0 < skip == chunk.length:  # every item was yielded before
            self._next_chunk()

    def _set_current(self, chunk: _Chunk) -> None:
        """Make `chunk` the one being consumed, and read the next one ahead."""
        self._chunk_length = -1 if chunk.error is not None else chunk.length
        self._chunk_error = chunk.error
        ahead = chunk.error is None and chunk.length > 0
        self._ahead = self._read(self._chunk_size, 0) if ahead else None

    def _next_chunk(self) -> None:
        """The last item of the current chunk was yielded: the position moves to the next."""
        ahead = self._ahead
        if ahead is None:  # a chunk without error always has one read ahead
            raise RuntimeError("ParallelMapIterator: no chunk was read ahead (an internal error)")
        self._source_state, self._offset = ahead.state, 0
        self._set_current(ahead)

    def _read(self, count: int, skip: int, skipped: int = 0) -> _Chunk:
        """Read up to `count` items and submit those after the first `skip` as tasks; the
        source is already `skipped` (<= `skip`) items into the chunk.

        A source exception (or an unpicklable item) ends the chunk there; it is raised when
        the consumer reaches that position, as `MapIterator` would.
        """
        source = self._source_iterator
        chunk = _Chunk(self._source_state if skipped else source.getstate())
        items: list[Any] = []
        try:
            items.extend(islice(source, count - skipped))
        except Exception as error:
            chunk.error = error
        size = self._num_items_per_process
        for start in range(skip - skipped, len(items), size):
            try:
                self._submit(items[start : start + size])
            except TypeError as error:
                chunk.error = error
                del items[start:]
                break
        chunk.length = skipped + len(items)
        return chunk

    def _submit(self, items: list[Any]) -> None:
        task: Any = (self._next_task, 0, items, False)  # a `Task`
        if self._decode:
            try:
                task = dumps(task)
            except Exception as error:
                raise TypeError(
                    f"{type(self).__name__}: the items of source_iterator must be picklable to "
                    f"be sent to worker processes ({error}); or pass use_threads=True"
                ) from error
        self._tasks.put(task)
        self._pending.append(self._next_task)
        self._next_task += 1

    def _collect(self, task_id: int) -> tuple[list[Any], Any]:
        received, group = self._received, self._group
        if group is None:
            raise RuntimeError("ParallelMapIterator: its workers are not running (internal error)")
        try:
            group.check()
            while task_id not in received:
                reply = group.receive(self._results, self._decode)
                if reply.task >= self._first_valid_task:  # results of tasks dropped by a restore
                    received[reply.task] = (reply.data, reply.failure)
        except BaseException:  # a dead worker, or interrupted mid-message: restart
            self._shut()
            raise
        return received.pop(task_id)

    def _start_pool(self) -> None:
        if self._group is not None:
            return
        name = type(self).__name__
        context = resolve_context(
            name, self._multiprocessing_context, self._use_threads, stacklevel=5
        )
        payload = ForWorker(name, "transform", self._transform)
        group = WorkerGroup(name, context, epilogue=EPILOGUE)
        try:
            tasks = group.queue(sentinels=self._num_processes)
            results = group.queue()
            group.start(map_worker, (payload, tasks, results, group.stop), self._num_processes)
        except BaseException:
            group.shutdown()
            raise
        self._group, self._tasks, self._results = group, tasks, results
        self._decode = context is not None
        group.attach(self)
        track(self)

    def _stop_pool(self) -> None:
        group = self._group
        self._group = self._tasks = self._results = None
        if group is not None:
            group.close()

    def _forget(self) -> None:
        """Forget what was read and submitted; the next item is read again from the position."""
        self._started = False
        self._positioned = False
        self._buffer = []
        self._index = 0
        self._failure = None
        self._chunk_error = None
        self._chunk_length = -1
        self._ahead = None
        self._pending = collections.deque()
        self._received = {}
        self._first_valid_task = self._next_task

    def _shut(self) -> None:
        self._stop_pool()
        self._forget()

    def _forget_workers(self) -> None:
        """In a forked child: the pool belongs to the parent; restart from the position."""
        self._group = self._tasks = self._results = None
        self._forget()

    def _repr_args(self) -> dict[str, Any]:
        return {
            "transform": _Name(self._transform),
            "num_processes": self._num_processes,
            "num_items_per_process": self._num_items_per_process,
            "multiprocessing_context": self._multiprocessing_context,
            "use_threads": self._use_threads,
        }
