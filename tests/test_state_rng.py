"""The one encoding of random generators' states (`checkpointable._rng`): round trips, the short
form chosen only when it is right, and plain data that survives json and torch.load."""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable._rng import (
    MAX_REPLAY_DRAWS,
    decode_python_state,
    decode_torch_state,
    draw_seed,
    encode_python_state,
    encode_torch_generator,
    encode_torch_state,
    permutation,
    randint,
    restore_torch_generator,
)

SEEDS = st.integers(min_value=0, max_value=2**64 - 1)
#: what the package draws: ("seed",), ("perm", n), ("int", high, size)
DRAWS = st.lists(
    st.one_of(
        st.just(("seed",)),
        st.tuples(st.just("perm"), st.integers(1, 300)),
        st.tuples(st.just("int"), st.integers(1, 2**31), st.integers(1, 70)),
    ),
    max_size=6,
)


def survive(value: Any) -> Any:
    """`value` after json and after torch.save / torch.load(weights_only=True)."""
    assert json.loads(json.dumps(value)) == value
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded == value
    return loaded


def draw(generator: torch.Generator, draws: list[tuple[Any, ...]]) -> None:
    for item in draws:
        if item[0] == "seed":
            draw_seed(generator)
        elif item[0] == "perm":
            permutation(item[1], generator)
        else:
            randint(item[1], item[2], generator)


def restored(value: Any) -> torch.Generator:
    generator = torch.Generator()
    restore_torch_generator(generator, survive(value), "test")
    return generator


@settings(max_examples=40, deadline=None)
@given(seed=SEEDS, draws=DRAWS)
def test_a_seeded_generator_drawn_only_by_the_package_is_stored_as_seed_and_draws(
    seed: int, draws: list[tuple[Any, ...]]
) -> None:
    generator = torch.Generator().manual_seed(seed)
    draw(generator, draws)
    value = encode_torch_generator(generator)
    assert set(value) == {"kind", "seed", "draws"} and value["seed"] == seed
    again = restored(value)
    assert torch.equal(again.get_state(), generator.get_state())
    assert torch.equal(decode_torch_state(value, "test"), generator.get_state())
    # the restored generator keeps being counted: drawn further, still short and right
    draw(again, draws)
    draw(generator, draws)
    value = encode_torch_generator(again)
    assert set(value) == {"kind", "seed", "draws"}
    assert torch.equal(restored(value).get_state(), generator.get_state())


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, before=DRAWS, after=DRAWS, user=st.integers(1, 5))
def test_a_generator_the_user_drew_from_is_stored_in_full(
    seed: int, before: list[tuple[Any, ...]], after: list[tuple[Any, ...]], user: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    draw(generator, before)
    torch.rand(user, generator=generator)  # not counted
    draw(generator, after)
    value = encode_torch_generator(generator)
    assert set(value) == {"kind", "data"}
    assert torch.equal(restored(value).get_state(), generator.get_state())


def test_a_user_draw_after_the_last_counted_one_is_seen_when_saving() -> None:
    generator = torch.Generator().manual_seed(3)
    draw_seed(generator)
    assert "seed" in encode_torch_generator(generator)
    torch.rand(1, generator=generator)
    value = encode_torch_generator(generator)
    assert "data" in value
    assert torch.equal(restored(value).get_state(), generator.get_state())


def test_a_reseeded_generator_is_counted_again_from_its_new_seed() -> None:
    generator = torch.Generator().manual_seed(3)
    draw_seed(generator)
    generator.manual_seed(4)
    assert "data" in encode_torch_generator(generator)  # reseeded behind the package's back
    restore_torch_generator(generator, {"kind": "torch", "seed": 4, "draws": 0}, "test")
    draw_seed(generator)
    assert encode_torch_generator(generator) == {"kind": "torch", "seed": 4, "draws": 2}


def test_unseeded_and_randomly_seeded_generators() -> None:
    fresh = torch.Generator()  # torch's default seed
    assert encode_torch_generator(fresh) == {
        "kind": "torch",
        "seed": fresh.initial_seed(),
        "draws": 0,
    }
    generator = torch.Generator()
    generator.seed()
    permutation(10, generator)
    value = encode_torch_generator(generator)
    assert value["seed"] == generator.initial_seed()
    assert torch.equal(restored(value).get_state(), generator.get_state())


def test_a_global_rng_state_is_stored_in_full() -> None:
    value = encode_torch_state(torch.get_rng_state())
    assert set(value) == {"kind", "data"}
    assert torch.equal(decode_torch_state(survive(value), "test"), torch.get_rng_state())


def test_the_replay_is_bounded() -> None:
    too_far = {"kind": "torch", "seed": 1, "draws": MAX_REPLAY_DRAWS + 1}
    with pytest.raises(IncompatibleStateError, match="draws"):
        decode_torch_state(too_far, "test")


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "torch", "data": "not base64!"},
        {"kind": "torch", "data": "AAAA"},
        {"kind": "torch", "seed": -1, "draws": 0},
        {"kind": "torch", "seed": 1, "draws": "2"},
        {"kind": "torch", "seed": 1},
        "AAAA",
        7,
    ],
)
def test_damaged_torch_states_are_refused_clearly(value: Any) -> None:
    with pytest.raises(IncompatibleStateError, match="'generator_state'"):
        decode_torch_state(value, "test")


def test_the_former_bare_base64_text_is_still_read() -> None:
    generator = torch.Generator().manual_seed(5)
    text = encode_torch_state(generator.get_state())["data"]
    assert torch.equal(decode_torch_state(text, "test"), generator.get_state())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(), steps=st.integers(0, 2000), gauss=st.booleans())
def test_python_random_states_round_trip(seed: int, steps: int, gauss: bool) -> None:
    generator = random.Random(seed)
    for _ in range(steps):
        generator.random()
    if gauss:
        generator.gauss(0.0, 1.0)  # leaves a cached second value (gauss_next)
    value = survive(encode_python_state(generator.getstate()))
    assert set(value) == {"kind", "data", "gauss"} and value["kind"] == "python"
    assert len(json.dumps(value)) < 3500  # base64 of packed words, not 625 decimal ints
    again = random.Random()
    again.setstate(decode_python_state(value, "test"))
    assert [again.random() for _ in range(5)] == [generator.random() for _ in range(5)]


def test_the_former_list_of_ints_is_still_read() -> None:
    generator = random.Random(9)
    version, internal, gauss = generator.getstate()
    old = json.loads(json.dumps([version, list(internal), gauss]))
    assert decode_python_state(old, "test") == generator.getstate()


@pytest.mark.parametrize(
    "value",
    [
        {"kind": "python", "data": "AAAA", "gauss": None},
        {"kind": "torch", "data": "AAAA", "gauss": None},
        {"kind": "python", "data": 3},
        [3, [1, 2], None],
        None,
    ],
)
def test_damaged_python_states_are_refused_clearly(value: Any) -> None:
    with pytest.raises(IncompatibleStateError, match="'random_state'"):
        decode_python_state(value, "test")
