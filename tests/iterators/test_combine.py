"""Iterators over several sources, and deep pipelines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    BufferedShuffleIterator,
    CheckpointableIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    MapIterator,
    MultiplexIterator,
    NativeCheckpointableIterator,
    SamplingRandomMapIterator,
    SelectManyIterator,
    WeightedMixIterator,
    WindowedIterator,
    ZipIterator,
)
from checkpointable.testing import assert_resumable


def source(items: Iterable[Any]) -> NativeCheckpointableIterator:
    return NativeCheckpointableIterator(list(items))


@pytest.mark.resumable("ZipIterator")
@given(lengths=st.lists(st.integers(0, 8), min_size=1, max_size=3))
def test_zip_is_resumable(lengths: list[int]) -> None:
    items = assert_resumable(lambda: ZipIterator(*[source(range(n)) for n in lengths]))
    assert items == list(zip(*[range(n) for n in lengths], strict=False))


@pytest.mark.resumable("MultiplexIterator")
@given(control=st.lists(st.integers(0, 2), max_size=20))
def test_multiplex_is_resumable(control: list[int]) -> None:
    def make() -> MultiplexIterator:
        sources = [source(f"{k}{i}" for i in range(8)) for k in "abc"]
        return MultiplexIterator(source(control), sources)

    items = assert_resumable(make)
    assert len(items) <= len(control)


def test_multiplex_names_a_bad_index() -> None:
    it = MultiplexIterator(source([0, 5]), [source("ab")])
    assert next(it) == "a"
    with pytest.raises(
        ValueError, match="control_iterator yielded 5, which is not an index of the 1"
    ):
        next(it)


def test_combine_refuses_a_state_with_another_number_of_sources() -> None:
    state = ZipIterator(source("ab"), source("cd")).state_dict()
    with pytest.raises(
        IncompatibleStateError, match="num_sources=2, but this object has num_sources=3"
    ):
        ZipIterator(source("ab"), source("cd"), source("ef")).load_state_dict(state)
    with pytest.raises(ValueError, match="at least one source"):
        ZipIterator()


@pytest.mark.resumable("WeightedMixIterator")
@given(
    sizes=st.lists(st.integers(0, 10), min_size=1, max_size=3),
    weights=st.lists(st.integers(0, 4), min_size=3, max_size=3),
    seed=st.integers(0, 1000),
)
def test_weighted_mix_is_resumable(sizes: list[int], weights: list[int], seed: int) -> None:
    weights = weights[: len(sizes)]
    if not any(weights):
        weights[0] = 1

    def make() -> WeightedMixIterator:
        sources = [source(f"{k}{i}" for i in range(n)) for k, n in zip("abc", sizes, strict=False)]
        return WeightedMixIterator(sources, weights, seed)

    items = assert_resumable(make)
    expected = sorted(
        f"{k}{i}" for k, n, w in zip("abc", sizes, weights, strict=False) if w for i in range(n)
    )
    assert sorted(items) == expected


def test_weighted_mix_follows_the_weights() -> None:
    sources = [InfinitePermutationSourceIterator([k], seed=0) for k in "ab"]
    it = WeightedMixIterator(sources, [1, 3], seed=11)
    drawn = [next(it) for _ in range(8000)]
    assert 0.23 < drawn.count("a") / len(drawn) < 0.27


def test_weighted_mix_rejects_bad_weights() -> None:
    with pytest.raises(ValueError, match="one weight per source, got 1 weights for 2 sources"):
        WeightedMixIterator([source("a"), source("b")], [1])
    with pytest.raises(
        ValueError, match=r"weights\[1\] must be finite and >= 0, got weights\[1\]=-1"
    ):
        WeightedMixIterator([source("a"), source("b")], [1, -1])
    with pytest.raises(ValueError, match="at least one weight must be positive"):
        WeightedMixIterator([source("a")], [0])
    with pytest.raises(TypeError, match=r"weights\[0\] must be a number"):
        WeightedMixIterator([source("a")], ["1"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="source_iterators must be a list"):
        WeightedMixIterator(source("a"), [1])  # type: ignore[arg-type]


def _five_stage_pipeline() -> FixedBatchIterator:
    lines = [[f"line {c}.{i}" for i in range(c % 4 + 1)] for c in range(12)]
    it: CheckpointableIterator = InfinitePermutationSourceIterator(list(range(12)), seed=1)
    it = SelectManyIterator(it, lambda c: iter(lines[c]))
    it = BufferedShuffleIterator(it, 5, seed=2)
    it = BlockwiseShuffleIterator(it, 4, seed=3)
    it = SamplingRandomMapIterator(it, lambda rng, s: f"{s} #{rng.randrange(9)}", seed=4)
    it = WindowedIterator(it, 2)
    it = MapIterator(it, " | ".join)
    return FixedBatchIterator(it, 3)


def test_a_deep_pipeline_is_resumable() -> None:
    assert_resumable(_five_stage_pipeline, max_items=40)


def test_a_deep_pipeline_restores_in_a_fresh_process() -> None:
    assert_resumable(_five_stage_pipeline_top_level, max_items=15, fresh_process=True)


def _five_stage_pipeline_top_level() -> FixedBatchIterator:
    return _five_stage_pipeline()
