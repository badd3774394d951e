"""The base classes of the checkpointable iterators.

`CheckpointableIterator` is the seed's abstract interface (``getstate`` / ``setstate`` /
``close``) plus torch's ``Stateful`` protocol (``state_dict`` / ``load_state_dict``), use as a
context manager, and pickling of a whole pipeline (configuration and position) so that it can be
sent to a ``spawn`` process. `Node` is the base of this package's iterators: its state layout
and checks come from `StateBase`, so a subclass only says what its configuration and position
are; a nested source's state (``getstate()``) carries no ``"version"``.
"""

from __future__ import annotations

import collections.abc
from abc import abstractmethod
from collections.abc import Iterator
from itertools import islice
from typing import Any, ClassVar

from typing_extensions import Self

from .._checks import check_sharding, require_positive
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._rng import decode_python_state, encode_python_state
from .._state import (
    READABLE_VERSIONS,
    STATE_VERSION,
    StateBase,
    check_state,
    state_int,
)

__all__ = [
    "CheckpointableIterator",
    "Node",
    "RandomState",
    "Snapshot",
    "SourceState",
    "Transform",
    "advance",
    "check_sharding",
    "plain_state",
    "require_items",
    "require_iterator",
    "require_positive",
    "snapshot",
    "stream",
    "take",
]

_NO_POSITION = object()


class CheckpointableIterator(collections.abc.Iterator[Any], StateBase):
    """An iterator whose position can be saved (`getstate`) and restored (`setstate`).

    In a pipeline, ``getstate()`` on the last iterator returns the state of the whole pipeline,
    and ``setstate(state)`` on it restores the whole pipeline; ``setstate(None)`` goes back to the
    state right after construction. `state_dict` / `load_state_dict` are the same with a
    ``"version"`` key added, for ``torch.save``, ``torch.distributed.checkpoint`` and Lightning.

    Pickling an iterator pickles its whole pipeline, configuration and position, so that a
    pipeline can be handed to another process; the unpickled copy continues where the original
    was (its functions must then be picklable: module-level functions, not lambdas).
    """

    #: Attributes that are rebuilt from the position after unpickling (live iterators, threads).
    _transient: ClassVar[tuple[str, ...]] = ()

    def __iter__(self) -> CheckpointableIterator:
        return self

    @abstractmethod
    def __next__(self) -> Any:
        """Return the next item or raise `StopIteration`."""

    @abstractmethod
    def getstate(self) -> dict[str, Any]:
        """Return the state of the pipeline up to this iterator, as plain data."""

    @abstractmethod
    def setstate(self, checkpoint: dict[str, Any] | None) -> None:
        """Restore a state from `getstate`, or the initial state when `checkpoint` is None."""

    def close(self) -> None:
        """Release processes and threads of this iterator and the iterators it reads from."""

    def _state(self) -> dict[str, Any]:
        return self.getstate()  # state_dict() (`StateBase`) adds the format "version"

    def load_state_dict(self, state_dict: dict[str, Any] | None) -> None:
        """Restore a state from `state_dict` (or from `getstate`)."""
        if state_dict is not None:
            if not isinstance(state_dict, dict):
                raise TypeError(
                    f"{type(self).__name__}.load_state_dict: a state must be a dict, "
                    f"got {type(state_dict).__name__}"
                )
            version = state_dict.get("version", STATE_VERSION)
            if version not in READABLE_VERSIONS:
                check_state(state_dict, type(self).__name__, ())  # raises, naming the versions
            state_dict = {k: v for k, v in state_dict.items() if k != "version"}
            if version == 2:  # its random states are lists of ints: read once, in today's form
                state_dict = _upgrade_random_states(state_dict, type(self).__name__)
        self.setstate(state_dict)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._transient:
            for name in self._transient:
                state.pop(name, None)
            state["_checkpointable_position"] = self.getstate()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        position = state.pop("_checkpointable_position", _NO_POSITION)
        self.__dict__.update(state)
        if position is not _NO_POSITION:
            self.setstate(position)


class Node(CheckpointableIterator):
    """Base of the package's iterators: the state layout and its checks come from `StateBase`.

    A subclass defines `_POSITION_KEYS`, `_position()` (the position), `_restore(state)` (apply
    a checked state, or the initial state for None) and, when a configuration value changes what
    a position means, `_config()` (stored in the state and compared on restore, so a mismatch
    raises a clear error instead of resuming elsewhere).

    Iterators that keep their source's state for later (the start of a block, a window, a chunk)
    take it with `snapshot(source)`: the same as ``getstate()`` but RNG states stay immutable
    tuples wrapped in `RandomState`, so taking a snapshot per block costs no list of 625 ints.
    ``getstate()`` turns a snapshot into fresh plain data once, with `plain_state`.
    """

    _state_prefix: dict[str, Any]  # "type" and the configuration, built on first use

    @abstractmethod
    def _restore(self, state: dict[str, Any] | None) -> None:
        """Apply a checked state, or the initial state when `state` is None."""

    def getstate(self) -> dict[str, Any]:
        state: dict[str, Any] = plain_state(self._snapshot())
        return state

    def _snapshot(self) -> Snapshot:
        try:
            return (self._state_prefix, self._position())
        except AttributeError:  # the configuration is fixed after construction: build it once
            self._state_prefix = {"type": type(self).__name__, **self._config()}
            return (self._state_prefix, self._position())

    def setstate(self, checkpoint: dict[str, Any] | None) -> None:
        restores[0] += 1
        if checkpoint is None:
            self._restore(None)
            return
        state = self._check(checkpoint)
        _check_nested(type(self).__name__, state)
        self._restore(state)

    def _stream(self) -> collections.abc.Iterator[Any]:
        """An iterator over this node's next items that shares its position, for a reader that
        takes many items at once (see `take`); it may stop before the real end. Stateless stages
        return a C-level chain (``map``/``filter`` over the source's stream), so a batch is read
        with no Python call per item."""
        return self


def _check_nested(owner: str, state: dict[str, Any]) -> None:
    """Check, before anything is restored, the parts of a position that other objects read:
    a nested iterator's state must be a dict (None would restart it silently), and a random
    generator's state must be one that ``random.Random.setstate`` takes."""
    for key in ("source", "control"):
        if key in state and not isinstance(state[key], dict):
            raise IncompatibleStateError(
                f"{owner}: the state's {key!r} must be the state of its {key} iterator (a "
                f"dict), got {state[key]!r:.60}"
            )
    sources = state.get("sources")
    if "sources" in state and (
        not isinstance(sources, list) or not all(isinstance(item, dict) for item in sources)
    ):
        raise IncompatibleStateError(
            f"{owner}: the state's 'sources' must be a list of iterator states (dicts), got "
            f"{sources!r:.60}"
        )
    if state.get("random_state") is not None:  # None: the object draws nothing at random
        decode_python_state(state["random_state"], owner)


class Transform(Node):
    """A `Node` reading from one `source_iterator`; its state nests under ``"source"``.

    By default the position is the source's: right for transforms that hold nothing between
    items (map, filter, batch). Others extend `_position` / `_restore`.
    """

    _POSITION_KEYS: ClassVar[tuple[str, ...]] = ("source",)

    def __init__(self, source_iterator: CheckpointableIterator) -> None:
        self._source_iterator = require_iterator(source_iterator, type(self).__name__)

    def _position(self) -> dict[str, Any]:
        return {"source": snapshot(self._source_iterator)}

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._source_iterator.setstate(None if state is None else state["source"])

    def close(self) -> None:
        self._source_iterator.close()

    def __repr__(self) -> str:
        args = "".join(f", {key}={value!r}" for key, value in self._repr_args().items())
        return f"{type(self).__name__}({self._source_iterator!r}{args})"


class WorkerStage(Transform):
    """A `Transform` fed by workers (`ParallelMapIterator`, `PrefetchIterator`).

    Its position is the source's state at a saved point (`_source_state`) plus the items
    delivered since (`_offset`, the state's `_OFFSET_KEY`). Restoring puts the source there at
    once: the saved state, then the bounded replay of the items since (so that a state the
    source cannot reach is refused at load). After ``close()``, ``next()`` and ``setstate()``
    raise `RuntimeError`, as in infinibatch. A subclass defines `_forget` (drop what was read
    ahead, before a restore) and `_shut` (stop the workers, at close).
    """

    _OFFSET_KEY: ClassVar[str]
    _closed = False
    _source_state: dict[str, Any]  # position: the source's state at the saved point
    _offset: int  # position: items delivered since
    _positioned: bool  # whether the source is at _source_state (plus _skipped items)
    _skipped = 0  # when positioned: the items the source is past _source_state

    def _forget(self) -> None:
        raise NotImplementedError

    def _shut(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(
                f"{type(self).__name__} has been closed; build a new pipeline and load a state "
                "into it to continue"
            )

    def _place_source(self) -> int:
        """Put the source at `_source_state` unless it is there; returns how many items past it
        the source is. From here on the workers move it (or read a copy)."""
        skipped = self._skipped
        if not self._positioned:
            self._source_iterator.setstate(self._source_state)
            skipped = 0
        self._positioned = False
        return skipped

    def _position(self) -> dict[str, Any]:
        return {"source": self._source_state, self._OFFSET_KEY: self._offset}

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._check_open()
        self._forget()
        source = self._source_iterator
        if state is None:
            source.setstate(None)
            self._source_state, self._offset = source.getstate(), 0
        else:
            offset = state_int(type(self).__name__, state, self._OFFSET_KEY)
            source.setstate(state["source"])
            skip_items(source, offset, offset, type(self).__name__)
            self._source_state, self._offset = state["source"], offset
        self._skipped = self._offset
        self._positioned = True

    def close(self) -> None:
        """Stop the workers (if any) and close the source pipeline; idempotent."""
        if not self._closed:
            self._closed = True
            self._shut()
            super().close()


#: A `Node`'s state, cheap to take: the pair (its shared ``"type"`` + configuration dict, its
#: position dict). `plain_state` merges them into the state's flat dict when ``getstate()`` is
#: called. A plain tuple: creating it costs no Python call (snapshots are taken per block).
Snapshot = tuple[dict[str, Any], dict[str, Any]]


class RandomState:
    """A ``random.Random.getstate()`` tuple inside a snapshot; `plain_state` turns it into lists."""

    __slots__ = ("value",)

    def __init__(self, value: tuple[Any, ...]) -> None:
        self.value = value


#: A state as iterators keep it between items: a `Snapshot`, or a loaded (plain) state.
SourceState = Snapshot | dict[str, Any]


def snapshot(iterator: CheckpointableIterator) -> SourceState:
    """The state of `iterator`, cheap to take and to keep (see `Node`)."""
    if isinstance(iterator, Node):
        return iterator._snapshot()
    return iterator.getstate()


def stream(iterator: Iterator[Any]) -> Iterator[Any]:
    """`iterator`'s fused stream (`Node._stream`), or `iterator` itself."""
    fuse = getattr(iterator, "_stream", None)  # no isinstance: an ABC check costs a Python call
    return iterator if fuse is None else fuse()


def advance(iterator: Iterator[Any], count: int) -> int:
    """Move `iterator` on by `count` items that nobody needs; returns how many it moved (fewer
    only at its end). A node with an ``_advance`` method seeks (a sequence source in O(1), a map
    without calling its transform); any other iterator reads and drops the items."""
    seek = getattr(iterator, "_advance", None)
    if seek is not None:
        return int(seek(count))
    return sum(1 for _ in islice(iterator, count))


#: Counts the restores (``setstate``) of all nodes: a reader that keeps a fused stream between
#: calls rebuilds it when this has changed, as a restore replaces the iterators inside it.
restores = [0]


def take(iterator: Iterator[Any], count: int) -> list[Any]:
    """The next `count` items of `iterator` (fewer only at its end), read through its stream."""
    items = list(islice(stream(iterator), count))
    while len(items) < count:  # the stream stopped early (e.g. a pass's end), or the end
        try:
            items.append(next(iterator))
        except StopIteration:
            break
        items.extend(islice(stream(iterator), count - len(items)))
    return items


def plain_state(value: Any) -> Any:
    """A fresh plain copy of a snapshot: dicts and lists rebuilt, RNG states as lists."""
    kind = type(value)
    if kind is tuple:  # a Snapshot: states never hold tuples otherwise
        prefix, position = value
        state = prefix.copy()
        for key, item in position.items():
            state[key] = plain_state(item)
        return state
    if kind is dict:
        return {key: plain_state(item) for key, item in value.items()}
    if kind is list:
        return [plain_state(item) for item in value]
    if kind is RandomState:
        return encode_python_state(value.value)
    return value


def _upgrade_random_states(value: Any, owner: str) -> Any:
    """A copy of the format-2 state `value` with its random states (lists of ints) in today's
    encoding, so a state taken right after the load is the one the uninterrupted run writes."""
    if isinstance(value, dict):
        return {
            key: encode_python_state(decode_python_state(item, owner))
            if key == "random_state" and isinstance(item, list)
            else _upgrade_random_states(item, owner)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_upgrade_random_states(item, owner) for item in value]
    return value


def require_iterator(
    value: Any, owner: str, name: str = "source_iterator"
) -> CheckpointableIterator:
    """Return `value` if it is a `CheckpointableIterator`, else raise `ArgumentTypeError`."""
    if not isinstance(value, CheckpointableIterator):
        raise ArgumentTypeError(
            f"{owner}: {name} must be a CheckpointableIterator, got {type(value).__name__}; "
            "wrap an iterable in NativeCheckpointableIterator(...) or a source iterator first"
        )
    return value


def skip_items(source: Any, count: int, offset: int, owner: str) -> None:
    """Skip `count` items of `source`, the last `count` of the `offset` items a state says were
    delivered since the source's saved position; a source that ends first was saved over other
    data."""
    for done in range(count):
        try:
            next(source)
        except StopIteration:
            raise IncompatibleStateError(
                f"{owner}: the state is {offset} items past its source's saved position, but the "
                f"source ends after {offset - count + done}; it was saved over other data"
            ) from None


def require_items(owner: str, items: Any) -> int:
    """Return ``len(items)`` after checking that `items` is a non-empty sized collection."""
    if not hasattr(items, "__len__"):
        raise ArgumentTypeError(
            f"{owner}: source_items must be a list or sequence, got {type(items).__name__}"
        )
    size = len(items)
    if size == 0:
        raise ValueError(f"{owner}: source_items must not be empty")
    return size
