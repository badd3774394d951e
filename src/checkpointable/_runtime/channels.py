"""Blocking waits that stay responsive: a put, a slot, a relay thread.

Each wait wakes up every `POLL_SECONDS` to see whether it was told to stop or (in a worker)
whether its consumer is gone, so nothing blocks forever on a peer that died.
"""

from __future__ import annotations

import pickle
import queue
from collections.abc import Callable
from typing import Any

from .messages import Relayed
from .watch import ParentWatch

__all__ = ["POLL_SECONDS", "acquire", "put", "relay"]

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
    while not stop.is_set():
        try:
            raw = source.get(timeout=POLL_SECONDS)
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
