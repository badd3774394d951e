"""The state of `Stream`: its layout, and the checks of a state before it is loaded.

With a stateful loader the state is ``{"type": "Stream", "version", "epoch", "iteration",
"in_epoch", "epoch_items", "epoch_size", "epoch_aligned", "iterating", "data_over",
"loader_type", "loader"}``; with a stateless one it is the seed's ``{"epoch", "iteration"}``.
The loader's state is nested as `StateBase.nested_state` gives it (without a ``"version"`` for
the package's objects) and loaded with `StateBase.load_nested`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._errors import IncompatibleStateError
from .._state import STATE_VERSION, StateBase, check_state, plain_copy, state_int

__all__ = ["Position", "read_state", "write_state"]

COUNTERS = ("epoch", "iteration")
KEYS = (
    *COUNTERS,
    "in_epoch",
    "epoch_items",
    "epoch_size",
    "epoch_aligned",
    "iterating",
    "data_over",
    "loader_type",
    "loader",
)


@dataclass(frozen=True)
class Position:
    """A checked state: where the loop is. `full` is False for the seed's two counters."""

    epoch: int
    iteration: int
    full: bool = False
    epoch_start: int | None = None  # iteration where the epoch in progress began (None: none)
    epoch_size: int | None = None  # its size (None: no limit)
    iterating: bool = False  # the stream holds an iter(loader)
    data_over: bool = False
    epoch_aligned: bool = False  # the epoch in progress began with a pass of the loader
    loader: Any = None  # the loader's state


def write_state(position: Position, loader: Any) -> dict[str, Any]:
    """The state of a stream at `position` over `loader` (stateful when ``position.full``)."""
    if not position.full:
        return {"epoch": position.epoch, "iteration": position.iteration}
    start = position.epoch_start
    return {
        "type": "Stream",
        "version": STATE_VERSION,
        "epoch": position.epoch,
        "iteration": position.iteration,
        "in_epoch": start is not None,
        "epoch_items": 0 if start is None else position.iteration - start,
        "epoch_size": None if start is None else position.epoch_size,
        "epoch_aligned": start is not None and position.epoch_aligned,
        "iterating": position.iterating,
        "data_over": position.data_over,
        "loader_type": type(loader).__name__,
        "loader": plain_copy(
            StateBase.nested_state(loader), "Stream.state_dict: the loader's state"
        ),
    }


def read_state(state_dict: Any, loader: Any, stateful: bool) -> Position:
    """Check a state for a stream over `loader`; raise `IncompatibleStateError` naming the issue."""
    if not isinstance(state_dict, dict):
        raise TypeError(f"Stream: a state must be a dict, got {type(state_dict).__name__}")
    kind = type(loader).__name__
    if "type" not in state_dict and set(state_dict) == set(COUNTERS):
        if stateful:
            raise IncompatibleStateError(
                "Stream: the state holds only 'epoch' and 'iteration' (saved over a loader "
                f"without state_dict()), but this stream's loader ({kind}) is stateful and its "
                "position would not be restored"
            )
        epoch, iteration = (state_int("Stream", state_dict, key) for key in COUNTERS)
        return Position(epoch, iteration)
    if not stateful:
        if state_dict.get("type") == "Stream":
            raise IncompatibleStateError(
                f"Stream: the state holds the position of a {state_dict.get('loader_type')!r} "
                f"loader, but this stream's loader ({kind}) has no state_dict() / "
                "load_state_dict(); build the stream over the loader the state was saved with"
            )
        check_state(state_dict, "Stream", COUNTERS)  # raises, naming what it found
    state = check_state(state_dict, "Stream", KEYS)
    if state["loader_type"] != kind:
        raise IncompatibleStateError(
            f"Stream: the state holds the position of a {state['loader_type']!r} loader, but "
            f"this stream's loader is a {kind!r}; build the stream over (or set_loader() to) "
            "the loader the state was saved with"
        )
    epoch, iteration, items = (state_int("Stream", state, k) for k in (*COUNTERS, "epoch_items"))
    if items > iteration:
        raise IncompatibleStateError(
            f"Stream: the state's epoch_items={items} exceeds its iteration={iteration}"
        )
    in_epoch = _state_bool(state, "in_epoch")
    size = state["epoch_size"]
    if size is not None:
        size = state_int("Stream", state, "epoch_size", minimum=1)
    return Position(
        epoch,
        iteration,
        full=True,
        epoch_start=iteration - items if in_epoch else None,
        epoch_size=size if in_epoch else None,
        iterating=_state_bool(state, "iterating"),
        data_over=_state_bool(state, "data_over"),
        epoch_aligned=_state_bool(state, "epoch_aligned") and in_epoch,
        loader=state["loader"],
    )


def _state_bool(state: dict[str, Any], key: str) -> bool:
    value = state[key]
    if type(value) is not bool:
        raise IncompatibleStateError(f"Stream: the state's {key!r} must be a bool, got {value!r}")
    return value
