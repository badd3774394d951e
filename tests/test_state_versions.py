"""States written by earlier releases still load and continue exactly: the loader's formats 4,
3 and 2 (3 and 2 through `_loader.state_v3`), other objects' format 2 with list-of-ints random
states."""

from __future__ import annotations

import json
from typing import Any

import pytest

from checkpointable import IncompatibleStateError
from checkpointable.stream import Stream
from tests._loader_states_v3 import FIXTURES as LOADER_FIXTURES
from tests._loader_states_v3 import make_loader, plain, rest_after_state
from tests._loader_states_v4 import FIXTURES as LOADER_FIXTURES_V4
from tests._object_states_v2 import FIXTURES as OBJECT_FIXTURES
from tests._object_states_v2 import PIPELINES

LOADER_STATES: dict[str, Any] = json.loads(LOADER_FIXTURES.read_text())
LOADER_STATES_V4: dict[str, Any] = json.loads(LOADER_FIXTURES_V4.read_text())
OBJECT_STATES: dict[str, Any] = json.loads(OBJECT_FIXTURES.read_text())


@pytest.mark.parametrize("name", sorted(LOADER_STATES))
def test_a_version_3_loader_state_resumes_as_the_uninterrupted_run(name: str) -> None:
    fixture = LOADER_STATES[name]
    assert fixture["state"]["version"] == 3
    assert rest_after_state(fixture["config"], fixture["state"]) == fixture["rest"]


@pytest.mark.parametrize("name", sorted(LOADER_STATES_V4))
def test_a_version_4_loader_state_resumes_as_the_uninterrupted_run(name: str) -> None:
    fixture = LOADER_STATES_V4[name]
    assert fixture["state"]["version"] == 4
    assert rest_after_state(fixture["config"], fixture["state"]) == fixture["rest"]


@pytest.mark.parametrize("name", ["map_shuffle_w0_mid", "iterable_w2_mid", "map_generator_w0_mid"])
def test_a_version_2_loader_state_reads_as_one_without_skips(name: str) -> None:
    fixture = LOADER_STATES[name]
    old = {key: value for key, value in fixture["state"].items() if key != "skips"}
    old["version"] = 2
    assert rest_after_state(fixture["config"], old) == fixture["rest"]


@pytest.mark.parametrize("version", [1, 6, 99, "5"])
def test_a_loader_state_of_an_unknown_version_is_refused_naming_it(version: Any) -> None:
    fixture = LOADER_STATES["map_shuffle_w0_mid"]
    loader = make_loader(fixture["config"])
    with pytest.raises(IncompatibleStateError, match=f"format version {version!r}"):
        loader.load_state_dict({**fixture["state"], "version": version})


@pytest.mark.parametrize("name", sorted(OBJECT_STATES))
def test_a_version_2_iterator_state_with_list_random_states_resumes(name: str) -> None:
    fixture = OBJECT_STATES[name]
    assert fixture["state"]["version"] == 2
    pipeline = PIPELINES[name]()
    pipeline.load_state_dict(fixture["state"])
    assert [next(pipeline) for _ in fixture["rest"]] == fixture["rest"]
    # and it writes the current format, which resumes the same way
    state = pipeline.state_dict()
    again = PIPELINES[name]()
    again.load_state_dict(json.loads(json.dumps(state)))
    assert [next(again) for _ in range(5)] == [next(pipeline) for _ in range(5)]


def test_a_stream_nests_the_loader_s_state_without_its_version_and_reads_a_version_4_one() -> None:
    fixture = LOADER_STATES_V4["map_resumable_w0_mid"]
    stream = Stream(make_loader(fixture["config"]))
    state = stream.state_dict()
    assert "version" not in state["loader"] and state["loader"]["type"] == "StatefulDataLoader"
    stream.load_state_dict(json.loads(json.dumps(state)))
    # a stream state of the release before, whose loader state carried "version": 4
    resumed = Stream(make_loader(fixture["config"]))
    resumed.load_state_dict({**state, "loader": fixture["state"]})
    expected = fixture["rest"]
    assert [plain(resumed.next()) for _ in expected] == expected
