"""The StatefulDataLoader state: plain, small, documented, and checked on load."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import RandomSampler

from checkpointable import IncompatibleStateError
from checkpointable._loader.state import LOADER_STATE_VERSION
from checkpointable._loader.state_layout import CONFIG, POSITION
from checkpointable._state import check_plain
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.samplers import ResumableRandomSampler
from tests._loader_data import CountingNoise, CountingSampler, Squares, StatefulPartitioned, sharded
from tests._loader_states_v3 import plain

DOCS = Path(__file__).resolve().parent.parent / "docs" / "state_format.md"


def keys(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a state, with list entries written as [i] / [w]."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            found.add(prefix + key)
            found |= keys(item, f"{prefix}{key}.")
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        found |= keys(value[0], prefix[:-1] + "[*].")
    return found


def states() -> dict[str, dict[str, Any]]:
    """States of each dataset kind, mid-epoch, with workers."""
    out = {}
    for name, loader in (
        ("map", StatefulDataLoader(CountingNoise(9), batch_size=2, num_workers=0)),
        ("iterable", StatefulDataLoader(StatefulPartitioned(9), batch_size=2)),
        ("sharded", StatefulDataLoader(sharded(9, 3), batch_size=2)),
    ):
        batches = iter(loader)
        next(batches)
        out[name] = loader.state_dict()
    return out


def test_every_entry_is_documented() -> None:
    text = DOCS.read_text()
    for key, fields in POSITION.items():
        for index, field in enumerate(fields):
            if key == "sources" and index < 2:
                assert f"| `{key}[{index}]` (`{field.name}`) |" in text, field.name
            else:
                assert f"| `{key}[{index}]` | `{field.name}` |" in text, field.name
    for kind, fields in CONFIG.items():
        names = ", ".join(f"`{field.name}`" for field in fields)
        assert f"| `config[1:]`, {kind} | {names} |" in text, kind
    for name, state in states().items():
        assert list(state) == ["version", "type", "config", *POSITION], name
        entries = state["sources"][0] or state["sources"][1]
        for entry in entries:
            for key in entry:
                documented = f"`dataset_states[w].{key}`", f"`streams[i].{key}`"
                assert any(d in text for d in documented), f"{name}: {key}"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_map_style_state_is_plain_and_under_a_kilobyte(num_workers: int) -> None:
    torch.manual_seed(0)
    loader = StatefulDataLoader(
        Squares(10**6), batch_size=64, shuffle=True, num_workers=num_workers
    )
    snapshots = [loader.state_dict()]
    batches = iter(loader)
    for _ in range(3):
        next(batches)
        snapshots.append(loader.state_dict())
    loader.close()
    for state in snapshots:
        check_plain(state)
        text = json.dumps(state)
        assert len(text) < 1024, text
        assert json.loads(text) == state
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True) == state
        # the loader has its own format version, the other objects STATE_VERSION
        assert state["version"] == LOADER_STATE_VERSION and state["type"] == "StatefulDataLoader"


def versions(value: Any) -> int:
    """How many "version" keys a state holds, at any depth."""
    if isinstance(value, dict):
        return ("version" in value) + sum(versions(item) for item in value.values())
    return sum(versions(item) for item in value) if isinstance(value, list) else 0


class VersionedSampler(CountingSampler):
    """Another package's sampler whose own state has a "version": stored as it gives it."""

    def state_dict(self) -> dict[str, Any]:
        return {"version": 7, **super().state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert state["version"] == 7
        super().load_state_dict({key: value for key, value in state.items() if key != "version"})


@pytest.mark.parametrize("workers", [0, 2])
def test_the_package_s_nested_states_carry_no_version_another_s_as_it_gives_it(
    workers: int,
) -> None:
    made = (
        lambda: StatefulDataLoader(
            Squares(20),
            batch_size=3,
            sampler=ResumableRandomSampler(range(20), seed=5, batch_size=3),
            num_workers=workers,
        ),
        lambda: StatefulDataLoader(sharded(20, 4), batch_size=3, num_workers=workers),
        lambda: StatefulDataLoader(
            Squares(20), batch_size=3, sampler=VersionedSampler(20), num_workers=workers
        ),
    )
    for index, make in enumerate(made):
        loader = make()
        batches = iter(loader)
        next(batches)
        state = loader.state_dict()
        rest = [plain(batch) for batch in batches]
        assert versions(state) == (2 if index == 2 else 1)  # the loader's own, the foreign one
        if index == 2:
            assert state["order"][2] == {"version": 7, "passes": 0, "i": 3}
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(state)))
        assert [plain(batch) for batch in resumed] == rest
        loader.close()
        resumed.close()


def test_a_state_never_changes_after_it_was_taken() -> None:
    loader = StatefulDataLoader(StatefulPartitioned(20), batch_size=2)
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    frozen = json.dumps(state)
    list(batches)
    assert json.dumps(state) == frozen
    state["sources"][1][0]["replay"] = 99
    assert loader.state_dict()["sources"][1][0]["replay"] != 99


def _map(n: int = 10, batch_size: int = 2, **kwargs: Any) -> StatefulDataLoader:
    return StatefulDataLoader(Squares(n), batch_size=batch_size, **kwargs)


@pytest.mark.parametrize(
    ("saved", "loading", "pattern"),
    [
        (_map(10), _map(11), r"dataset_length=10, but this object has dataset_length=11"),
        (_map(batch_size=2), _map(batch_size=3), r"batch_size=2, but this object has batch_size=3"),
        (
            _map(shuffle=True),
            _map(shuffle=False),
            r"saved with another sampler \(fingerprint '[0-9a-f]{16}'\) than this loader's "
            r"sampler='SequentialSampler' \(fingerprint '[0-9a-f]{16}'\)",
        ),
        (
            _map(sampler=CountingSampler(10)),
            _map(sampler=RandomSampler(range(10))),
            r"another sampler .* than this loader's sampler='RandomSampler",
        ),
        (_map(drop_last=True), _map(), r"drop_last=True, but this object has drop_last=False"),
        (
            _map(),
            StatefulDataLoader(StatefulPartitioned(10), batch_size=2),
            r"dataset_kind='map', but this object has dataset_kind='iterable'",
        ),
        (
            StatefulDataLoader(sharded(10, 3), batch_size=2),
            StatefulDataLoader(sharded(10, 4), batch_size=2),
            r"num_shards=3, but this object has num_shards=4",
        ),
    ],
)
def test_a_state_from_another_configuration_is_refused(
    saved: StatefulDataLoader, loading: StatefulDataLoader, pattern: str
) -> None:
    state = saved.state_dict()
    with pytest.raises(IncompatibleStateError, match=pattern):
        loading.load_state_dict(state)


def test_damaged_states_are_refused_clearly() -> None:
    loader = _map()
    good = loader.state_dict()
    with pytest.raises(TypeError, match="a state must be a dict, got list"):
        loader.load_state_dict([])  # type: ignore[arg-type]
    with pytest.raises(IncompatibleStateError, match="saved by 'Other'"):
        loader.load_state_dict({**good, "type": "Other"})
    with pytest.raises(IncompatibleStateError, match="format version 99"):
        loader.load_state_dict({**good, "version": 99})
    with pytest.raises(IncompatibleStateError, match=r"lacks the key\(s\) \['position'\]"):
        loader.load_state_dict({k: v for k, v in good.items() if k != "position"})
    with pytest.raises(
        IncompatibleStateError, match=r"'batches' \(position\[2\]\) must be int >= 0"
    ):
        loader.load_state_dict({**good, "position": [0, True, -1, []]})
    with pytest.raises(IncompatibleStateError, match="'delivered_beyond' must be a list of ints"):
        loader.load_state_dict({**good, "position": [0, True, 2, [1]]})
    with pytest.raises(IncompatibleStateError, match=r"'in_epoch' \(position\[1\]\) must be bool"):
        loader.load_state_dict({**good, "position": [0, 1, 0, []]})
    with pytest.raises(IncompatibleStateError, match=r"'position' must be a list of \['epoch'"):
        loader.load_state_dict({**good, "position": [0, True, 0]})
    with pytest.raises(IncompatibleStateError, match=r"'generator_state' must be a torch"):
        loader.load_state_dict(
            {**good, "order": [None, {"kind": "torch", "data": "x"}, None, False]}
        )
    assert loader.state_dict() == good  # a refused state changes nothing


@pytest.mark.parametrize("sampler", [None, "plain"])
def test_a_position_beyond_the_end_of_the_data_is_refused_at_load(sampler: str | None) -> None:
    from tests._loader_data import PlainSampler

    loader = _map(10, sampler=PlainSampler(10) if sampler else None)
    state = loader.state_dict()
    before = loader.state_dict()
    state["position"] = [0, True, 9, []]
    with pytest.raises(IncompatibleStateError, match="at batch 9 of its epoch, but an epoch of"):
        loader.load_state_dict(state)
    assert loader.state_dict() == before  # a refused state leaves the loader as it was
    assert len(list(loader)) == 5


def test_state_dict_before_iterating_mid_epoch_and_between_epochs() -> None:
    torch.manual_seed(3)
    loader = _map(7, 3, shuffle=True)
    first = loader.state_dict()
    assert first["position"][:3] == [0, False, 0]
    batches = iter(loader)
    next(batches)
    middle = loader.state_dict()
    assert middle["position"][:3] == [0, True, 1]
    rest = list(batches)
    last = loader.state_dict()
    assert (*last["position"][:2], len(rest)) == (1, False, 2)
    resumed = _map(7, 3, shuffle=True)
    resumed.load_state_dict(middle)
    assert resumed.state_dict() == middle
    assert all(torch.equal(a[0], b[0]) for a, b in zip(resumed, rest, strict=True))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_default_state_is_under_256_bytes_and_a_seeded_generator_adds_little(
    num_workers: int,
) -> None:
    """Issue 13's sizes (pickled, as the benchmark measures them): the default map-style state
    < 256 B, with a seeded generator that only the loader draws from < 1 KB."""
    for generator in (None, torch.Generator().manual_seed(5)):
        loader = StatefulDataLoader(
            Squares(10**5), batch_size=64, shuffle=True, num_workers=num_workers,
            generator=generator,
        )  # fmt: skip
        batches = iter(loader)
        for _ in range(3):
            next(batches)
        size = len(pickle.dumps(loader.state_dict()))
        assert size < (256 if generator is None else 1024), (generator, size)
        list(batches)  # an epoch boundary: the seeds of the next epoch are in the state too
        size = len(pickle.dumps(loader.state_dict()))
        assert size < (256 if generator is None else 1024), (generator, size)
        loader.close()
