"""What travels between a consumer and its workers: typed messages, failures, and pickling.

Every message is pickled by its sender (`dumps`, or an `Encoder` for a stream of them), so that
an unpicklable item fails synchronously where it was made and can be reported, instead of being
dropped by a queue's feeder thread. Pickling goes through multiprocessing's `ForkingPickler`,
so torch tensors travel through shared memory.
"""

from __future__ import annotations

import copyreg
import enum
import io
import pickle
import traceback
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any, NoReturn

__all__ = [
    "Encoder",
    "Kind",
    "Relayed",
    "RemoteTraceback",
    "Reply",
    "Task",
    "WorkerFailure",
    "dumps",
]


class Kind(enum.IntEnum):
    """What a `Reply` carries."""

    ITEMS = 0  # data: the items (or batch) asked for, then `failure` if not None
    END = 1  # the source has nothing more
    READY = 2  # the worker started (`failure`: a failure of its start-up, or None)


#: A request from the consumer to a worker, as it travels: ``(task, generation, payload,
#: begin)``, a plain tuple (pickled, a class costs three times as much each way):
#:
#: - task: the consumer's id of the task (unique per generation);
#: - generation: the consumer's generation the task belongs to (older ones are dropped);
#: - payload: what to do (indices, items, a stream number, an epoch start);
#: - begin: whether this task begins a generation (an epoch) instead of asking for data.
Task = tuple[int, int, Any, bool]


@dataclass(slots=True)
class Reply:
    """A message from a worker to the consumer.

    Attributes:
        kind: what `data` is.
        task: the id of the task answered (-1: none).
        worker: the index of the worker that answers.
        generation: the generation of that task.
        data: items or a batch.
        state: the state of the worker's source after `data`, when the owner asks for it.
        exhausted: whether the source is known to have nothing after `data`.
        failure: an exception raised after `data` was made (a `WorkerFailure`, or the owner's
            own wrapper), or None.
    """

    kind: Kind
    task: int = -1
    worker: int = 0
    generation: int = 0
    data: Any = None
    state: Any = None
    exhausted: bool = False
    failure: Any = None

    def __reduce__(self) -> tuple[Any, ...]:  # a third of the default's cost, either way
        return _reply, self.wire()

    def wire(self) -> tuple[Any, ...]:
        """The reply as `Encoder` and `dumps` send it: the tuple of its fields, the kind as an
        int (a plain tuple pickles at a fifth of the cost of a class, each way); `unwire`
        makes it a `Reply` again."""
        fields = (self.task, self.worker, self.generation, self.data, self.state)
        return (int(self.kind), *fields, self.exhausted, self.failure)

    @staticmethod
    def unwire(message: Any) -> Any:
        """A decoded message of a worker: a `wire` tuple made a `Reply` again (anything else
        as it is)."""
        if type(message) is not tuple:
            return message
        kind, task, worker, generation, data, state, exhausted, failure = message
        return Reply(_KINDS[kind], task, worker, generation, data, state, exhausted, failure)


def _reply(kind: int, *fields: Any) -> Reply:
    return Reply(_KINDS[kind], *fields)


_KINDS = list(Kind)  # a kind's value is its index in this list


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__``."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


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


@dataclass(slots=True)
class Relayed:
    """What a relay thread puts in place of a message it could not receive or convert."""

    error: BaseException


def dumps(message: Any) -> bytes:
    """Pickle a message as multiprocessing would (torch tensors go through shared memory)."""
    buffer = io.BytesIO()
    ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL).dump(_wired(message))
    return buffer.getvalue()


class Encoder:
    """`dumps` for a stream of messages: one `ForkingPickler` reused, since creating one copies
    the whole reducer table (~3 us); it is rebuilt when reducers are registered meanwhile
    (e.g. torch, imported by the pipeline after the worker started)."""

    def __init__(self) -> None:
        self._buffer = io.BytesIO()
        self._pickler: Any = None
        self._reducers = -1

    def _make_pickler(self, buffer: io.BytesIO) -> Any:
        return ForkingPickler(buffer, pickle.HIGHEST_PROTOCOL)

    def __call__(self, message: Any) -> bytes:
        reducers = len(copyreg.dispatch_table) + len(getattr(ForkingPickler, "_extra_reducers", ()))
        buffer = self._buffer
        if reducers != self._reducers:
            self._pickler = self._make_pickler(buffer)
            self._reducers = reducers
        buffer.seek(0)
        buffer.truncate()
        self._pickler.clear_memo()
        self._pickler.dump(_wired(message))
        return buffer.getvalue()


def _wired(message: Any) -> Any:
    """What is pickled for `message`: a `Reply`'s `wire` tuple, anything else as it is."""
    return message.wire() if type(message) is Reply else message
