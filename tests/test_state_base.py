"""`StateBase`: the one state layout (type, configuration check, version on the outermost
state only) and the loading of version-2 states recorded before nested states lost "version"."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import torch

from checkpointable import STATE_VERSION, IncompatibleStateError
from checkpointable._state import StateBase
from checkpointable.testing import assert_resumable

from . import _state_v2


class Counter(StateBase):
    """A count from `start` by `step`: configuration `step`, position `count`."""

    _POSITION_KEYS = ("count", "child")

    def __init__(self, step: int = 1, child: Counter | None = None) -> None:
        self.step = step
        self.count = 0
        self.child = child

    def __iter__(self) -> Counter:
        return self

    def __next__(self) -> int:
        self.count += self.step
        if self.child is not None:
            next(self.child)
        return self.count

    def _config(self) -> dict[str, Any]:
        return {"step": self.step}

    def _position(self) -> dict[str, Any]:
        child = None if self.child is None else StateBase.nested_state(self.child)
        return {"count": self.count, "child": child}

    def _restore(self, state: dict[str, Any]) -> None:
        if self.child is not None:
            StateBase.load_nested(self.child, state["child"])
        self.count = state["count"]


class Picky(Counter):
    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        return f"Picky: counts by {state['step']} at save, by {config['step']} now"


def test_state_names_the_type_configuration_and_position_with_the_version() -> None:
    counter = Counter(step=2)
    next(counter)
    assert counter.state_dict() == {
        "version": STATE_VERSION,
        "type": "Counter",
        "step": 2,
        "count": 2,
        "child": None,
    }
    assert STATE_VERSION == 3


def test_version_only_on_the_outermost_state() -> None:
    parent = Counter(child=Counter(step=5))
    next(parent)
    state = parent.state_dict()
    assert state["version"] == STATE_VERSION
    assert state["child"] == {"type": "Counter", "step": 5, "count": 5, "child": None}


def test_nested_round_trip_survives_json_and_torch_load() -> None:
    parent = Counter(child=Counter(step=5))
    next(parent), next(parent)
    state = parent.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    for loaded in (json.loads(json.dumps(state)), torch.load(buffer, weights_only=True)):
        assert loaded == state
        restored = Counter(child=Counter(step=5))
        restored.load_state_dict(loaded)
        assert restored.state_dict() == state
        assert [next(restored) for _ in range(2)] == [3, 4] and restored.child is not None
        assert restored.child.count == 20


def test_configuration_mismatch_names_the_key_and_both_values() -> None:
    state = Counter(step=2).state_dict()
    with pytest.raises(IncompatibleStateError, match=r"Counter: .*step=2.*step=3"):
        Counter(step=3).load_state_dict(state)


def test_custom_mismatch_message() -> None:
    state = {**Counter(step=2).state_dict(), "type": "Picky"}
    with pytest.raises(IncompatibleStateError, match="Picky: counts by 2 at save, by 3 now"):
        Picky(step=3).load_state_dict(state)
    Picky(step=2).load_state_dict(state)  # equal configuration: no message asked for


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "Other"}, "saved by 'Other', not by 'Counter'"),
        ({"extra": 1}, r"unexpected key\(s\) \['extra'\]"),
        (
            {"version": 99},
            "format version 99, this release of checkpointable reads Counter states of versions 2 "
            "and 3",
        ),
        ({"version": "3"}, "format version '3'"),
    ],
)
def test_refused_states(change: dict[str, Any], message: str) -> None:
    state = {**Counter().state_dict(), **change}
    with pytest.raises(IncompatibleStateError, match=message):
        Counter().load_state_dict(state)


def test_missing_keys_and_non_dicts_are_refused() -> None:
    state = Counter().state_dict()
    del state["count"]
    with pytest.raises(IncompatibleStateError, match=r"lacks the key\(s\) \['count'\]"):
        Counter().load_state_dict(state)
    with pytest.raises(TypeError, match="a state must be a dict, got list"):
        Counter().load_state_dict([])  # type: ignore[arg-type]


def test_nested_version_of_2_or_3_is_accepted_and_ignored() -> None:
    parent = Counter(child=Counter(step=5))
    next(parent)
    state = parent.state_dict()
    for version in (2, 3):
        old = {**state, "version": version, "child": {**state["child"], "version": version}}
        restored = Counter(child=Counter(step=5))
        restored.load_state_dict(old)
        assert restored.state_dict() == state


def test_repr_shows_the_configuration() -> None:
    assert repr(Counter(step=4)) == "Counter(step=4)"


def test_resumable_through_the_testing_check() -> None:
    assert_resumable(lambda: Counter(step=3, child=Counter()), max_items=12)


@pytest.mark.parametrize("name", ["pipeline", "sampler", "stream"])
def test_version_2_states_still_load(name: str) -> None:
    saved = json.loads((_state_v2.DATA / f"{name}_state_v2.json").read_text())
    assert saved["version"] == 2
    expected, items = _state_v2.advanced(name)
    expected_state = expected.state_dict()
    expected_next = [next(items) for _ in range(4)]
    resumed: Any
    if name == "stream":
        resumed = _state_v2.stream()
        resumed.load_state_dict(saved)
        assert "version" not in resumed.state_dict()["loader"]
        epochs = resumed.epochs(3, progress_bar=False)
        resumed_items = (item for epoch in epochs for item in epoch)
    else:
        resumed = _state_v2.pipeline() if name == "pipeline" else _state_v2.sampler()
        resumed.load_state_dict(saved)
        resumed_items = iter(resumed)
    assert resumed.state_dict() == expected_state  # the version-3 state, version only outermost
    assert expected_state["version"] == STATE_VERSION
    assert [next(resumed_items) for _ in range(4)] == expected_next
