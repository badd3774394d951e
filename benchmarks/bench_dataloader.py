"""StatefulDataLoader against torch's DataLoader and torchdata 0.11's StatefulDataLoader.

Same arguments for all three (batch 64, shuffle, num_workers 0 and 2), measured side by side in
one run, loaders and worker counts interleaved round by round so that a busy machine slows all
of them alike (the goals are issue 13's, shown in each row):

- throughput (batches/s) on a cheap dataset and on one that takes ~1 ms per item (a sleep, as
  I/O): ours against torch's DataLoader, and ours with 2 workers against ours with none;
- ``state_dict()`` time mid-epoch (median of the rounds' medians, interleaved with
  torchdata's) and the state's size (pickled, as torchdata's state holds tensors);
- time to the first batch after ``load_state_dict`` of a state taken at batch 10, 1e3 and 1e4
  (goal: flat in the position).
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows

from checkpointable.dataloader import StatefulDataLoader

TORCH = f"torch {torch.__version__.split('+')[0]} DataLoader"
TORCHDATA = "torchdata 0.11 StatefulDataLoader"
BATCH = 64


class Cheap(Dataset[Any]):
    """Items cost nothing to read: the loader's own overhead dominates."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, index * 0.5


class Millisecond(Cheap):
    """Each item takes ~1 ms (a sleep, as reading from storage)."""

    def __getitem__(self, index: int) -> tuple[int, float]:
        time.sleep(0.001)
        return index, index * 0.5


def _peers() -> dict[str, Callable[..., Any]]:
    loaders: dict[str, Callable[..., Any]] = {"ours": StatefulDataLoader, TORCH: DataLoader}
    try:
        from torchdata.stateful_dataloader import StatefulDataLoader as TorchdataLoader
    except ImportError:  # pragma: no cover - the bench set-up installs it
        print("torchdata is not installed: pip install -r benchmarks/requirements.txt")
    else:
        loaders[TORCHDATA] = TorchdataLoader
    return loaders


def _close(loader: Any) -> None:
    close = getattr(loader, "close", None)
    if callable(close):
        close()
    iterator = getattr(loader, "_iterator", None)  # torch / torchdata persistent iterators
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()


def _throughput(make: Callable[[], Any], batches: int) -> float:
    """Batches per second over `batches` batches, after the first one (workers started)."""
    loader = make()
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    _close(loader)
    return batches / elapsed


def throughput_rows(quick: bool) -> list[Row]:
    peers = _peers()
    rows = []
    repeats = 3 if quick else 5
    cheap: dict[tuple[str, int], float] = {}  # (loader, workers) -> median batches/s, cheap items
    for name, dataset, batches in (
        ("cheap", Cheap(200_000), 200 if quick else 2000),
        ("1 ms/item", Millisecond(100_000), 4 if quick else 40),
    ):
        # Interleaved over the worker counts too: the "2 workers vs 0" rows compare runs made
        # at the same moments, not a block of one before a block of the other.
        measured: dict[int, dict[str, list[float]]] = {
            w: {key: [] for key in peers} for w in (0, 2)
        }
        for _ in range(repeats):
            for workers, results in measured.items():
                for key, cls in peers.items():
                    torch.manual_seed(0)
                    make = partial(
                        cls, dataset, batch_size=BATCH, shuffle=True, num_workers=workers
                    )
                    results[key].append(_throughput(make, batches))
        for workers, results in measured.items():
            ours = statistics.median(results["ours"])
            label = f"dataloader: {name}, batch {BATCH}, {workers} workers"
            for key in peers:
                if name == "cheap":
                    cheap[key, workers] = statistics.median(results[key])
                if key != "ours":
                    goal = ">= 1.0x (issue 13: no regression)" if key == TORCH else ""
                    if key == TORCH and name == "cheap" and workers:
                        goal = ">= 2x (issue 13)"
                    peer = statistics.median(results[key])
                    rows.append(Row(label, "batches/s", ours, peer, key, True, goal))
    # What workers cost on cheap items: the hand-off, not the data work, sets the pace.
    for key in ("ours", TORCH):
        rows.append(
            Row(
                f"dataloader: cheap, batch {BATCH}, 2 workers vs 0 ({'ours' if key == 'ours' else 'torch'})",
                "batches/s",
                cheap[key, 2],
                cheap[key, 0],
                f"{'ours' if key == 'ours' else 'torch'} with 0 workers",
                True,
                ">= 0.5x (issue 13)" if key == "ours" else "informative",
            )
        )
    return rows


def _mid_epoch(cls: Any, workers: int, seeded: bool = False) -> tuple[Any, Any]:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0) if seeded else None
    loader = cls(
        Cheap(100_000), batch_size=BATCH, shuffle=True, num_workers=workers, generator=generator
    )
    iterator = iter(loader)
    for _ in range(20):
        next(iterator)
    return loader, iterator


def state_rows(quick: bool) -> list[Row]:
    peers = _peers()
    if TORCHDATA not in peers:
        return []
    rows = []
    rounds, calls = (3, 100) if quick else (5, 400)
    for workers in (0, 2):
        measured = {}
        opened = {key: _mid_epoch(peers[key], workers) for key in ("ours", TORCHDATA)}
        medians: dict[str, list[float]] = {key: [] for key in opened}
        for _ in range(rounds):  # interleaved: a slow phase of the machine slows both alike
            for key, (loader, _) in opened.items():
                loader.state_dict()
                times = []
                for _ in range(calls):
                    start = time.perf_counter()
                    loader.state_dict()
                    times.append(time.perf_counter() - start)
                medians[key].append(statistics.median(times))
        for key, (loader, iterator) in opened.items():
            size = len(pickle.dumps(loader.state_dict()))
            measured[key] = (statistics.median(medians[key]) * 1e6, size)
            del iterator
            _close(loader)
        del opened
        label = f"dataloader: state_dict(), {workers} workers"
        goal = "< 5 us (issue 13)" if workers else ""
        ours, theirs = measured["ours"], measured[TORCHDATA]
        rows.append(
            Row(
                label,
                "state_dict us (median of rounds)",
                ours[0],
                theirs[0],
                TORCHDATA,
                False,
                goal,
            )
        )
        goal = "< 256 B (issue 13)"
        rows.append(Row(label, "state bytes (pickled)", ours[1], theirs[1], TORCHDATA, False, goal))
    # The guide recommends a seeded generator (later epochs' order is then in the state too).
    sizes = {}
    for key in ("ours", TORCHDATA):
        loader, iterator = _mid_epoch(peers[key], 0, seeded=True)
        sizes[key] = len(pickle.dumps(loader.state_dict()))
        del iterator
        _close(loader)
    label = "dataloader: state_dict() with a seeded generator, 0 workers"
    goal = "< 1 KB (issue 13)"
    rows.append(
        Row(label, "state bytes (pickled)", sizes["ours"], sizes[TORCHDATA], TORCHDATA, False, goal)
    )
    return rows


def _state_at(cls: Any, dataset: Any, position: int, workers: int) -> Any:
    """A state taken after `position` batches (torchdata loads only the same num_workers)."""
    torch.manual_seed(0)
    loader = cls(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    iterator = iter(loader)
    for _ in range(position):
        next(iterator)
    state = loader.state_dict()
    del iterator
    _close(loader)
    return state


def _first_batch_after_load(cls: Any, dataset: Any, state: Any, workers: int) -> float:
    start = time.perf_counter()
    loader = cls(dataset, batch_size=BATCH, shuffle=True, num_workers=workers)
    loader.load_state_dict(state)
    iterator = iter(loader)
    next(iterator)
    elapsed = time.perf_counter() - start
    del iterator
    _close(loader)
    return elapsed


def resume_rows(quick: bool) -> list[Row]:
    peers = _peers()
    if TORCHDATA not in peers:
        return []
    positions = (10, 1000) if quick else (10, 1000, 10_000)
    dataset = Cheap(BATCH * max(positions) + 10_000)
    rows = []
    for position in positions:
        for workers in (0, 2):
            states = {
                key: _state_at(peers[key], dataset, position, workers)
                for key in ("ours", TORCHDATA)
            }
            times: dict[str, list[float]] = {"ours": [], TORCHDATA: []}
            for _ in range(3):
                for key in times:
                    times[key].append(
                        _first_batch_after_load(peers[key], dataset, states[key], workers)
                    )
            label = f"dataloader: load at batch {position}, {workers} workers"
            ours, theirs = statistics.median(times["ours"]), statistics.median(times[TORCHDATA])
            rows.append(
                Row(label, "first batch ms", ours * 1e3, theirs * 1e3, TORCHDATA, False, "flat")
            )
    return rows


def run(quick: bool = False) -> list[Row]:
    """All the rows of this benchmark (`quick`: fewer batches and positions)."""
    return throughput_rows(quick) + state_rows(quick) + resume_rows(quick)


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
