"""The state protocol, defined once for every stateful object of the package.

Every stateful object has ``state_dict() -> dict`` and ``load_state_dict(state)``: torch's
``Stateful`` protocol, so ``torch.distributed.checkpoint`` and Lightning can save it. A state is
plain data only: ``dict`` (str keys), ``list``, ``str``, ``int``, ``float``, ``bool`` and
``None``, so it survives ``json`` and ``torch.load(weights_only=True)`` unchanged. Each state
names the class that wrote it under the key ``"type"``; the outermost state also carries the
format ``"version"``. The helpers here check a state before it is loaded and raise
`IncompatibleStateError` naming what differs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, Protocol, runtime_checkable

from ._errors import IncompatibleStateError

__all__ = [
    "READABLE_VERSIONS",
    "STATE_VERSION",
    "StateBase",
    "Stateful",
    "check_config",
    "check_plain",
    "check_state",
    "plain_copy",
    "state_int",
]

#: Version of the state format written by this release; stored under ``"version"``.
STATE_VERSION = 3

#: The format versions this release reads. Version 2 differs in that nested states carried a
#: ``"version"`` of their own too (accepted and ignored there) and random states were lists of ints
#: (`_rng` still reads them).
READABLE_VERSIONS = (2, STATE_VERSION)

_SCALARS = (str, int, float, bool, type(None))
_SCALAR_SET = frozenset(_SCALARS)


@runtime_checkable
class Stateful(Protocol):
    """An object whose position can be saved and restored: torch's ``Stateful`` protocol.

    Usable as a structural type (``isinstance(obj, Stateful)`` is true for anything with both
    methods) and as a mixin, as in torchdata:

    >>> import torch.utils.data
    >>> class Counter(torch.utils.data.IterableDataset, Stateful):
    ...     def __init__(self):
    ...         self.i = 0
    ...     def __iter__(self):
    ...         while True:
    ...             self.i += 1
    ...             yield self.i
    ...     def state_dict(self):
    ...         return {"i": self.i}
    ...     def load_state_dict(self, state_dict):
    ...         self.i = state_dict["i"]
    >>> isinstance(Counter(), Stateful)
    True
    """

    def state_dict(self) -> dict[str, Any]:
        """Return the position as plain data."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state returned by `state_dict`."""
        ...


def check_plain(value: Any, where: str = "state") -> None:
    """Raise `TypeError` naming the first part of `value` that is not plain data.

    >>> check_plain({"a": [1, 2.5, None, "x", True]})
    >>> check_plain({"a": (1, 2)})
    Traceback (most recent call last):
    ...
    TypeError: state['a'] is a tuple; a state holds only dict (str keys), list, str, int, float, bool and None
    """
    plain_copy(value, where)


def plain_copy(value: Any, where: str = "state") -> Any:
    """Return a copy of `value` with fresh containers, after checking that it is plain data.

    Used where a state embeds data given by the user (a recurrent state, a dataset's own
    state): the copy cannot change when the user mutates their object afterwards.
    Scalars are immutable and shared; dicts and lists are rebuilt. The location of a value that
    is not plain data is only worked out when there is one, to name it in the error.
    """
    try:
        return _copy(value)
    except _NotPlain:
        _locate(value, where)
        raise  # unreachable: _locate raises


class _NotPlain(Exception):
    pass


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind in _SCALARS:  # exact types: numpy scalars and enums are subclasses, and not plain
        return value
    if kind is list:
        if set(map(type, value)) <= _SCALAR_SET:  # a list of scalars: copied in C
            return value.copy()
        return [_copy(item) for item in value]
    if kind is dict:
        out = {}
        for key, item in value.items():
            if type(key) is not str:
                raise _NotPlain
            out[key] = _copy(item)
        return out
    raise _NotPlain


def _locate(value: Any, where: str) -> None:
    """Raise `TypeError` naming the first part of `value` that is not plain data."""
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is list:
        for i, item in enumerate(value):
            _locate(item, f"{where}[{i}]")
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "a state's dict keys must be str"
                )
            _locate(item, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; a state holds only dict (str keys), list, str, "
        "int, float, bool and None"
    )


def check_state(
    state: Any,
    kind: str,
    keys: Iterable[str],
    owner: str | None = None,
    versions: tuple[int, ...] = READABLE_VERSIONS,
) -> dict[str, Any]:
    """Check that `state` is a dict written by `kind` with exactly `keys`; return it.

    The keys ``"type"`` (which must equal `kind`) and an optional ``"version"`` (one of
    `versions`, the last one when absent) are implied. `owner` names the object loading the state
    in messages.

    >>> check_state({"type": "A", "n": 1}, "A", ["n"])
    {'type': 'A', 'n': 1}
    >>> check_state({"type": "B", "n": 1}, "A", ["n"])
    Traceback (most recent call last):
    ...
    checkpointable._errors.IncompatibleStateError: A: the state was saved by 'B', not by 'A'
    """
    owner = owner or kind
    if not isinstance(state, dict):
        raise TypeError(f"{owner}: a state must be a dict, got {type(state).__name__}")
    found = state.get("type")
    if found != kind:
        raise IncompatibleStateError(f"{owner}: the state was saved by {found!r}, not by {kind!r}")
    version = state.get("version", versions[-1])
    if type(version) is not int or version not in versions:
        readable = ", ".join(map(str, versions[:-1])) + f" and {versions[-1]}"
        raise IncompatibleStateError(
            f"{owner}: the state has format version {version!r}, this release of "
            f"checkpointable reads {kind} states of versions {readable}"
        )
    expected = set(keys)
    missing = sorted(expected - state.keys())
    if missing:
        raise IncompatibleStateError(f"{owner}: the state lacks the key(s) {missing}")
    unknown = sorted(state.keys() - expected - {"type", "version"})
    if unknown:
        raise IncompatibleStateError(f"{owner}: the state has unexpected key(s) {unknown}")
    return state


def check_config(owner: str, state: dict[str, Any], **expected: Any) -> None:
    """Raise if the configuration recorded in `state` differs from the loading object's.

    >>> check_config("X", {"seed": 1}, seed=2)
    Traceback (most recent call last):
    ...
    checkpointable._errors.IncompatibleStateError: X: the state was saved with seed=1, but this object has seed=2
    """
    for key, value in expected.items():
        if state[key] != value:
            raise IncompatibleStateError(
                f"{owner}: the state was saved with {key}={state[key]!r}, "
                f"but this object has {key}={value!r}"
            )


def state_int(owner: str, state: dict[str, Any], key: str, minimum: int = 0) -> int:
    """Return ``state[key]`` after checking that it is an int >= `minimum`."""
    value = state[key]
    if type(value) is not int or value < minimum:
        raise IncompatibleStateError(
            f"{owner}: the state's {key!r} must be an int >= {minimum}, got {_describe(value)}"
        )
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


class StateBase:
    """The state layout, written once: ``{"type": <class name>, <configuration>...,
    <position>...}``, plus ``"version"`` (`STATE_VERSION`) on the outermost state only.

    A subclass declares its configuration (`_config`: stored, and compared on load so that a
    state saved with another one is refused naming the key and both values; `_config_mismatch`
    may say more) and its position (`_POSITION_KEYS`, `_position`, `_restore`). A parent nests a
    child's state with `nested_state` (no ``"version"``) and loads it with `load_nested`. A class
    with a format of its own names it (`_STATE_TYPE`, `_VERSIONS`: those read, the last one
    written) and rewrites an older state as the current one in `_check`.
    """

    _POSITION_KEYS: ClassVar[tuple[str, ...]] = ()
    _STATE_TYPE: ClassVar[str | None] = None  # the state's "type" (None: the class name)
    _VERSIONS: ClassVar[tuple[int, ...]] = READABLE_VERSIONS

    def _config(self) -> dict[str, Any]:
        return {}

    def _position(self) -> dict[str, Any]:
        raise NotImplementedError

    def _restore(self, state: dict[str, Any]) -> None:
        """Apply a state whose type, keys and configuration were checked."""
        raise NotImplementedError

    def _state_owner(self) -> str:
        return type(self).__name__  # who loads the state, in messages

    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        """A message for a saved configuration that differs (None: the generic one)."""
        return None

    def _state_type(self) -> str:
        return self._STATE_TYPE or type(self).__name__

    def _state(self) -> dict[str, Any]:
        return {"type": self._state_type(), **self._config(), **self._position()}

    def state_dict(self) -> dict[str, Any]:
        """Return the configuration and the position as plain data, with the format version."""
        return {"version": self._VERSIONS[-1], **self._state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state returned by `state_dict`.

        Raises:
            IncompatibleStateError: the state was saved by another class, with another
                configuration (the message names what differs), or in another format version.
        """
        self._restore(self._check(state_dict))

    def _check(self, state_dict: Any) -> dict[str, Any]:
        owner, config = self._state_owner(), self._config()
        keys = (*config, *self._POSITION_KEYS)
        state = check_state(state_dict, self._state_type(), keys, owner, self._VERSIONS)
        if any(state[key] != value for key, value in config.items()):
            message = self._config_mismatch(state, config)
            if message is not None:
                raise IncompatibleStateError(message)
            check_config(owner, state, **config)
        return state

    @staticmethod
    def nested_state(child: Any) -> Any:
        """`child`'s state without ``"version"``; another package's object's as it gives it. An
        object whose state a `StateBase` part of it writes names that part `_state_base`."""
        base = getattr(child, "_state_base", child)
        return base._state() if isinstance(base, StateBase) else child.state_dict()

    @staticmethod
    def load_nested(child: Any, state: Any) -> None:
        """Load a state from `nested_state` (a version-2 one has a ``"version"``: ignored)."""
        child.load_state_dict(state)

    def _repr_args(self) -> dict[str, Any]:
        return self._config()

    def __repr__(self) -> str:
        args = ", ".join(f"{key}={value!r}" for key, value in self._repr_args().items())
        return f"{type(self).__name__}({args})"
