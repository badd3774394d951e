"""Shared helpers of the benchmarks: timing and the result rows that run_all.py collects.

Each ``bench_*.py`` module defines ``run(quick: bool = False) -> list[Row]`` and runs it when
executed directly. A row compares ours with one peer on one metric, measured in the same run.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Row:
    """One measurement of ours against one peer, measured side by side in one run."""

    benchmark: str  # e.g. "iterators: 5-stage pipeline"
    metric: str  # e.g. "items/s", "getstate us", "state bytes"
    ours: float
    peer: float
    peer_name: str  # e.g. "infinibatch 0.1.1"
    higher_is_better: bool
    goal: str = ""  # the goal the issue set, in words, e.g. ">= 1.0x"

    @property
    def ratio(self) -> float:
        """How many times better ours is (> 1 means ours is better)."""
        if self.higher_is_better:
            return self.ours / self.peer if self.peer else float("inf")
        return self.peer / self.ours if self.ours else float("inf")


def median_seconds(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Median wall time of ``number`` calls of `fn`, over `repeat` rounds, in seconds per call."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def print_rows(rows: list[Row]) -> None:
    """Print rows as an aligned table."""
    header = ("benchmark", "metric", "ours", "peer", "peer value", "ratio", "goal")
    lines = [header] + [
        (
            r.benchmark,
            r.metric,
            f"{r.ours:.4g}",
            r.peer_name,
            f"{r.peer:.4g}",
            f"{r.ratio:.2f}x",
            r.goal,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)))
