"""The code that runs inside the workers of `PrefetchIterator` and `ParallelMapIterator`.

Module-level functions, so that a ``spawn`` or ``forkserver`` process can import them by name;
this module imports nothing heavy (no torch), so such a worker starts fast. A worker runs in a
process (its ``lifeline`` tells when the consumer's process is gone) or in a thread
(``lifeline`` is None). In a process, every message is pickled by the worker itself before it
is queued, so that an unpicklable item or result fails here, synchronously, and reaches the
consumer as an error, instead of being dropped by the queue's feeder thread.

Lifecycle of a worker process: it stops when told to (the ``stop`` event, checked after each
item and every `POLL_SECONDS` while blocked on a full queue; a None in the task queue), when it
receives SIGTERM (turned into an exception, so ``finally`` blocks close nested workers), and
when the consumer's process disappears (see `Lifeline`; checked every `POLL_SECONDS` while
blocked). It ignores SIGINT: Ctrl-C interrupts the consumer, which stops its workers.
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
import queue
import signal
import time
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any, NoReturn

from .._errors import IncompatibleStateError
from .._orphan import quiet_when_orphaned

__all__ = [
    "POLL_SECONDS",
    "Encoder",
    "End",
    "Lifeline",
    "RemoteTraceback",
    "WorkerFailure",
    "dumps",
    "map_worker",
    "prefetch_worker",
    "put",
]

#: How often a blocked worker (or consumer) wakes up to check for stop, death or orphaning.
POLL_SECONDS = 0.1
#: How often a prefetch worker that is not blocked checks whether it was told to stop.
STOP_CHECK_SECONDS = 0.002


class End:
    """The message that follows the last item of the source."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class _Stop(BaseException):
    """Raised in a worker process by SIGTERM: unwind, running ``finally`` blocks."""


class WorkerFailure:
    """An exception raised in a worker, carried to the consumer with its traceback text.

    When it crosses a process boundary, the exception travels by pickle; one that does not
    survive a pickle round trip (e.g. a custom exception with extra required arguments) is
    replaced by a `RuntimeError` with the same text.
    """

    def __init__(self, error: BaseException, where: str) -> None:
        self.error = error
        self.where = where
        self.text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.remote = False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["remote"] = True
        try:
            pickle.loads(pickle.dumps(self.error))
        except Exception:
            state["error"] = RuntimeError(f"{type(self.error).__qualname__}: {self.error}")
        return state

    def reraise(self) -> NoReturn:
        """Raise the worker's exception in the consumer, with the worker's traceback."""
        error = self.error
        if self.remote:  # the exception's own traceback stayed in the worker: attach its text
            error.__cause__ = RemoteTraceback(f"{self.where}:\n{self.text}")
        raise error


def dumps(message: Any) -> bytes:
    """Pickle a message as multiprocessing would (torch tensors go through shared memory)."""
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(message)
    return buffer.getvalue()


class Encoder:
    """`dumps` for a stream of messages: one `ForkingPickler` reused, since creating one copies
    the whole reducer table (~3 us); it is rebuilt when reducers are registered meanwhile
    (e.g. torch, imported by the pipeline after the worker started)."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler: Any = None
        self._reducers = -1

    def __call__(self, message: Any) -> bytes:
        reducers = len(copyreg.dispatch_table) + len(getattr(ForkingPickler, "_extra_reducers", ()))
        buffer = self._buffer
        if reducers != self._reducers:
            self._pickler = ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL)
            self._reducers = reducers
        buffer.seek(0)
        buffer.truncate()
        self._pickler.clear_memo()
        self._pickler.dump(message)
        return buffer.getvalue()


class Lifeline:
    """A worker process's link to its consumer, to tell when the consumer's process is gone.

    It holds the reading end of a pipe whose writing end only the consumer holds and never
    writes to: when the consumer's process ends, the pipe reads as closed. That works under
    spawn and forkserver (where the worker's parent is the fork server, which outlives the
    consumer); under fork, where other children inherit the writing end, the worker is
    re-parented instead, and ``os.getppid()`` changes.
    """

    def __init__(self, reader: Any) -> None:
        self._reader = reader
        self._parent = -1

    def attach(self) -> None:
        """Called in the worker when it starts."""
        self._parent = os.getppid()

    def cut(self) -> bool:
        """Whether the consumer's process is gone."""
        return os.getppid() != self._parent or bool(self._reader.poll())


def _orphaned(lifeline: Lifeline | None) -> bool:
    return lifeline is not None and lifeline.cut()


def put(channel: Any, message: Any, stop: Any, lifeline: Lifeline | None) -> bool:
    """Put `message`, waiting while the queue is full; False if told to stop meanwhile."""
    block = False
    while True:
        try:
            channel.put(message, block, POLL_SECONDS)
            return True
        except queue.Full:
            if stop.is_set() or _orphaned(lifeline):
                return False
            block = True


def _raise_stop(signum: int, frame: Any) -> NoReturn:
    raise _Stop


def _in_process_setup(lifeline: Lifeline | None) -> None:
    """In a worker process: SIGTERM unwinds it; Ctrl-C is left to the consumer's process,
    which stops its workers itself (so a caught KeyboardInterrupt does not kill them)."""
    if lifeline is not None:
        lifeline.attach()
        quiet_when_orphaned()
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _acquire(slots: Any, stop: Any, lifeline: Lifeline | None) -> bool:
    """Take a buffer slot, waiting while the buffer is full; False if told to stop meanwhile."""
    while not stop.is_set() and not _orphaned(lifeline):
        if slots.acquire(True, POLL_SECONDS):
            return True
    return False


class _Batcher:
    """Sends a prefetch worker's items as batches ``(items, marks)``.

    A batch goes out as soon as the queue has room for a message, so a waiting consumer gets
    each item at once; while the consumer is behind and the queue is full, items gather into
    the next batch, so that it reads fewer, larger messages (a message costs more than an item).
    `marks` lists ``[index, source state]`` for the items that end a window.
    """

    def __init__(self, channel: Any, stop: Any, lifeline: Lifeline | None, encode: Any) -> None:
        self.channel, self.stop, self.lifeline, self.encode = channel, stop, lifeline, encode
        self.items: list[Any] = []
        self.marks: list[list[Any]] = []

    def add(self, item: Any, state: Any) -> bool:
        """Queue `item` (and the source state after it, if not None); False if told to stop."""
        if state is not None:
            self.marks.append([len(self.items), state])
        self.items.append(item)
        return self.channel.full() or self.flush()

    def flush(self) -> bool:
        """Send the gathered items; False if told to stop meanwhile."""
        items, marks = self.items, self.marks
        if not items:
            return True
        self.items, self.marks = [], []
        try:
            message = self.encode((items, marks))
        except Exception:
            return self._flush_until_unpicklable(items, marks)
        return put(self.channel, message, self.stop, self.lifeline)

    def _flush_until_unpicklable(self, items: list[Any], marks: list[list[Any]]) -> bool:
        """Send the items before the first unpicklable one, then raise for that one."""
        for index, item in enumerate(items):
            try:
                self.encode(item)
            except Exception as error:
                good = [mark for mark in marks if mark[0] < index]
                if index and not put(
                    self.channel, self.encode((items[:index], good)), self.stop, self.lifeline
                ):
                    return False
                raise TypeError(
                    f"PrefetchIterator: an item of source_iterator cannot be pickled to be sent "
                    f"from the worker process ({error}); use picklable items, or use_threads=True"
                ) from error
        raise AssertionError("unreachable: the batch failed to pickle but each item pickles")


def prefetch_worker(
    source: Any,
    item_offset: int,
    buffer_size: int,
    channel: Any,
    slots: Any,
    stop: Any,
    lifeline: Lifeline | None,
) -> None:
    """Run the source pipeline and queue its items (in batches, see `_Batcher`), then `End`.

    `source` is the pipeline positioned at the start of the current window (or its pickle,
    under spawn/forkserver); the worker skips `item_offset` items, then marks every
    `buffer_size`-th item with the source's state after it (the start of the next window). It
    takes one of the `buffer_size` `slots` before producing each item; the consumer gives them
    back as it serves the items. In a process it waits for `stop` before exiting, so that
    tensors it sent through shared memory stay valid until the consumer is done with them.
    """
    in_process = lifeline is not None
    _in_process_setup(lifeline)
    encode = Encoder() if in_process else _same
    batcher = _Batcher(channel, stop, lifeline, encode)
    pipeline = None
    try:
        pipeline = pickle.loads(source) if isinstance(source, bytes) else source
        _skip(pipeline, item_offset)
        offset = item_offset
        check_at = 0.0  # when to look at `stop` next: every item would cost ~1 us
        while True:
            if not slots.acquire(False) and not (
                batcher.flush() and _acquire(slots, stop, lifeline)
            ):
                break
            now = time.monotonic()
            if now >= check_at:
                if stop.is_set():
                    break
                check_at = now + STOP_CHECK_SECONDS
            try:
                item = next(pipeline)
            except StopIteration:
                if batcher.flush():
                    put(channel, encode(End()), stop, lifeline)
                break
            offset += 1
            state = None
            if offset >= buffer_size:
                state, offset = pipeline.getstate(), 0
            if not batcher.add(item, state):
                break
    except _Stop:  # SIGTERM: no more waiting
        stop = None
    except BaseException as error:
        where = f"process {os.getpid()}" if in_process else "thread"
        where = f"in the PrefetchIterator worker ({where})"
        if batcher.flush():  # the items before the failure first
            put(channel, encode(WorkerFailure(error, where)), stop, lifeline)
    finally:
        if in_process:
            _finish_process(pipeline, channel, stop, lifeline)


def _skip(pipeline: Any, count: int) -> None:
    for done in range(count):
        try:
            next(pipeline)
        except StopIteration:
            raise IncompatibleStateError(
                f"PrefetchIterator: the state is at item {count} of a window, but the source "
                f"ended after {done} items; it was saved over other data"
            ) from None


def _finish_process(pipeline: Any, channel: Any, stop: Any, lifeline: Lifeline | None) -> None:
    """Wait until the consumer is done (unless `stop` is None: terminated), close the
    pipeline's own workers, drop unsent data."""
    try:
        while stop is not None and not stop.wait(POLL_SECONDS):
            if _orphaned(lifeline):
                break
        if pipeline is not None:
            pipeline.close()
    except _Stop:
        pass
    finally:
        channel.cancel_join_thread()


def _same(message: Any) -> Any:
    return message


def map_worker(
    transform: Any, tasks: Any, results: Any, stop: Any, lifeline: Lifeline | None
) -> None:
    """Apply `transform` to the items of each task ``(task_id, items)`` taken from `tasks`.

    Each result is ``(task_id, outputs, failure)``: the outputs of the items before the first
    failing one, and that failure (or None). `None` in `tasks` tells the worker to exit; once
    `stop` is set, the remaining tasks are read and dropped until that `None`, so that the
    task queue is drained and the consumer's feeder thread can finish.
    """
    in_process = lifeline is not None
    _in_process_setup(lifeline)
    where = f"process {os.getpid()}" if in_process else "thread"
    where = f"in a ParallelMapIterator worker ({where})"
    load_failure = None
    try:
        if isinstance(transform, bytes):
            transform = pickle.loads(transform)
    except BaseException as error:
        load_failure = WorkerFailure(error, where)
    try:
        while True:
            try:
                task = tasks.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if _orphaned(lifeline):
                    return
                continue
            if task is None:
                return
            if stop.is_set():
                continue
            task_id, items = pickle.loads(task) if in_process else task
            outputs: list[Any] = []
            failure = load_failure
            if failure is None:
                try:
                    for item in items:
                        outputs.append(transform(item))
                except _Stop:
                    raise
                except BaseException as error:
                    failure = WorkerFailure(error, where)
            results.put(
                _encode_result(task_id, outputs, failure, where)
                if in_process
                else (task_id, outputs, failure)
            )
    except _Stop:
        pass
    finally:
        if in_process:
            results.cancel_join_thread()


def _encode_result(task_id: int, outputs: list[Any], failure: Any, where: str) -> bytes:
    try:
        return dumps((task_id, outputs, failure))
    except Exception as error:
        problem = TypeError(
            f"ParallelMapIterator: the results of transform cannot be pickled to be sent back "
            f"from the worker process: {error}"
        )
        return dumps((task_id, [], WorkerFailure(problem, where)))
