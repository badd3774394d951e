"""Mixture: weighted deterministic draws, proportions, exhaustion, elastic resume, new weights."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError, Mixture, StatefulDataLoader, TokenArrayDataset
from checkpointable.testing import assert_resumable

SIZES = {"web": 23, "code": 11, "books": 7}


def sources(sizes: dict[str, int] = SIZES) -> dict[str, list[str]]:
    return {name: [f"{name}{i}" for i in range(size)] for name, size in sizes.items()}


def _mixture(world: int = 1, rank: int = 0, **kwargs: Any) -> Mixture:
    kwargs.setdefault("weights", {"web": 5, "code": 3, "books": 2})
    kwargs.setdefault("period", 10)
    return Mixture(sources(), seed=7, world_size=world, rank=rank, **kwargs)


def _loader(num_workers: int, exhausted: str = "restart") -> StatefulDataLoader:
    mix = _mixture(exhausted=exhausted)
    return StatefulDataLoader(
        mix, batch_size=4, sampler=mix.sampler, collate_fn=list, num_workers=num_workers
    )


def test_long_run_proportions_match_the_weights() -> None:
    weights = {"web": 0.55, "code": 0.3, "books": 0.15}
    mix = Mixture(sources(), weights=weights, seed=1)  # period 1000
    draws = Counter(mix[i].rstrip("0123456789") for i in range(20_000))
    assert draws == {"web": 11_000, "code": 6_000, "books": 3_000}  # exact per whole round
    head = Counter(mix[i].rstrip("0123456789") for i in range(1_500))
    for name, weight in weights.items():
        assert abs(head[name] / 1_500 - weight) < 0.03


def test_restart_walks_each_source_epoch_by_epoch_and_stop_ends() -> None:
    mix = _mixture()
    assert len(mix) == sum(SIZES.values())
    items = [mix[i] for i in range(200)]
    books = [item for item in items if item.startswith("books")]
    assert sorted(books[:7]) == sorted(books[7:14]) == sources()["books"]
    stop = _mixture(exhausted="stop")
    drawn = [stop[i] for i in stop.sampler]
    counts = Counter(item.rstrip("0123456789") for item in drawn)
    assert max(counts[name] - size for name, size in SIZES.items()) == 0  # one source ran out
    assert len(set(drawn)) == len(drawn)
    assert [stop[i] for i in stop.sampler] != drawn or stop.sampler.epoch == 1


@pytest.mark.resumable("Mixture")
@pytest.mark.parametrize(("num_workers", "exhausted"), [(0, "stop"), (2, "restart")])
def test_resumable_through_the_loader(num_workers: int, exhausted: str) -> None:
    positions = None if num_workers == 0 else [1, 5, 9]
    items = assert_resumable(
        functools.partial(_loader, num_workers, exhausted), epochs=2, positions=positions
    )
    assert items


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 1)])
def test_resume_with_another_number_of_workers(before: int, after: int) -> None:
    full = [x for batch in _loader(0) for x in batch]
    loader = _loader(before)
    batches = iter(loader)
    head = [x for _ in range(3) for x in next(batches)]
    state = loader.state_dict()
    del batches
    resumed = _loader(after)
    resumed.load_state_dict(state)
    assert head + [x for batch in resumed for x in batch] == full


def run_ranks(
    world: int, state: dict[str, Any] | None, per_rank: int | None, **kwargs: Any
) -> tuple[list[int], list[str], dict[str, Any]]:
    """`world` ranks in lockstep take `per_rank` draws each (None: the rest of the epoch)."""
    indices, items = [], []
    mixes = [_mixture(world, rank, **kwargs) for rank in range(world)]
    for mix in mixes:
        if state is not None:
            mix.sampler.load_state_dict(json.loads(json.dumps(state)))
        it = iter(mix.sampler)
        taken = list(it) if per_rank is None else [next(it) for _ in range(per_rank)]
        indices += taken
        items += [mix[i] for i in taken]
    states = [mix.sampler.state_dict() for mix in mixes]
    assert all(s == states[0] for s in states)
    return indices, items, states[0]


@settings(max_examples=30, deadline=None)
@given(
    worlds=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
    fraction=st.floats(0, 1),
    new_weights=st.dictionaries(st.sampled_from(list(SIZES)), st.integers(0, 4)),
    exhausted=st.sampled_from(["restart", "stop"]),
)
def test_n_to_m_ranks_deal_every_draw_once_and_new_weights_are_world_independent(
    worlds: tuple[int, int, int], fraction: float, new_weights: dict[str, int], exhausted: str
) -> None:
    n = _mixture(exhausted=exhausted).epoch_draws()
    k = int(n // worlds[0] * fraction)
    first, _, state = run_ranks(worlds[0], None, k, exhausted=exhausted)
    assert state["progress"] == k * worlds[0]
    weights = {name: new_weights.get(name, 1) for name in SIZES}
    if not any(weights.values()):
        weights["web"] = 1
    results = []
    for world in worlds[1:]:  # the same resume on two world sizes: the same draws
        rest, items, after = run_ranks(world, state, None, exhausted=exhausted, weights=weights)
        m = _mixture(exhausted=exhausted, weights=weights).epoch_draws()
        if exhausted == "stop":
            m = after_length(after, exhausted, weights)
        counts = Counter(first + rest)
        assert set(counts) == set(range(m)) | set(first)
        assert sum(counts.values()) - len(counts) < world  # torch's padding only
        real = {index: item for index, item in zip(rest, items, strict=True)}
        results.append(real)
    shared = results[0].keys() & results[1].keys()
    assert all(results[0][i] == results[1][i] for i in shared)
    starts = [entry["start"] for entry in after["schedule"]]
    assert starts[0] == 0 and set(starts) <= {0, k * worlds[0]}  # a change: at the saved progress


def after_length(state: dict[str, Any], exhausted: str, weights: dict[str, int]) -> int:
    mix = _mixture(exhausted=exhausted, weights=weights)
    mix.sampler.load_state_dict(state)
    return mix.epoch_draws()


def test_new_weights_apply_from_the_saved_position() -> None:
    mix = _mixture()
    it = iter(mix.sampler)
    head = [mix[next(it)] for _ in range(20)]
    state = mix.sampler.state_dict()
    assert state["drawn"] == {"web": 10, "code": 6, "books": 4}
    resumed = _mixture(weights={"web": 0, "code": 0, "books": 1})
    resumed.sampler.load_state_dict(state)
    rest = [resumed[i] for i in resumed.sampler]
    assert all(item.startswith("books") for item in rest)
    assert [resumed[i] for i in range(20)] == head  # the draws before keep their weights
    later = resumed.sampler.state_dict()
    assert later["schedule"] == [
        {"start": 0, "weights": {"web": 5, "code": 3, "books": 2}},
        {"start": 20, "weights": {"web": 0, "code": 0, "books": 10}},
    ]
    again = _mixture(weights={"web": 0, "code": 0, "books": 1})
    again.sampler.load_state_dict(later)  # the schedule carries on
    assert [again[i] for i in range(41)] == [resumed[i] for i in range(41)]


def test_advance_skips_draws_and_is_recorded() -> None:
    full = [x for x in _mixture().sampler]
    mix = _mixture()
    assert mix.sampler.advance(6) == 6
    resumed = _mixture()
    resumed.sampler.load_state_dict(mix.sampler.state_dict())
    assert list(resumed.sampler) == full[6:]


def test_mixture_of_token_arrays_through_the_loader(tmp_path: Path) -> None:
    np.arange(0, 64, dtype=np.uint16).tofile(tmp_path / "a.bin")
    np.arange(1000, 1032, dtype=np.uint16).tofile(tmp_path / "b.bin")

    def build(workers: int) -> StatefulDataLoader:
        mix = Mixture(
            {
                "a": TokenArrayDataset(str(tmp_path / "a.bin"), 4, seed=1, block_rows=2),
                "b": TokenArrayDataset(str(tmp_path / "b.bin"), 4, seed=2, block_rows=2),
            },
            weights={"a": 1, "b": 1},
            period=2,
        )
        return StatefulDataLoader(mix, batch_size=3, sampler=mix.sampler, num_workers=workers)

    items = assert_resumable(functools.partial(build, 2), epochs=1, positions=[2, 5])
    firsts = [int(row[0]) for batch in items for row in batch]
    assert sum(f >= 1000 for f in firsts) == len(firsts) // 2


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="weights must be finite and >= 0, got 'web': -1"):
        Mixture(sources(), weights={"web": -1, "code": 1, "books": 1})
    with pytest.raises(ValueError, match="the weights sum to 0"):
        Mixture(sources(), weights={"web": 0, "code": 0, "books": 0})
    with pytest.raises(ValueError, match=r"weights name unknown source\(s\) \['wiki'\]"):
        Mixture(sources(), weights={"web": 1, "code": 1, "books": 1, "wiki": 1})
    with pytest.raises(ValueError, match=r"weights lack the source\(s\) \['books'\]"):
        Mixture(sources(), weights={"web": 1, "code": 1})
    with pytest.raises(ValueError, match="exhausted must be 'restart' or 'stop'"):
        Mixture(sources(), exhausted="cycle")
    with pytest.raises(ValueError, match="rounds to 0 draws"):
        Mixture(sources(), weights={"web": 1000, "code": 1, "books": 1}, period=10)
    with pytest.raises(TypeError, match="source 'web' must be a map-style dataset"):
        Mixture({"web": iter([1])})
    state = _mixture().sampler.state_dict()
    other = Mixture(sources({"web": 23, "wiki": 5}), seed=7, period=10)
    with pytest.raises(IncompatibleStateError, match=r"sources \{'web': 23, 'code': 11.*'wiki'"):
        other.sampler.load_state_dict(state)
    with pytest.raises(IncompatibleStateError, match="period"):
        _mixture(period=20).sampler.load_state_dict(state)
    stop = _mixture(exhausted="stop")
    length = stop.epoch_draws()
    bad = {**stop.sampler.state_dict(), "drawn": {"web": 1, "code": 0, "books": 0}}
    bad["schedule"] = [
        bad["schedule"][0],
        {"start": 3, "weights": {"web": 0, "code": 0, "books": 10}},
    ]
    with pytest.raises(IncompatibleStateError, match="does not follow from its schedule"):
        stop.sampler.load_state_dict(bad)
    assert stop.epoch_draws() == length and len(stop.sampler.state_dict()["schedule"]) == 1


@settings(max_examples=4, deadline=None)
@given(
    worlds=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    workers=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    batches=st.integers(0, 3),
)
def test_n_to_m_ranks_with_workers_through_the_loader(
    worlds: tuple[int, int], workers: tuple[int, int], batches: int
) -> None:
    def loaders(world: int, num_workers: int) -> list[StatefulDataLoader]:
        out = []
        for rank in range(world):
            mix = _mixture(world, rank, exhausted="stop")
            out.append(
                StatefulDataLoader(
                    mix, batch_size=2, sampler=mix.sampler, collate_fn=list, num_workers=num_workers
                )
            )
        return out

    whole = [_mixture(exhausted="stop")[i] for i in range(_mixture(exhausted="stop").epoch_draws())]
    seen: list[str] = []
    first = loaders(worlds[0], workers[0])
    for loader in first:
        iterator = iter(loader)
        seen += [x for _ in range(batches) for x in next(iterator)]
    state = json.loads(json.dumps(first[0].state_dict()))
    for loader in loaders(worlds[1], workers[1]):
        loader.load_state_dict(state)
        seen += [x for batch in loader for x in batch]
    assert set(seen) == set(whole)  # every draw delivered; only torch's padding repeats
    assert len(seen) - len(whole) < worlds[1]


@pytest.mark.parametrize("exhausted", ["stop", "restart"])
def test_new_weights_through_the_loader(exhausted: str) -> None:
    def build(weights: dict[str, int]) -> StatefulDataLoader:
        mix = _mixture(exhausted=exhausted, weights=weights)
        return StatefulDataLoader(mix, batch_size=3, sampler=mix.sampler, collate_fn=list)

    loader = build({"web": 1, "code": 1, "books": 1})
    batches = iter(loader)
    head = [x for _ in range(3) for x in next(batches)]
    state = loader.state_dict()
    resumed = build({"web": 0, "code": 1, "books": 0})
    resumed.load_state_dict(state)
    rest = [x for batch in resumed for x in batch]
    assert rest and all(x.startswith("code") for x in rest)
    assert not set(rest) & set(head) or exhausted == "restart"
