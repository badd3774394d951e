"""ResumableDistributedSampler against torch's, and elastic resumes simulated in-process.

N ranks are N sampler objects with explicit ``rank`` / ``num_replicas``; they run in lockstep
(every rank yields the same number of samples before the save), as DDP does.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Sequence
from itertools import islice
from typing import Any, cast

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Dataset

from checkpointable.samplers import ResumableDistributedSampler

CONFIG = st.fixed_dictionaries(
    {
        "shuffle": st.booleans(),
        "drop_last": st.booleans(),
        "seed": st.integers(0, 2**32),
    }
)


@settings(max_examples=500, deadline=None)
@given(
    n=st.integers(0, 80),
    replicas=st.integers(1, 7),
    rank_fraction=st.floats(0, 1, exclude_max=True),
    config=CONFIG,
    epoch=st.integers(0, 5),
)
def test_uninterrupted_epoch_is_torch_bit_for_bit(
    n: int, replicas: int, rank_fraction: float, config: dict[str, Any], epoch: int
) -> None:
    rank = int(rank_fraction * replicas)
    ours = ResumableDistributedSampler(range(n), replicas, rank, **config)
    # torch's sampler only takes len(dataset): a range will do
    theirs: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        cast("Dataset[int]", range(n)), replicas, rank, **config
    )
    ours.set_epoch(epoch)
    theirs.set_epoch(epoch)
    assert list(ours) == list(theirs)
    assert len(ours) == len(theirs) == theirs.num_samples


def make_ranks(
    n: int, replicas: int, config: dict[str, Any], batch_size: int, epoch: int
) -> list[ResumableDistributedSampler]:
    ranks = [
        ResumableDistributedSampler(range(n), replicas, r, batch_size=batch_size, **config)
        for r in range(replicas)
    ]
    for sampler in ranks:
        sampler.set_epoch(epoch)
    return ranks


def run_ranks(
    ranks: list[ResumableDistributedSampler], samples: int | None
) -> tuple[list[list[int]], dict[str, Any]]:
    """Every rank yields `samples` (all when None); return what each yielded and the state,
    after checking that all ranks yielded as many and hold the same state."""
    taken = [list(islice(iter(sampler), samples)) for sampler in ranks]
    assert len({len(part) for part in taken}) <= 1, "the ranks are out of lockstep"
    states = [sampler.state_dict() for sampler in ranks]
    assert all(state == states[0] for state in states), "the ranks' states differ"
    return taken, json.loads(json.dumps(states[0]))


def resume(
    n: int,
    replicas: int,
    config: dict[str, Any],
    batch_size: int,
    epoch: int,
    state: dict[str, Any],
) -> list[ResumableDistributedSampler]:
    ranks = make_ranks(n, replicas, config, batch_size, epoch)
    for sampler in ranks:
        sampler.load_state_dict(state)
        sampler.set_epoch(epoch)  # the training script's call at the top of the epoch
    return ranks


def check_exactly_once(
    n: int,
    yielded: list[list[int]],
    config: dict[str, Any],
    world_sizes: Sequence[int],
    *,
    dropped_below: int,
) -> None:
    counts = Counter(i for part in yielded for i in part)
    assert set(counts) <= set(range(n))
    if config["drop_last"]:
        assert max(counts.values(), default=1) == 1, "a sample was yielded twice"
        assert n - len(counts) < dropped_below, "too many samples left out"
    else:
        assert set(counts) == set(range(n)), f"samples never yielded: {set(range(n)) - set(counts)}"
        repeats = sum(counts.values()) - n
        assert repeats < max(world_sizes), "more repeats than torch's padding"


@st.composite
def stop_point(
    draw: st.DrawFn, n: int, replicas: int, batch_size: int, drop_last: bool
) -> tuple[int, int]:
    per_rank = len(ResumableDistributedSampler(range(n), replicas, 0, drop_last=drop_last))
    batches = -(-per_rank // batch_size)
    return min(draw(st.integers(0, batches)) * batch_size, per_rank), per_rank


@settings(max_examples=1000, deadline=None)
@given(
    n=st.integers(0, 70),
    batch_size=st.integers(1, 5),
    new_batch_size=st.integers(1, 5),
    before=st.integers(1, 6),
    after=st.integers(1, 6),
    config=CONFIG,
    epoch=st.integers(0, 3),
    data=st.data(),
)
def test_elastic_resume_yields_every_sample_exactly_once(
    n: int,
    batch_size: int,
    new_batch_size: int,
    before: int,
    after: int,
    config: dict[str, Any],
    epoch: int,
    data: st.DataObject,
) -> None:
    samples, per_rank = data.draw(stop_point(n, before, batch_size, config["drop_last"]))
    first, state = run_ranks(make_ranks(n, before, config, batch_size, epoch), samples)
    assert state["position"] == samples
    resumed = resume(n, after, config, new_batch_size, epoch, state)
    assert all(s.start_iter == -(-samples // new_batch_size) for s in resumed)
    second, end_state = run_ranks(resumed, None)
    check_exactly_once(
        n,
        first + second,
        config,
        (before, after),
        dropped_below=max(before, after) if samples == per_rank else after,
    )
    assert end_state["progress"] == n or config["drop_last"]
    if after == before:  # the same world size: the rest of the uninterrupted epoch, per rank
        whole, _ = run_ranks(make_ranks(n, before, config, batch_size, epoch), None)
        assert [a + b for a, b in zip(first, second, strict=True)] == whole


@settings(max_examples=500, deadline=None)
@given(
    n=st.integers(0, 60),
    sizes=st.lists(st.integers(1, 5), min_size=3, max_size=4),
    config=CONFIG,
    data=st.data(),
)
def test_chained_elastic_resumes_yield_every_sample_exactly_once(
    n: int, sizes: list[int], config: dict[str, Any], data: st.DataObject
) -> None:
    """N ranks, then M, then P (then Q): the state is always progress in the epoch's order."""
    yielded: list[list[int]] = []
    state = None
    for index, world in enumerate(sizes):
        if state is None:
            ranks = make_ranks(n, world, config, 2, epoch=1)
        else:
            ranks = resume(n, world, config, 2, 1, state)
        left = len(list(copy.deepcopy(ranks[0])))  # samples per rank left in the epoch
        last = index == len(sizes) - 1
        taken, state = run_ranks(ranks, None if last else data.draw(st.integers(0, left)))
        yielded += taken
    check_exactly_once(n, yielded, config, sizes, dropped_below=max(sizes))


def test_elastic_example_two_to_three_ranks() -> None:
    """A worked example: 10 samples on 2 ranks, 2 each; the remaining 6 over 3 ranks."""
    config = {"shuffle": False, "drop_last": False, "seed": 0}
    first, state = run_ranks(make_ranks(10, 2, config, 1, 0), 2)
    assert first == [[0, 2], [1, 3]]
    assert (state["progress"], state["position"]) == (4, 2)
    second, end = run_ranks(resume(10, 3, config, 1, 0, state), None)
    assert second == [[4, 7], [5, 8], [6, 9]]
    assert (end["progress"], end["position"]) == (10, 4)


def test_elastic_padding_repeats_the_head_of_the_epoch() -> None:
    """11 samples, 3 ranks, 2 each (6 consumed); 5 left on 2 ranks: 3 each, one pad."""
    config = {"shuffle": False, "drop_last": False, "seed": 0}
    _, state = run_ranks(make_ranks(11, 3, config, 1, 0), 2)
    second, _ = run_ranks(resume(11, 2, config, 1, 0, state), None)
    assert second == [[6, 8, 10], [7, 9, 0]]  # 0: the head of the epoch's order, as torch pads
