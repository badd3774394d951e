"""PrefetchIterator and ParallelMapIterator against infinibatch 0.1.1, side by side (fork).

infinibatch prefetches only under fork, so both run under fork here; ours also runs under spawn
and forkserver (its tests check that). Measured: throughput of a prefetched pipeline (buffer in
the worker, and infinibatch's "experimental" buffer in the main process), the cost of
``getstate()`` while prefetching, the throughput of a parallel map, and the time to restore a
parallel map at item 20,000 and get the next item.
"""

from __future__ import annotations

import itertools
import multiprocessing
import sys
import time
from collections.abc import Callable
from typing import Any

from _common import Row, median_seconds, print_rows

from checkpointable import iterators as ours

PEER = "infinibatch 0.1.1"


def light(n: int) -> tuple[int, str]:
    """A cheap per-item step, as in a tokenised-text pipeline."""
    return n, str(n)


def work(n: int) -> int:
    """A CPU-bound transform of ~50 us, worth parallelising."""
    return sum(i * i for i in range(n % 7 + 300))


def _items_per_second(make: Callable[[], Any], count: int) -> float:
    it = make()
    next(it)  # start the workers outside the measurement
    start = time.perf_counter()
    for _ in itertools.islice(it, count):
        pass
    elapsed = time.perf_counter() - start
    _close(it)
    return count / elapsed


def _close(it: Any) -> None:
    close = getattr(it, "close", None)
    if close is not None:
        close()


def _prefetch_rows(peer: Any, count: int) -> list[Row]:
    def pipeline(module: Any, in_main: bool) -> Callable[[], Any]:
        def make() -> Any:
            source = module.NativeCheckpointableIterator(list(range(count + 1)))
            mapped = module.MapIterator(source, light)
            return module.PrefetchIterator(mapped, 64, buffer_in_main_process=in_main)

        return make

    rows = []
    for in_main, label in ((False, "buffer in worker"), (True, "buffer in main process")):
        ours_rate = _items_per_second(pipeline(ours, in_main), count)
        peer_rate = _items_per_second(pipeline(peer, in_main), count)
        rows.append(
            Row(f"prefetch ({label})", "items/s", ours_rate, peer_rate, PEER, True, ">= 1.0x")
        )
    rows.append(_getstate_row(pipeline(ours, False), pipeline(peer, False)))
    return rows


def _getstate_row(make_ours: Callable[[], Any], make_peer: Callable[[], Any]) -> Row:
    times = []
    for make in (make_ours, make_peer):
        it = make()
        for _ in range(100):
            next(it)
        times.append(median_seconds(it.getstate, repeat=5, number=2000) * 1e6)
        _close(it)
    return Row("prefetch", "getstate us", times[0], times[1], PEER, False, "none (< 1 us)")


def _parallel_map_rows(peer: Any, count: int) -> list[Row]:
    def make(module: Any) -> Any:
        source = module.NativeCheckpointableIterator(list(range(count + 20_001)))
        return module.ParallelMapIterator(source, work, 2, 16)

    ours_rate = _items_per_second(lambda: make(ours), count)
    peer_rate = _items_per_second(lambda: make(peer), count)
    rows = [
        Row("parallel map (2 processes)", "items/s", ours_rate, peer_rate, PEER, True, ">= 1.0x")
    ]
    restore = []
    for module in (ours, peer):
        it = make(module)
        for _ in range(20_000):
            next(it)
        state = it.getstate()
        it.setstate(None)
        next(it)

        def restore_and_next(it: Any = it, state: Any = state) -> None:
            it.setstate(state)
            next(it)

        restore.append(median_seconds(restore_and_next, repeat=5) * 1e3)
        _close(it)
    rows.append(
        Row(
            "parallel map at item 2e4",
            "setstate+next ms",
            restore[0],
            restore[1],
            PEER,
            False,
            ">= 1.0x",
        )
    )
    return rows


def run(quick: bool = False) -> list[Row]:
    """Measure ours and infinibatch side by side; `quick` uses fewer items."""
    import infinibatch.iterators as peer

    if multiprocessing.get_start_method() != "fork":
        multiprocessing.set_start_method("fork", force=True)  # infinibatch prefetches only so
    count = 3_000 if quick else 20_000
    return _prefetch_rows(peer, count) + _parallel_map_rows(peer, count // 4)


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
