"""Iterator pipelines, ours against infinibatch 0.1.1, side by side in one run.

Measures (issue 2): items/s of a 5-stage pipeline, ``getstate`` time and state size, and the time
of ``setstate`` + first item at positions 1e3, 1e5 and 1e6. Before timing, it checks that both
libraries produce the same items for the same pipeline, so the comparison is like for like.

Issue 13 adds two rows, each timed interleaved (plain loop, ours, infinibatch in turn, repeated;
median [min-max] in the metric): a 5-stage pipeline over tensor items with cheap per-item work,
as a fraction of a plain Python loop doing the same calls (goal >= 0.8x), and the resume cost
(build + ``setstate`` + first batch) of ``Map -> BufferedShuffle -> FixedBatch`` at batches
10 / 1000 / 3000 (goal: flat in the position and below infinibatch).

Run: ``python benchmarks/bench_iterators.py [--quick]`` in the bench set-up (``make bench``).
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from collections.abc import Callable
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


def _pair(item: Any) -> tuple[Any, int]:
    return (item, 1)


def _swap(pair: tuple[Any, int]) -> tuple[int, Any]:
    return (pair[1], pair[0])


def _second(pair: tuple[int, Any]) -> Any:
    return pair[1]


def tensor_stages(lib: Any, items: list[Any]) -> Any:
    """Source -> Map -> Map -> Map -> FixedBatch over tensor items, cheap work per item."""
    it = lib.NativeCheckpointableIterator(items)
    it = lib.MapIterator(it, _pair)
    it = lib.MapIterator(it, _swap)
    it = lib.MapIterator(it, _second)
    return lib.FixedBatchIterator(it, 32)


def plain_loop(items: list[Any]) -> list[list[Any]]:
    """What `tensor_stages` computes, as a plain Python loop."""
    batches, batch = [], []
    for item in items:
        batch.append(_second(_swap(_pair(item))))
        if len(batch) == 32:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def _interleaved(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each run, the runs taking turns `repeat` times (so load hits them alike)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def _spread(values: list[float], scale: float = 1.0) -> str:
    scaled = sorted(value * scale for value in values)
    return f"{statistics.median(scaled):.3g} [{scaled[0]:.3g}-{scaled[-1]:.3g}]"


def _vs_plain_loop(peer: Any, quick: bool) -> Row:
    import torch

    items = [torch.tensor(i) for i in range(20_000 if quick else 100_000)]
    if list(tensor_stages(ours, items)) != plain_loop(items):
        raise SystemExit("the pipeline and the plain loop differ; comparison aborted")
    times = _interleaved(
        {
            "plain": lambda: plain_loop(items),
            "ours": lambda: list(tensor_stages(ours, items)),
            "peer": lambda: list(tensor_stages(peer, items)),
        },
        repeat=5 if quick else 11,
    )
    # per repeat: plain / pipeline, a fraction of the plain loop's speed
    ratios = {
        name: [p / t for p, t in zip(times["plain"], times[name], strict=True)]
        for name in ("ours", "peer")
    }
    return Row(
        "iterators: 5-stage pipeline vs a plain loop (tensor items)",
        f"x plain loop; ours {_spread(ratios['ours'])}, peer {_spread(ratios['peer'])}",
        statistics.median(ratios["ours"]),
        statistics.median(ratios["peer"]),
        PEER,
        higher_is_better=True,
        goal=">= 0.8x a plain loop",
    )


def _scale(item: Any) -> Any:
    return item * 2


def shuffle_chain(lib: Any, items: list[Any]) -> Any:
    """Source -> Map -> BufferedShuffle (1000 slots) -> FixedBatch (10)."""
    it = lib.NativeCheckpointableIterator(items)
    it = lib.MapIterator(it, _scale)
    it = lib.BufferedShuffleIterator(it, 1000, seed=4)
    return lib.FixedBatchIterator(it, 10)


def _resume(lib: Any, state: Any, expected: list[Any], items: list[Any], name: str) -> Any:
    """A run that builds the chain, sets `state` and checks the first batch is `expected`."""

    def go() -> None:
        fresh = shuffle_chain(lib, items)
        fresh.setstate(state)
        if [int(x) for x in next(fresh)] != [int(x) for x in expected]:
            raise SystemExit(f"{name}: the resumed batch differs")

    return go


def _shuffle_resume(peer: Any, quick: bool) -> list[Row]:
    import torch

    items = [torch.tensor(i) for i in range(50_000)]
    rows = []
    for position in (10, 1000) if quick else (10, 1000, 3000):
        states = {}
        for name, lib in (("ours", ours), ("peer", peer)):
            run = shuffle_chain(lib, items)
            for _ in islice(run, position):
                pass
            states[name] = (lib, run.getstate(), next(run))

        runs = {name: _resume(*states[name], items, name) for name in states}
        times = _interleaved(runs, repeat=5)
        rows.append(
            Row(
                f"iterators: resume Map -> BufferedShuffle -> FixedBatch at batch {position}",
                f"ms; ours {_spread(times['ours'], 1e3)}, peer {_spread(times['peer'], 1e3)}",
                statistics.median(times["ours"]) * 1e3,
                statistics.median(times["peer"]) * 1e3,
                PEER,
                higher_is_better=False,
                goal="bounded by the buffer; < infinibatch at every position",
            )
        )
    return rows


def _same_output(peer: Any) -> None:
    mine = list(islice(five_stage(ours, 1000), 200))
    theirs = list(islice(five_stage(peer, 1000), 200))
    if mine != theirs:
        raise SystemExit("the two libraries produce different items; comparison aborted")


def run(quick: bool = False) -> list[Row]:
    import infinibatch.iterators as peer

    _same_output(peer)
    rows = [_vs_plain_loop(peer, quick), *_shuffle_resume(peer, quick)]
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
