"""Same output as infinibatch wherever its code fixes the order (users who migrate keep it).

The expected values were recorded from infinibatch 0.1.1 by benchmarks/record_infinibatch_golden.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from checkpointable.datasets import chunked_dataset_iterator
from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    BucketedReadaheadBatchIterator,
    BufferedShuffleIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
    RandomIterator,
    SamplingRandomMapIterator,
    WindowedIterator,
)

GOLDEN = json.loads((Path(__file__).parent / "infinibatch_golden.json").read_text())


def take(it: Any, n: int) -> list[Any]:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out


def as_lists(value: Any) -> Any:
    """JSON has no tuples: compare tuples as lists."""
    if isinstance(value, list | tuple):
        return [as_lists(v) for v in value]
    return value


def sampling_transform(rng, x):
    return (x, rng.randrange(100))


CHUNKS = [[f"c{c}i{i}" for i in range(c + 2)] for c in range(5)]

CASES = {
    "perm_5_s7_k3_r1": lambda: take(
        InfinitePermutationSourceIterator(list(range(5)), seed=7, num_instances=3, instance_rank=1),
        12,
    ),
    "perm_4_s2": lambda: take(InfinitePermutationSourceIterator(list("abcd"), seed=2), 12),
    "perm_3_s1_k5_r4": lambda: take(
        InfinitePermutationSourceIterator(list(range(3)), seed=1, num_instances=5, instance_rank=4),
        8,
    ),
    "perm_noshuffle_k2_r1": lambda: take(
        InfinitePermutationSourceIterator(
            list(range(5)), shuffle=False, num_instances=2, instance_rank=1
        ),
        8,
    ),
    "buffered_20_b5_s3": lambda: list(
        BufferedShuffleIterator(NativeCheckpointableIterator(list(range(1, 21))), 5, seed=3)
    ),
    "blockwise_10_b4_s5": lambda: list(
        BlockwiseShuffleIterator(NativeCheckpointableIterator(list(range(10))), 4, seed=5)
    ),
    "sampling_6_s9": lambda: list(
        SamplingRandomMapIterator(
            NativeCheckpointableIterator(list(range(6))), sampling_transform, seed=9
        )
    ),
    "bucketed": lambda: list(
        BucketedReadaheadBatchIterator(
            NativeCheckpointableIterator(["x" * ((i * 7) % 5 + 1) + str(i) for i in range(23)]),
            read_ahead=10,
            key=len,
            batch_size=3,
            seed=4,
        )
    ),
    "bucketed_boundary": lambda: list(
        BucketedReadaheadBatchIterator(
            NativeCheckpointableIterator([(i % 3, i) for i in range(17)]),
            read_ahead=8,
            key=lambda t: t[0],
            batch_size=lambda t: 2 + t[0],
            boundary_key=lambda t: t[0],
            seed=1,
        )
    ),
    "bucketed_noshuffle": lambda: list(
        BucketedReadaheadBatchIterator(
            NativeCheckpointableIterator(list(range(10))),
            read_ahead=5,
            key=None,
            batch_size=2,
            shuffle=False,
        )
    ),
    "windowed": lambda: list(WindowedIterator(NativeCheckpointableIterator(list(range(7))), 3)),
    "random_s2": lambda: take(RandomIterator(seed=2), 3),
    "chunked_train": lambda: take(
        chunked_dataset_iterator(
            CHUNKS, iter, buffer_size=4, seed=11, num_instances=2, instance_rank=0
        ),
        25,
    ),
    "chunked_train_windowed": lambda: take(
        chunked_dataset_iterator(CHUNKS, iter, buffer_size=4, seed=11, use_windowed=True), 25
    ),
    "chunked_eval": lambda: take(
        chunked_dataset_iterator(
            CHUNKS,
            iter,
            buffer_size=4,
            train=False,
            shuffle=False,
            num_instances=2,
            instance_rank=1,
        ),
        25,
    ),
}


def test_every_recorded_case_is_checked():
    assert set(CASES) == set(GOLDEN) - {"_source"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_output_as_infinibatch(name):
    assert as_lists(CASES[name]()) == GOLDEN[name]
