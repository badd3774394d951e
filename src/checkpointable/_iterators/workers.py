"""The code that runs inside the workers of `PrefetchIterator` and `ParallelMapIterator`.

Module-level functions, so that a ``spawn`` or ``forkserver`` process can import them by name;
this module imports nothing heavy (no torch), so such a worker starts fast. A worker runs in a
process (its ``watch``, a `ParentWatch`, tells when the consumer's process is gone) or in a
thread (``watch`` is None). In a process, every message is pickled by the worker itself before
it is queued (see `checkpointable._runtime.messages`).

Lifecycle of a worker process: it stops when told to (the ``stop`` event, checked after each
item and every `POLL_SECONDS` while blocked on a full queue; a None in the task queue), when it
receives SIGTERM (`WorkerStop`, so ``finally`` blocks close nested workers), and when the
consumer's process disappears (checked every `POLL_SECONDS` while blocked). It ignores SIGINT:
Ctrl-C interrupts the consumer, which stops its workers.
"""

from __future__ import annotations

import os
import pickle
import queue
import time
from typing import Any

from .._runtime.channels import POLL_SECONDS, Receiver, acquire, put
from .._runtime.messages import Encoder, Kind, Reply, WorkerFailure, dumps
from .._runtime.watch import ParentWatch, WorkerStop
from .base import skip_items

__all__ = ["map_worker", "prefetch_worker", "same"]

#: How often a prefetch worker that is not blocked checks whether it was told to stop.
STOP_CHECK_SECONDS = 0.002


def _gone(watch: ParentWatch | None) -> bool:
    return watch is not None and watch.gone()


class _Batcher:
    """Sends a prefetch worker's items as batches ``(items, marks)``.

    A batch goes out as soon as the queue has room for a message, so a waiting consumer gets
    each item at once; while the consumer is behind and the queue is full, items gather into
    the next batch, so that it reads fewer, larger messages (a message costs more than an item).
    `marks` lists ``[index, source state]`` for the items that end a window.
    """

    def __init__(self, channel: Any, stop: Any, watch: ParentWatch | None, encode: Any) -> None:
        self.channel, self.stop, self.watch, self.encode = channel, stop, watch, encode
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
            message = self.encode(Reply(Kind.ITEMS, data=items, state=marks))
        except Exception:
            return self._flush_until_unpicklable(items, marks)
        return put(self.channel, message, self.stop, self.watch)

    def _flush_until_unpicklable(self, items: list[Any], marks: list[list[Any]]) -> bool:
        """Send the items before the first unpicklable one, then raise for that one."""
        for index, item in enumerate(items):
            try:
                self.encode(item)
            except Exception as error:
                good = [mark for mark in marks if mark[0] < index]
                if index and not put(
                    self.channel,
                    self.encode(Reply(Kind.ITEMS, data=items[:index], state=good)),
                    self.stop,
                    self.watch,
                ):
                    return False
                raise TypeError(
                    f"PrefetchIterator: an item of source_iterator cannot be pickled to be sent "
                    f"from the worker process ({error}); use picklable items, or use_threads=True"
                ) from error
        raise RuntimeError(
            "PrefetchIterator: a batch failed to pickle but each of its items pickles "
            "(an internal error)"
        )


def prefetch_worker(
    source: Any,
    skip: int,
    item_offset: int,
    buffer_size: int,
    channel: Any,
    slots: Any,
    stop: Any,
    watch: ParentWatch | None,
) -> None:
    """Run the source pipeline and queue its items (in batches, see `_Batcher`), then `END`.

    `source` is the pipeline `item_offset - skip` items after the start of the current window
    (or its pickle, under spawn/forkserver); the worker skips `skip` items, then marks every
    `buffer_size`-th item with the source's state after it (the start of the next window). It
    takes one of the `buffer_size` `slots` before producing each item; the consumer gives them
    back as it serves the items. In a process it waits for `stop` before exiting, so that
    tensors it sent through shared memory stay valid until the consumer is done with them.
    """
    in_process = watch is not None
    if watch is not None:
        watch.attach(interrupt=False)
    encode = Encoder() if in_process else same
    batcher = _Batcher(channel, stop, watch, encode)
    pipeline = None
    try:
        pipeline = pickle.loads(source) if isinstance(source, bytes) else source
        skip_items(pipeline, skip, item_offset, "PrefetchIterator")
        offset = item_offset
        check_at = 0.0  # when to look at `stop` next: every item would cost ~1 us
        while True:
            if not slots.acquire(False) and not (batcher.flush() and acquire(slots, stop, watch)):
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
                    put(channel, encode(Reply(Kind.END)), stop, watch)
                break
            offset += 1
            state = None
            if offset >= buffer_size:
                state, offset = pipeline.getstate(), 0
            if not batcher.add(item, state):
                break
    except WorkerStop:  # SIGTERM: no more waiting
        stop = None
    except BaseException as error:
        where = f"process {os.getpid()}" if in_process else "thread"
        where = f"in the PrefetchIterator worker ({where})"
        if batcher.flush():  # the items before the failure first
            failure = WorkerFailure(error, where)
            put(channel, encode(Reply(Kind.ITEMS, data=[], state=[], failure=failure)), stop, watch)
    finally:
        if in_process:
            _finish_process(pipeline, channel, stop, watch)


def _finish_process(pipeline: Any, channel: Any, stop: Any, watch: ParentWatch | None) -> None:
    """Wait until the consumer is done (unless `stop` is None: terminated), close the
    pipeline's own workers, drop unsent data."""
    try:
        while stop is not None and not stop.wait(POLL_SECONDS):
            if _gone(watch):
                break
        if pipeline is not None:
            pipeline.close()
    except WorkerStop:
        pass
    finally:
        channel.cancel_join_thread()


def same(message: Any) -> Any:
    """The identity: a relay that passes messages on unchanged."""
    return message


def map_worker(
    transform: Any, tasks: Any, results: Any, stop: Any, watch: ParentWatch | None
) -> None:
    """Apply `transform` to the items of each `Task` taken from `tasks`.

    Each result is a `Reply` with the outputs of the items before the first failing one, and
    that failure (or None). `None` in `tasks` tells the worker to exit; once
    `stop` is set, the remaining tasks are read and dropped until that `None`, so that the
    task queue is drained and the consumer's feeder thread can finish.
    """
    in_process = watch is not None
    if watch is not None:
        watch.attach(interrupt=False)
    where = f"process {os.getpid()}" if in_process else "thread"
    where = f"in a ParallelMapIterator worker ({where})"
    load_failure = None
    try:
        if isinstance(transform, bytes):
            transform = pickle.loads(transform)
    except BaseException as error:
        load_failure = WorkerFailure(error, where)
    receive = Receiver(tasks)
    try:
        while True:
            try:
                task = receive(POLL_SECONDS)
            except queue.Empty:
                if _gone(watch):
                    return
                continue
            if task is None:
                return
            if stop.is_set():
                continue
            if in_process:
                task = pickle.loads(task)
            task_id, _, items, _ = task
            outputs: list[Any] = []
            failure = load_failure
            if failure is None:
                try:
                    for item in items:
                        outputs.append(transform(item))
                except WorkerStop:
                    raise
                except BaseException as error:
                    failure = WorkerFailure(error, where)
            reply = Reply(Kind.ITEMS, task=task_id, data=outputs, failure=failure)
            results.put(_encode_result(reply, where) if in_process else reply)
    except WorkerStop:
        pass
    finally:
        if in_process:
            results.cancel_join_thread()


def _encode_result(reply: Reply, where: str) -> bytes:
    try:
        return dumps(reply)
    except Exception as error:
        problem = TypeError(
            f"ParallelMapIterator: the results of transform cannot be pickled to be sent back "
            f"from the worker process: {error}"
        )
        return dumps(
            Reply(Kind.ITEMS, task=reply.task, data=[], failure=WorkerFailure(problem, where))
        )
