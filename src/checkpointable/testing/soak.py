"""A soak: hours of epochs with workers, resumes and worker-count changes, watched for growth.

`soak` trains nothing; it runs the loader the way a long job does: epoch after epoch, with
persistent workers or not, saving a state every few batches and, now and then, replacing the
loader by a fresh one that loads that state with another ``num_workers`` (a restart). Every
`interval` seconds it samples the resident memory of this process and of its workers, the open
file descriptors of this process, its threads, and the ``/dev/shm`` entries of its own (see
`checkpointable.testing._processes`), and it takes the same sample at every restart, between
the closed loader and the next one. It fails on growth from the first fifth of the run to the
last: memory over the run, descriptors and threads between loaders (a live loader holds a few
descriptors per worker, so over the run they follow its worker count, not a leak); and on any
``/dev/shm`` entry that stays. It also checks that every epoch delivered every sample exactly
once.

Run it with ``make soak`` (30 minutes) or ``python -m checkpointable.testing.soak --minutes 30``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._processes import children, ours_in_shm, record_semaphores, shm_entries

__all__ = ["Sample", "SoakReport", "main", "soak"]

#: Allowed growth from the first fifth of the run to the last (medians).
RSS_GROWTH_BYTES = 32 * 2**20
FD_GROWTH = 4
THREAD_GROWTH = 2


@dataclass
class Sample:
    """One measurement."""

    seconds: float
    rss_main: int  # bytes
    rss_workers: int  # bytes, all live workers together
    workers: int
    fds: int
    threads: int
    shm: int  # /dev/shm entries that were not there at the start


@dataclass
class SoakReport:
    """What a soak saw."""

    minutes: float
    epochs: int = 0
    batches: int = 0
    restarts: int = 0
    epoch_errors: int = 0  # epochs that lost or repeated a sample
    samples: list[Sample] = field(default_factory=list)
    rest: list[Sample] = field(default_factory=list)  # between two loaders, and at the end
    problems: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.epoch_errors

    def summary(self) -> dict[str, Any]:
        """First-fifth and last-fifth medians of each measure, over the run and between
        loaders (``*_at_rest``)."""
        out = {name: _trend(self.samples, name) for name in _MEASURES}
        for name in ("fds", "threads"):
            out[f"{name}_at_rest"] = _trend(self.rest, name)
        return out


_MEASURES = ("rss_main", "rss_workers", "fds", "threads", "shm")


def _trend(samples: list[Sample], name: str) -> dict[str, float]:
    fifth = max(len(samples) // 5, 1)
    head, tail = samples[:fifth], samples[-fifth:]
    first = statistics.median(getattr(s, name) for s in head) if head else 0
    last = statistics.median(getattr(s, name) for s in tail) if tail else 0
    peak = max((getattr(s, name) for s in samples), default=0)
    return {"first": first, "last": last, "max": peak}


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def soak(minutes: float, seed: int = 0, interval: float = 2.0) -> SoakReport:
    """Run the loader for `minutes` with resumes and worker-count changes; see the module."""
    import torch

    from ..dataloader import StatefulDataLoader
    from ._torture_cases import Ids

    warnings.filterwarnings("ignore", message="This DataLoader will create")
    report = SoakReport(minutes)
    chance = random.Random(seed)
    shm_start = shm_entries()
    me = os.getpid()
    semaphores: set[str] = set()
    pids: set[int] = {me}
    stop_recording = record_semaphores(semaphores.add)
    start = time.monotonic()
    stop_at = start + minutes * 60
    dataset = Ids(2048)

    def build(state: dict[str, Any] | None) -> Any:
        workers = chance.choice([0, 1, 2, 3])
        persistent = workers > 0 and chance.random() < 0.5
        loader = StatefulDataLoader(
            dataset,
            batch_size=16,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
            num_workers=workers,
            persistent_workers=persistent,
        )
        if state is not None:
            loader.load_state_dict(state)
        return loader

    def measure(into: list[Sample]) -> None:
        workers = children(me)
        pids.update(workers)
        into.append(
            Sample(
                seconds=round(time.monotonic() - start, 1),
                rss_main=_rss(me),
                rss_workers=sum(_rss(pid) for pid in workers),
                workers=len(workers),
                fds=len(os.listdir("/proc/self/fd")),
                threads=threading.active_count(),
                shm=len(ours_in_shm(shm_entries() - shm_start, semaphores, pids)),
            )
        )

    loader = build(None)
    seen: collections.Counter[int] = collections.Counter()
    state = loader.state_dict()
    next_sample = start
    while time.monotonic() < stop_at:
        restart = False
        for batch in loader:
            seen.update(int(i) for i in batch)
            report.batches += 1
            if report.batches % 7 == 0:
                state = loader.state_dict()
            if time.monotonic() >= next_sample:
                measure(report.samples)
                next_sample += interval
            if chance.random() < 0.01:  # a restart: a new loader from the last saved state
                state = loader.state_dict()
                restart = True
                break
        if restart:  # measured once the loader and its epoch's iterator are gone
            loader.close()
            del loader
            measure(report.rest)
            loader = build(state)
            report.restarts += 1
            continue
        report.epochs += 1
        if sorted(seen) != list(range(len(dataset))) or max(seen.values()) != 1:
            report.epoch_errors += 1
        seen.clear()
        state = loader.state_dict()
    loader.close()
    del loader
    deadline = time.monotonic() + 5.0  # workers that were just stopped may still be ending
    while children(me) and time.monotonic() < deadline:
        time.sleep(0.05)
    measure(report.samples)
    report.rest.append(report.samples[-1])
    stop_recording()
    _judge(report)
    return report


def _judge(report: SoakReport) -> None:
    summary = report.summary()
    limits = {"rss_main": RSS_GROWTH_BYTES, "fds": FD_GROWTH, "threads": THREAD_GROWTH}
    for name, limit in limits.items():
        measured = name if name == "rss_main" or not report.rest else f"{name}_at_rest"
        grew = summary[measured]["last"] - summary[measured]["first"]
        if grew > limit:
            report.problems.append(f"{measured} grew by {grew} (limit {limit})")
    left = report.samples[-1].shm if report.samples else 0
    if left:
        report.problems.append(f"{left} /dev/shm entries left at the end")
    if report.epoch_errors:
        report.problems.append(f"{report.epoch_errors} epochs lost or repeated a sample")


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python -m checkpointable.testing.soak [--minutes M] [--json PATH]``."""
    parser = argparse.ArgumentParser(prog="python -m checkpointable.testing.soak")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, default=None, help="write the samples here")
    args = parser.parse_args(argv)
    if args.minutes <= 0:
        parser.error(f"--minutes must be > 0, got {args.minutes}")
    report = soak(args.minutes, args.seed, args.interval)
    summary = report.summary()
    print(
        f"checkpointable soak: {args.minutes:g} min, {report.epochs} epochs, {report.batches} "
        f"batches, {report.restarts} restarts with another num_workers, "
        f"{report.epoch_errors} epochs with a lost or repeated sample"
    )
    for name, values in summary.items():
        first, last, peak = values["first"], values["last"], values["max"]
        print(f"  {name:16} first {first:>12,.0f}  last {last:>12,.0f}  max {peak:>12,.0f}")
    if args.json is not None:
        data = asdict(report) | {"summary": summary}
        args.json.write_text(json.dumps(data, indent=1))
    print("verdict:", "no growth, nothing left" if report.clean else "; ".join(report.problems))
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
