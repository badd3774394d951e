"""Shard sources: ShardedDataset against the peers on the same files, in one run.

The files: `FILES` Parquet files, the same rows as JSONL, and the same rows as WebDataset tar
shards (``{"id", "text"}`` rows, ~120 bytes each). Metrics:

- ``rows/s shuffled, W workers`` (W = 0, 2): one shuffled epoch through a loader with
  ``batch_size=256``, the best of two runs of each side, alternated. Peers: Hugging Face
  ``datasets`` streaming (``load_dataset(..., streaming=True).shuffle(buffer_size=10_000)``) on
  the same Parquet and JSONL files; ``webdataset`` (shard shuffle + a 10,000-sample buffer) on
  the same tars; mosaic ``streaming`` and ``litdata`` after converting the rows to their
  formats, the conversion counted in their time (they cannot read the files as they are).
  Mosaic needs numpy<2.2, so it runs in its own environment (``.venv-mosaic``, built by ``make
  bench`` from ``requirements-mosaic.txt``), in a subprocess: ``mosaic_peer.py``.
- ``restore-fresh ms at P%`` (P = 10, 90): the time to the first batch after loading a state
  saved at P% of the epoch, minus the time to the first batch of a fresh start, medians of 5
  (goal: < 50 ms and flat in P; under 0.1 ms shows as 0.1). The clock starts after the dataset
  or stream is built (our file index, the same with or without a state) and covers the
  loader, ``load_state_dict`` and the first batch. Ours on the Parquet and the tar
  files; peers: ``datasets`` streaming's own ``load_state_dict`` (its shard position; its
  shuffle buffer is not restored), webdataset's only way, skipping P% of the rows.
- ``state bytes at P%``: ours (the whole loader state, JSON) against ``datasets``' state.
- ``exactly-once share``: the share of the epoch's rows delivered exactly once over a save at
  10% and a resume (ours saved with 2 workers and resumed with 1; ``datasets`` through its state).

A peer that is not installed, or fails, is reported on stderr and left out of the table.
"""

from __future__ import annotations

import functools
import io
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from _common import Row, print_rows
from torch.utils.data import DataLoader

from checkpointable import ShardedDataset, StatefulDataLoader

FILES = 8
BATCH = 256
SEED = 3
GOAL = ">= 1.0x"
FLAT = "< 50 ms, flat"


def write_files(folder: Path, rows: int) -> dict[str, list[str]]:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    per_file = rows // FILES
    out: dict[str, list[str]] = {"parquet": [], "jsonl": [], "tar": []}
    for number in range(FILES):
        ids = list(range(number * per_file, (number + 1) * per_file))
        texts = [f"row {i} " + "lorem ipsum dolor sit amet " * 4 for i in ids]
        base = folder / f"part-{number:03d}"
        pq.write_table(pa.table({"id": ids, "text": texts}), f"{base}.parquet", row_group_size=2048)
        with open(f"{base}.jsonl", "w") as handle:
            handle.writelines(
                json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True)
            )
        with tarfile.open(f"{base}.tar", "w") as archive:
            for i, text in zip(ids, texts, strict=True):
                for ext, data in (("id", str(i).encode()), ("txt", text.encode())):
                    info = tarfile.TarInfo(f"s{i:08d}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
        for kind in out:
            out[kind].append(f"{base}.{kind}")
    return out


def rows_per_second(make: Callable[[], Iterable[Any]], rows: int) -> float:
    start = time.perf_counter()
    seen = sum(len(batch) for batch in make())
    elapsed = time.perf_counter() - start
    if seen < rows * 0.99:
        raise RuntimeError(f"read {seen} rows of {rows}")
    return seen / elapsed


def ours_dataset(files: list[str]) -> ShardedDataset:
    return ShardedDataset(files, seed=SEED, window=4, block_rows=2048)


def ours_loader(files: list[str] | ShardedDataset, workers: int) -> StatefulDataLoader:
    dataset = files if isinstance(files, ShardedDataset) else ours_dataset(files)
    return StatefulDataLoader(
        dataset, batch_size=BATCH, sampler=dataset.sampler, collate_fn=list, num_workers=workers
    )


def first_batch_seconds(prepare: Callable[[], Any], start: Callable[[Any], Any]) -> float:
    """Seconds from ``start(prepare())`` to its first item; `prepare` runs before the clock."""
    prepared = prepare()
    began = time.perf_counter()
    next(iter(start(prepared)))
    return time.perf_counter() - began


def median_first_batch(
    prepare: Callable[[], Any], start: Callable[[Any], Any], repeat: int = 5
) -> float:
    return statistics.median(first_batch_seconds(prepare, start) for _ in range(repeat))


def ours_state(files: list[str], rows: int, fraction: float) -> dict[str, Any]:
    """The loader state saved at `fraction` of an epoch (through JSON)."""
    loader = ours_loader(files, 0)
    iterator = iter(loader)
    for _ in range(int(rows * fraction) // BATCH):
        next(iterator)
    state: dict[str, Any] = json.loads(json.dumps(loader.state_dict()))
    return state


def ours_start(state: dict[str, Any] | None) -> Callable[[ShardedDataset], StatefulDataLoader]:
    """Builds the loader over a built dataset and loads `state` (None: a fresh start)."""

    def start(dataset: ShardedDataset) -> StatefulDataLoader:
        loader = ours_loader(dataset, 0)
        if state is not None:
            loader.load_state_dict(state)
        return loader

    return start


# --------------------------------------------------------------------------------- peers
def hf_stream(kind: str, files: list[str]) -> Any:
    from datasets import load_dataset

    name = "json" if kind == "jsonl" else kind
    stream = load_dataset(name, data_files=files, split="train", streaming=True)
    return stream.shuffle(seed=SEED, buffer_size=10_000)


def hf_restore(kind: str, files: list[str], rows: int, fraction: float) -> tuple[float, int]:
    stream = hf_stream(kind, files)
    iterator = iter(stream)
    for _ in range(int(rows * fraction)):
        next(iterator)
    state = stream.state_dict()

    def resume(again: Any) -> Any:
        again.load_state_dict(state)
        return again

    seconds = median_first_batch(lambda: hf_stream(kind, files), resume, 3)
    return seconds, len(json.dumps(state, default=str))


def wds_pipeline(files: list[str]) -> Any:
    import webdataset as wds

    return wds.WebDataset(files, shardshuffle=len(files), seed=SEED, empty_check=False).shuffle(
        10_000
    )


def wds_restore(files: list[str], rows: int, fraction: float) -> float:
    def resume(pipeline: Any) -> Any:  # no resume: skip the rows already seen
        iterator = iter(pipeline)
        for _ in range(int(rows * fraction)):
            next(iterator)
        return iterator

    return first_batch_seconds(lambda: wds_pipeline(files), resume)


MOSAIC_PYTHON = Path(__file__).resolve().parent.parent / ".venv-mosaic" / "bin" / "python"


def mosaic_epoch(files: list[str], workers: int, folder: Path, rows: int) -> float:
    """Mosaic streaming in its own environment (it needs numpy<2.2): see mosaic_peer.py."""
    python = Path(os.environ.get("MOSAIC_PYTHON", MOSAIC_PYTHON))
    if not python.exists():
        raise FileNotFoundError(
            f"{python} is missing: make bench builds it from benchmarks/requirements-mosaic.txt"
        )
    script = Path(__file__).resolve().parent / "mosaic_peer.py"
    out = folder / f"mds{workers}-{time.monotonic_ns()}"
    command = [str(python), str(script), str(out), str(BATCH), str(SEED), str(workers), *files]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"mosaic_peer.py failed: {done.stderr[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rows"] < rows * 0.99:
        raise RuntimeError(f"mosaic read {result['rows']} rows of {rows}")
    return float(result["rows"]) / float(result["seconds"])


def _litdata_rows(path: str) -> Iterable[dict]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()


def litdata_epoch(files: list[str], workers: int, folder: Path, rows: int) -> float:
    import litdata

    start = time.perf_counter()
    out = folder / f"lit{workers}-{time.monotonic_ns()}"
    method = multiprocessing.get_start_method(allow_none=True)
    try:
        litdata.optimize(
            fn=_litdata_rows, inputs=files, output_dir=str(out), chunk_bytes="16MB", num_workers=1
        )
    finally:  # optimize() sets the start method to spawn for the whole process: put it back,
        # or every loader measured after it (ours and the peers') starts its workers by spawn
        multiprocessing.set_start_method(method, force=True)
    dataset = litdata.StreamingDataset(input_dir=str(out), shuffle=True, seed=SEED)
    loader = litdata.StreamingDataLoader(
        dataset, batch_size=BATCH, num_workers=workers, collate_fn=list
    )
    seen = sum(len(batch) for batch in loader)
    return seen / (time.perf_counter() - start)


def attempt(name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as error:  # a peer that fails is reported and left out
        print(f"bench_sources: {name} skipped: {type(error).__name__}: {error}", file=sys.stderr)
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
        return None


# --------------------------------------------------------------------------------- run
REPEAT = 2  # each throughput is the best of REPEAT runs, ours and the peer's alternated


def side_by_side(
    name: str, ours: Callable[[], float], peer: Callable[[], float]
) -> tuple[float, float | None]:
    """The best of `REPEAT` runs of ours and of the peer, alternated so load hits both alike."""
    best, best_peer = 0.0, 0.0
    for _ in range(REPEAT):
        best = max(best, ours())
        value = attempt(name, peer)
        if value is None:
            return best, None
        best_peer = max(best_peer, value)
    return best, best_peer


def throughput_rows(
    files: dict[str, list[str]], rows: int, workers: int, folder: Path
) -> list[Row]:
    out: list[Row] = []
    metric = f"rows/s shuffled, {workers} workers"

    def ours(kind: str) -> float:
        return rows_per_second(lambda: ours_loader(files[kind], workers), rows)

    def hf(kind: str) -> float:
        stream = hf_stream(kind, files[kind])
        loader = DataLoader(stream, batch_size=BATCH, num_workers=workers, collate_fn=list)
        return rows_per_second(lambda: loader, rows)

    def wds() -> float:
        pipeline = wds_pipeline(files["tar"])
        loader = DataLoader(pipeline, batch_size=BATCH, num_workers=workers, collate_fn=list)
        return rows_per_second(lambda: loader, rows)

    peers: list[tuple[str, str, str, Callable[[], float]]] = [
        ("parquet", metric, "datasets streaming", lambda: hf("parquet")),
        ("jsonl", metric, "datasets streaming", lambda: hf("jsonl")),
        ("tar", metric, "webdataset", wds),
    ]
    converted = f"{metric} (peer incl. conversion)"
    for name, epoch in (("mosaic streaming", mosaic_epoch), ("litdata", litdata_epoch)):
        run_peer = functools.partial(epoch, files["parquet"], workers, folder, rows)
        peers.append(("parquet", converted, name, run_peer))
    for kind, label, name, peer in peers:
        mine, theirs = side_by_side(name, functools.partial(ours, kind), peer)
        if theirs:
            out.append(Row(f"sources: {kind}", label, mine, theirs, name, True, GOAL))
    return out


def restore_rows(files: dict[str, list[str]], rows: int) -> list[Row]:
    """Time to the first batch after a restore minus a fresh start's (medians of 5), and the
    state's bytes. A difference under 0.1 ms is shown as 0.1 ms (so that the ratio exists)."""
    out: list[Row] = []
    parquet, tars = files["parquet"], files["tar"]
    fresh = {
        kind: median_first_batch(functools.partial(ours_dataset, files[kind]), ours_start(None))
        for kind in ("parquet", "tar")
    }
    same = lambda made: made  # noqa: E731  (a fresh start: nothing to load)
    hf_fresh = attempt(
        "datasets fresh", lambda: median_first_batch(lambda: hf_stream("parquet", parquet), same, 3)
    )
    wds_fresh = attempt(
        "webdataset fresh", lambda: median_first_batch(lambda: wds_pipeline(tars), same)
    )
    for percent in (10, 90):
        metric = f"restore-fresh ms at {percent}%"
        extra, state_bytes = {}, 0
        for kind in ("parquet", "tar"):
            state = ours_state(files[kind], rows, percent / 100)
            resumed = median_first_batch(
                functools.partial(ours_dataset, files[kind]), ours_start(state)
            )
            extra[kind] = max(resumed - fresh[kind], 1e-4) * 1000
            state_bytes = max(state_bytes, len(json.dumps(state)))
        hf = attempt(
            "datasets restore",
            functools.partial(hf_restore, "parquet", parquet, rows, percent / 100),
        )
        if hf and hf_fresh:
            peer_ms = max(hf[0] - hf_fresh, 1e-4) * 1000
            name = "datasets streaming"
            out.append(
                Row("sources: parquet", metric, extra["parquet"], peer_ms, name, False, FLAT)
            )
            out.append(
                Row(
                    "sources: parquet",
                    f"state bytes at {percent}%",
                    state_bytes,
                    hf[1],
                    name,
                    False,
                    "< 1 KB",
                )
            )
        wds = attempt(
            "webdataset restore", functools.partial(wds_restore, tars, rows, percent / 100)
        )
        if wds and wds_fresh:
            peer_ms = max(wds - wds_fresh, 1e-4) * 1000
            name = "webdataset (skip)"
            out.append(Row("sources: tar", metric, extra["tar"], peer_ms, name, False, FLAT))
    return out


def run(quick: bool = False) -> list[Row]:
    rows = 16_000 if quick else 80_000
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = write_files(folder, rows)
        rows = (rows // FILES) * FILES
        for workers in (0, 2):
            out += throughput_rows(files, rows, workers, folder)
        out += restore_rows(files, rows)
        out += exactly_once_rows(files["parquet"], rows)
    return out


def exactly_once_rows(files: list[str], rows: int) -> list[Row]:
    """The share of the epoch's rows delivered exactly once over a save at 10% and a resume:
    ours saved with 2 workers and resumed with 1; datasets streaming through its own state
    (no workers: its buffer is not saved, so the rows it held are lost)."""
    loader = ours_loader(files, 2)
    iterator = iter(loader)
    head = [row["id"] for _ in range(rows // 10 // BATCH) for row in next(iterator)]
    state = loader.state_dict()
    del iterator
    resumed = ours_loader(files, 1)
    resumed.load_state_dict(state)
    tail = [row["id"] for batch in resumed for row in batch]
    ours = once_share(head + tail, rows)

    def hf() -> float:
        stream = hf_stream("parquet", files)
        stream_iter = iter(stream)
        seen = [next(stream_iter)["id"] for _ in range(rows // 10)]
        saved = stream.state_dict()
        again = hf_stream("parquet", files)
        again.load_state_dict(saved)
        return once_share(seen + [row["id"] for row in again], rows)

    peer = attempt("datasets exactly-once", hf)
    metric = "exactly-once share, resumed at 10% (ours: 2 -> 1 workers)"
    if peer is None:
        return []
    return [Row("sources: parquet", metric, ours, peer, "datasets streaming", True, "1.0")]


def once_share(ids: list[int], rows: int) -> float:
    """The share of rows 0..rows-1 that `ids` holds exactly once."""
    counts: dict[int, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    return sum(1 for i in range(rows) if counts.get(i) == 1) / rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
