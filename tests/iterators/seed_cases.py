"""The pipelines whose output must equal infinibatch's, written once for either library.

Each case takes the library's ``iterators`` and ``datasets`` modules and returns the output as
plain lists. `benchmarks/record_infinibatch_golden.py` runs them on infinibatch 0.1.1 (in the
bench set-up) to record `infinibatch_golden.json`; `test_seed_order.py` runs them on ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Case = Callable[[Any, Any], Any]


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


def sampling_transform(rng: Any, x: int) -> tuple[int, int]:
    return (x, rng.randrange(100))


CHUNKS = [[f"c{c}i{i}" for i in range(c + 2)] for c in range(5)]


def _native(it: Any, items: list[Any]) -> Any:
    return it.NativeCheckpointableIterator(items)


CASES: dict[str, Case] = {
    "perm_5_s7_k3_r1": lambda it, ds: take(
        it.InfinitePermutationSourceIterator(
            list(range(5)), seed=7, num_instances=3, instance_rank=1
        ),
        12,
    ),
    "perm_4_s2": lambda it, ds: take(
        it.InfinitePermutationSourceIterator(list("abcd"), seed=2), 12
    ),
    "perm_3_s1_k5_r4": lambda it, ds: take(
        it.InfinitePermutationSourceIterator(
            list(range(3)), seed=1, num_instances=5, instance_rank=4
        ),
        8,
    ),
    "perm_noshuffle_k2_r1": lambda it, ds: take(
        it.InfinitePermutationSourceIterator(
            list(range(5)), shuffle=False, num_instances=2, instance_rank=1
        ),
        8,
    ),
    "buffered_20_b5_s3": lambda it, ds: list(
        it.BufferedShuffleIterator(_native(it, list(range(1, 21))), 5, seed=3)
    ),
    "blockwise_10_b4_s5": lambda it, ds: list(
        it.BlockwiseShuffleIterator(_native(it, list(range(10))), 4, seed=5)
    ),
    "sampling_6_s9": lambda it, ds: list(
        it.SamplingRandomMapIterator(_native(it, list(range(6))), sampling_transform, seed=9)
    ),
    "bucketed": lambda it, ds: list(
        it.BucketedReadaheadBatchIterator(
            _native(it, ["x" * ((i * 7) % 5 + 1) + str(i) for i in range(23)]),
            read_ahead=10,
            key=len,
            batch_size=3,
            seed=4,
        )
    ),
    "bucketed_boundary": lambda it, ds: list(
        it.BucketedReadaheadBatchIterator(
            _native(it, [(i % 3, i) for i in range(17)]),
            read_ahead=8,
            key=lambda t: t[0],
            batch_size=lambda t: 2 + t[0],
            boundary_key=lambda t: t[0],
            seed=1,
        )
    ),
    "bucketed_noshuffle": lambda it, ds: list(
        it.BucketedReadaheadBatchIterator(
            _native(it, list(range(10))), read_ahead=5, key=None, batch_size=2, shuffle=False
        )
    ),
    "windowed": lambda it, ds: list(it.WindowedIterator(_native(it, list(range(7))), 3)),
    "random_s2": lambda it, ds: take(it.RandomIterator(seed=2), 3),
    "chunked_train": lambda it, ds: take(
        ds.chunked_dataset_iterator(
            CHUNKS, iter, buffer_size=4, seed=11, prefetch=False, num_instances=2, instance_rank=0
        ),
        25,
    ),
    "chunked_train_windowed": lambda it, ds: take(
        ds.chunked_dataset_iterator(
            CHUNKS, iter, buffer_size=4, seed=11, use_windowed=True, prefetch=False
        ),
        25,
    ),
    "chunked_eval": lambda it, ds: take(
        ds.chunked_dataset_iterator(
            CHUNKS,
            iter,
            buffer_size=4,
            train=False,
            shuffle=False,
            prefetch=False,
            num_instances=2,
            instance_rank=1,
        ),
        25,
    ),
}


def run_all(iterators: Any, datasets: Any) -> dict[str, Any]:
    """Every case's output on the library given by its two modules, as plain lists."""
    return {name: as_lists(case(iterators, datasets)) for name, case in CASES.items()}
