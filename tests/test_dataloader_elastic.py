"""A StatefulDataLoader over our resumable samplers: across epochs, and on another world size.

Ranks are simulated in one process (one sampler per rank, with explicit rank and
num_replicas); the real multi-process run is tests/test_examples.py (torchrun).
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from checkpointable import ResumableDistributedSampler, ResumableRandomSampler, StatefulDataLoader
from checkpointable.testing import assert_resumable


class Indices(torch.utils.data.Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def rank_loaders(
    n: int, world: int, batch_size: int, workers: int = 0
) -> list[tuple[ResumableDistributedSampler, StatefulDataLoader]]:
    loaders = []
    for rank in range(world):
        sampler = ResumableDistributedSampler(
            Indices(n), num_replicas=world, rank=rank, seed=5, batch_size=batch_size
        )
        loaders.append(
            (
                sampler,
                StatefulDataLoader(
                    Indices(n), batch_size=batch_size, sampler=sampler, num_workers=workers
                ),
            )
        )
    return loaders


def run_elastic(
    n: int, batch_size: int, before: int, after: int, steps: int, workers: int = 0
) -> Counter[int]:
    """Each of `before` ranks takes `steps` batches; `after` ranks finish the epoch."""
    seen: list[int] = []
    first = rank_loaders(n, before, batch_size, workers)
    iterators = [iter(loader) for _, loader in first]
    for _ in range(steps):
        for iterator in iterators:
            seen += next(iterator).tolist()
    state = json.loads(json.dumps(first[0][1].state_dict()))
    del iterators
    for _, loader in first:
        loader.close()
    for sampler, loader in rank_loaders(n, after, batch_size, workers):
        loader.load_state_dict(state)
        sampler.set_epoch(0)  # as a training script does; the same epoch keeps the position
        for batch in loader:
            seen += batch.tolist()
        loader.close()
    return Counter(seen)


@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 4),
    before=st.integers(1, 4),
    after=st.integers(1, 4),
    data=st.data(),
)
def test_every_sample_once_over_a_world_size_change(
    n: int, batch_size: int, before: int, after: int, data: st.DataObject
) -> None:
    per_rank = math.ceil(n / before)
    per_rank_batches = math.ceil(per_rank / batch_size)
    steps = data.draw(st.integers(0, per_rank_batches))
    counts = run_elastic(n, batch_size, before, after, steps)
    assert set(counts) == set(range(n)), "every sample of the epoch is yielded"
    repeats = sum(count - 1 for count in counts.values())
    assert repeats < before + after, "only the padding of torch's partition repeats samples"


@pytest.mark.timeout(120)
def test_with_worker_processes() -> None:
    counts = run_elastic(n=23, batch_size=2, before=2, after=3, steps=3, workers=2)
    assert set(counts) == set(range(23))
    assert sum(counts.values()) - 23 < 5


def _sampler_loader(kind: str, workers: int) -> StatefulDataLoader:
    if kind == "random":
        sampler: torch.utils.data.Sampler[int] = ResumableRandomSampler(
            Indices(9), seed=4, batch_size=2
        )
    else:
        sampler = ResumableDistributedSampler(
            Indices(9), num_replicas=2, rank=1, seed=4, batch_size=2
        )
    return StatefulDataLoader(Indices(9), batch_size=2, sampler=sampler, num_workers=workers)


@pytest.mark.resumable("StatefulDataLoader")
@pytest.mark.parametrize("kind", ["random", "distributed"])
@pytest.mark.parametrize("set_epoch", [True, False])
def test_a_loader_over_a_resumable_sampler_resumes_across_epochs(
    kind: str, set_epoch: bool
) -> None:
    """Mid-epoch, after the last (short) batch, after an epoch's end: with the script's
    set_epoch() before each epoch or without it (then every epoch is epoch 0's order)."""
    before_epoch = (lambda loader, epoch: loader.sampler.set_epoch(epoch)) if set_epoch else None
    items = assert_resumable(
        functools.partial(_sampler_loader, kind, 0), epochs=3, before_epoch=before_epoch
    )
    batches = [batch.tolist() for batch in items]
    third = len(batches) // 3
    assert (batches[:third] != batches[third : 2 * third]) == set_epoch
