"""Blocking waits that stay responsive: a put, a slot, a relay thread.

Each wait wakes up every `POLL_SECONDS` to see whether it was told to stop or (in a worker)
whether its consumer is gone, so nothing blocks forever on a peer that died.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
from collections.abc import Callable
from multiprocessing.reduction import ForkingPickler
from typing import Any

from .messages import Encoder, Relayed
from .watch import ParentWatch

__all__ = ["POLL_SECONDS", "Receiver", "Sender", "acquire", "put", "relay"]

#: How often a blocked consumer or worker wakes up to check for stop, death or orphaning.
POLL_SECONDS = 0.1


def put(channel: Any, message: Any, stop: Any, watch: ParentWatch | None) -> bool:
    """Put `message`, waiting while the queue is full; False if told to stop (or orphaned)."""
    block = False
    while True:
        try:
            channel.put(message, block, POLL_SECONDS)
            return True
        except queue.Full:
            if stop.is_set() or (watch is not None and watch.gone()):
                return False
            block = True


class Sender:
    """Puts the messages of this process into the multiprocessing queue `channel` from the
    calling thread, as the queue's feeder thread would, where that cannot block.

    Waking a feeder thread for every message costs more than making a small batch (a thread
    switch and the GIL twice, each way). A message is written at once when it fits in what a
    pipe takes without blocking (``PIPE_BUF``) and the pipe has that room, checked and written
    under the queue's write lock, so that the messages of several processes do not interleave.
    Otherwise it goes through the feeder thread (which may wait for the reader), and so does
    every later message of this sender, so that they stay in order.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self._encode = Encoder()
        self._lock: Any = getattr(channel, "_wlock", None)
        self._writer: Any = getattr(channel, "_writer", None)
        # direct writes need the queue's lock and pipe (POSIX), and no bound on the queue
        self._direct = (
            self._lock is not None
            and self._writer is not None
            and channel._maxsize >= _BIG
            and hasattr(select, "poll")
        )
        self._room: Any = None  # a poll of the pipe's room (select() fails above fd 1023)
        if self._direct:
            self._fd = channel._writer.fileno()
            self._room = select.poll()
            self._room.register(self._fd, select.POLLOUT)

    def __call__(self, message: Any) -> None:
        """Put `message` (often bytes: a message its sender pickled)."""
        if self.channel._closed:  # its descriptor's number may belong to another file now
            raise ValueError("the queue is closed")
        framed = b""
        if self._direct:  # a message its sender pickled is bytes: pickle needs no reducer
            pickled = type(message) is bytes
            framed = pickle.dumps(message, _PROTOCOL) if pickled else self._encode(message)
        # a lock held long (its holder was killed in the middle of a write) sends to the feeder
        if len(framed) <= _DIRECT_BYTES and self._direct and self._lock.acquire(True, 0.05):
            try:
                ready = self._room.poll(0)
                if ready and ready[0][1] == select.POLLOUT:  # PIPE_BUF bytes of room at least:
                    # the write cannot block
                    self.channel._sem.acquire()  # what `get` releases
                    # one write of the frame as `Connection.send_bytes` makes it (cheaper)
                    os.write(self._fd, len(framed).to_bytes(4, "big") + framed)
                    return
            finally:
                self._lock.release()
        self._direct = False
        self.channel.put(message)


class Receiver:
    """Takes the messages of `channel` in one process: ``receive(timeout)`` is
    ``channel.get(timeout=timeout)`` (raising `queue.Empty` when nothing came), cheaper on a
    multiprocessing queue.

    A multiprocessing queue's ``get`` with a timeout builds a selector for every message; here
    the pipe is polled by a poll object made once, under the queue's read lock (several
    workers may share a task queue). Any other queue (a thread's) is read by its own ``get``.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        reader: Any = getattr(channel, "_reader", None)
        self._fast = reader is not None and hasattr(channel, "_rlock") and hasattr(select, "poll")
        if self._fast:
            self._fd = reader.fileno()
            self._lock = channel._rlock
            self._release = channel._sem.release
            self._ready = select.poll()
            self._ready.register(self._fd, select.POLLIN)

    def __call__(self, timeout: float) -> Any:
        if not self._fast:
            return self.channel.get(timeout=timeout)
        if self.channel._closed:  # its descriptor's number may belong to another file now
            raise ValueError("the queue is closed")
        if not self._lock.acquire(True, timeout):
            raise queue.Empty
        try:
            if not self._ready.poll(max(int(timeout * 1000 + 0.999), 0)):
                raise queue.Empty
            raw = _read_frame(self._fd)
            self._release()  # as `get` does: the bound of a queue with a maxsize
        finally:
            self._lock.release()
        return ForkingPickler.loads(raw)


def _read_frame(fd: int) -> bytes:
    """One message from a queue's pipe, framed as `Connection.send_bytes` frames it."""
    size = int.from_bytes(_read(fd, 4), "big", signed=True)
    if size == -1:  # a message of 2 GiB or more
        size = int.from_bytes(_read(fd, 8), "big")
    return _read(fd, size)


def _read(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]
    while size > (got := sum(map(len, parts))):
        part = os.read(fd, size - got)
        if not part:
            raise EOFError("the queue's pipe was closed in the middle of a message")
        parts.append(part)
    return b"".join(parts)


_PROTOCOL = pickle.HIGHEST_PROTOCOL
#: A message written at once takes at most this many bytes (with its frames: < PIPE_BUF).
_DIRECT_BYTES = 4000
#: A queue's maxsize at least this large is unbounded in practice (multiprocessing's default).
_BIG = 1 << 20


def acquire(slots: Any, stop: Any, watch: ParentWatch | None) -> bool:
    """Take a slot of `slots`, waiting while there is none; False if told to stop meanwhile."""
    while not stop.is_set() and not (watch is not None and watch.gone()):
        if slots.acquire(True, POLL_SECONDS):
            return True
    return False


def relay(
    source: Any,
    sink: queue.Queue[Any],
    stop: Any,
    convert: Callable[[Any], Any],
    decode: Callable[[bytes], Any] = pickle.loads,
) -> None:
    """A thread of the consumer's process: `decode` the messages of `source`, `convert` them
    (to pinned memory, say) and put them in `sink`, until `stop`.

    What cannot be received or converted goes on as `Relayed`, which `WorkerGroup.receive`
    turns into the consumer's error (or a `WorkerDied` when the connection to a dead worker
    broke).
    """
    receive = Receiver(source)
    while not stop.is_set():
        try:
            raw = receive(POLL_SECONDS)
        except queue.Empty:
            continue
        except (OSError, EOFError, ValueError):  # closed: the group is shutting down
            return
        try:
            message = convert(decode(raw))
        except BaseException as error:
            message = Relayed(error)
        if not put(sink, message, stop, None):
            return
