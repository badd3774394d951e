"""Iterator pipelines, ours against infinibatch 0.1.1, side by side in one run.

Measures (issue 2): items/s of a 5-stage pipeline, ``getstate`` time and state size, and the time
of ``setstate`` + first item at positions 1e3, 1e5 and 1e6. Before timing, it checks that both
libraries produce the same items for the same pipeline, so the comparison is like for like.

Run: ``python benchmarks/bench_iterators.py [--quick]`` in the bench set-up (``make bench``).
"""

from __future__ import annotations

import pickle
import sys
from itertools import islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import Row, median_seconds, print_rows

import checkpointable.iterators as ours

PEER = "infinibatch 0.1.1"


def _double(x: int) -> list[int]:
    return [x, x + 1]


def _plus_one(x: int) -> int:
    return x + 1


def five_stage(lib: Any, n: int = 100_000) -> Any:
    """Source -> SelectMany -> BlockwiseShuffle -> Map -> FixedBatch, in either library."""
    it = lib.InfinitePermutationSourceIterator(list(range(n)), seed=1)
    it = lib.SelectManyIterator(it, _double)
    it = lib.BlockwiseShuffleIterator(it, 1000, seed=2)
    it = lib.MapIterator(it, _plus_one)
    return lib.FixedBatchIterator(it, 32)


def seekable(lib: Any, data: list[int]) -> Any:
    """A pipeline over an in-memory list, whose restore infinibatch does by replay."""
    it = lib.NativeCheckpointableIterator(data)
    it = lib.MapIterator(it, _plus_one)
    return lib.FixedBatchIterator(it, 10)


def _throughput(lib: Any, batches: int) -> float:
    it = five_stage(lib)
    next(it)  # start-up (first shuffle) is not throughput

    def consume() -> None:
        for _ in islice(it, batches):
            pass

    return batches * 32 / median_seconds(consume, repeat=5)


def _getstate(lib: Any) -> tuple[float, int]:
    it = five_stage(lib)
    for _ in islice(it, 500):
        pass
    seconds = median_seconds(it.getstate, repeat=7, number=200)
    return seconds, len(pickle.dumps(it.getstate()))


def _restore(lib: Any, position: int, data: list[int]) -> float:
    """Seconds to build the pipeline, set the state at `position` and take the next item."""
    source = seekable(lib, data)
    for _ in islice(source, position // 10):
        pass
    state = source.getstate()

    def restore() -> None:
        fresh = seekable(lib, data)
        fresh.setstate(state)
        next(fresh)

    return median_seconds(restore, repeat=5)


def _same_output(peer: Any) -> None:
    mine = list(islice(five_stage(ours, 1000), 200))
    theirs = list(islice(five_stage(peer, 1000), 200))
    if mine != theirs:
        raise SystemExit("the two libraries produce different items; comparison aborted")


def run(quick: bool = False) -> list[Row]:
    import infinibatch.iterators as peer

    _same_output(peer)
    rows = []
    batches = 300 if quick else 3000
    rows.append(
        Row(
            "iterators: 5-stage pipeline",
            "items/s",
            _throughput(ours, batches),
            _throughput(peer, batches),
            PEER,
            higher_is_better=True,
            goal=">= 1x",
        )
    )
    ours_time, ours_size = _getstate(ours)
    peer_time, peer_size = _getstate(peer)
    rows.append(
        Row("iterators: 5-stage getstate", "us", ours_time * 1e6, peer_time * 1e6, PEER, False)
    )
    rows.append(
        Row("iterators: 5-stage state size", "bytes (pickle)", ours_size, peer_size, PEER, False)
    )
    positions = [10**3, 10**5] if quick else [10**3, 10**5, 10**6]
    data = list(range(max(positions) + 1000))
    for position in positions:
        rows.append(
            Row(
                f"iterators: setstate + first item at {position:.0e}",
                "ms",
                _restore(ours, position, data) * 1e3,
                _restore(peer, position, data) * 1e3,
                PEER,
                higher_is_better=False,
                goal="ours flat in position",
            )
        )
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
