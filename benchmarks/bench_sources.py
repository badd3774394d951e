"""Shard sources: ShardedDataset against the peers on the same files, in one run.

The files: `FILES` Parquet files, the same rows as JSONL, and the same rows as WebDataset tar
shards (``{"id", "text"}`` rows, ~120 bytes each). Metrics:

- ``rows/s shuffled, W workers`` (W = 0, 2): one shuffled epoch through a loader with
  ``batch_size=256``. Peers: Hugging Face ``datasets`` streaming (``load_dataset(...,
  streaming=True).shuffle(buffer_size=10_000)``) on the same Parquet and JSONL files;
  ``webdataset`` (shard shuffle + a 10,000-sample buffer) on the same tars; mosaic ``streaming``
  and ``litdata`` after converting the rows to their formats, the conversion counted in their
  time (they cannot read the files as they are).
- ``restore-fresh ms at P%`` (P = 10, 90): time to the first batch after loading a state saved
  at P% of the epoch, minus the time to the first batch of a fresh start (goal: < 50 ms and
  flat). Peers: ``datasets`` streaming's own ``load_state_dict`` (its shard position; its
  shuffle buffer is not restored), webdataset's only way, skipping P% of the rows.
- ``state bytes``: ours (the whole loader state, JSON) against ``datasets``' state.
- ``exactly-once, 2 -> 1 workers``: 1.0 when a resume with another worker count delivers the
  rest of the epoch with no row lost or repeated (checked here for ours; recorded as a ratio of
  1 when it holds).

A peer that is not installed, or fails, is reported on stderr and left out of the table.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from functools import partial
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


def ours_loader(files: list[str], workers: int, **kwargs: Any) -> StatefulDataLoader:
    dataset = ShardedDataset(files, seed=SEED, window=4, block_rows=2048, **kwargs)
    return StatefulDataLoader(
        dataset, batch_size=BATCH, sampler=dataset.sampler, collate_fn=list, num_workers=workers
    )


def first_batch_seconds(make: Callable[[], Any]) -> float:
    start = time.perf_counter()
    next(iter(make()))
    return time.perf_counter() - start


def ours_restore(files: list[str], rows: int, fraction: float) -> tuple[float, int]:
    loader = ours_loader(files, 0)
    iterator = iter(loader)
    for _ in range(int(rows * fraction) // BATCH):
        next(iterator)
    state = json.loads(json.dumps(loader.state_dict()))

    def resumed() -> StatefulDataLoader:
        again = ours_loader(files, 0)
        again.load_state_dict(state)
        return again

    return first_batch_seconds(resumed), len(json.dumps(state))


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

    def resumed() -> Any:
        again = hf_stream(kind, files)
        again.load_state_dict(state)
        return again

    return first_batch_seconds(resumed), len(json.dumps(state, default=str))


def wds_pipeline(files: list[str]) -> Any:
    import webdataset as wds

    return wds.WebDataset(files, shardshuffle=len(files), seed=SEED, empty_check=False).shuffle(
        10_000
    )


def wds_restore(files: list[str], rows: int, fraction: float) -> float:
    def resumed() -> Any:  # no resume: skip the rows already seen
        iterator = iter(wds_pipeline(files))
        for _ in range(int(rows * fraction)):
            next(iterator)
        return iterator

    return first_batch_seconds(resumed)


def mosaic_epoch(files: list[str], workers: int, folder: Path, rows: int) -> float:
    import pyarrow.parquet as pq
    from streaming import MDSWriter, StreamingDataset

    start = time.perf_counter()
    out = folder / f"mds{workers}"
    with MDSWriter(out=str(out), columns={"id": "int", "text": "str"}) as writer:
        for path in files:
            for row in pq.read_table(path).to_pylist():
                writer.write(row)
    dataset = StreamingDataset(local=str(out), shuffle=True, shuffle_seed=SEED, batch_size=BATCH)
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=list)
    seen = sum(len(batch) for batch in loader)
    return seen / (time.perf_counter() - start)


def _litdata_rows(path: str) -> Iterable[dict]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()


def litdata_epoch(files: list[str], workers: int, folder: Path, rows: int) -> float:
    import litdata

    start = time.perf_counter()
    out = folder / f"lit{workers}"
    litdata.optimize(
        fn=_litdata_rows, inputs=files, output_dir=str(out), chunk_bytes="16MB", num_workers=1
    )
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
def throughput_rows(
    files: dict[str, list[str]], rows: int, workers: int, folder: Path
) -> list[Row]:
    out: list[Row] = []
    metric = f"rows/s shuffled, {workers} workers"

    def hf(kind: str) -> float:
        stream = hf_stream(kind, files[kind])
        loader = DataLoader(stream, batch_size=BATCH, num_workers=workers, collate_fn=list)
        return rows_per_second(lambda: loader, rows)

    def wds() -> float:
        pipeline = wds_pipeline(files["tar"])
        loader = DataLoader(pipeline, batch_size=BATCH, num_workers=workers, collate_fn=list)
        return rows_per_second(lambda: loader, rows)

    for kind in ("parquet", "jsonl"):
        ours = rows_per_second(partial(ours_loader, files[kind], workers), rows)
        peer = attempt(f"datasets streaming ({kind})", partial(hf, kind))
        if peer:
            out.append(
                Row(f"sources: {kind}", metric, ours, peer, "datasets streaming", True, GOAL)
            )
    ours = rows_per_second(lambda: ours_loader(files["tar"], workers), rows)
    peer = attempt("webdataset", wds)
    if peer:
        out.append(Row("sources: tar", metric, ours, peer, "webdataset", True, GOAL))
    ours = rows_per_second(lambda: ours_loader(files["parquet"], workers), rows)
    for name, epoch in (("mosaic streaming", mosaic_epoch), ("litdata", litdata_epoch)):
        peer = attempt(name, partial(epoch, files["parquet"], workers, folder, rows))
        if peer:
            label = f"{metric} (peer incl. conversion)"
            out.append(Row("sources: parquet", label, ours, peer, name, True, GOAL))
    return out


def restore_rows(files: dict[str, list[str]], rows: int) -> list[Row]:
    out: list[Row] = []
    parquet, tars = files["parquet"], files["tar"]
    fresh = first_batch_seconds(lambda: ours_loader(parquet, 0))
    hf_fresh = attempt(
        "datasets fresh", lambda: first_batch_seconds(lambda: hf_stream("parquet", parquet))
    )
    wds_fresh = attempt("webdataset fresh", lambda: first_batch_seconds(lambda: wds_pipeline(tars)))
    for percent in (10, 90):
        restore, state_bytes = ours_restore(parquet, rows, percent / 100)
        extra = max(restore - fresh, 1e-4) * 1000
        metric = f"restore-fresh ms at {percent}%"
        hf = attempt(
            "datasets restore", partial(hf_restore, "parquet", parquet, rows, percent / 100)
        )
        if hf and hf_fresh:
            peer_ms = max(hf[0] - hf_fresh, 1e-4) * 1000
            name = "datasets streaming"
            out.append(Row("sources: parquet", metric, extra, peer_ms, name, False, FLAT))
            if percent == 90:
                out.append(
                    Row(
                        "sources: parquet", "state bytes", state_bytes, hf[1], name, False, "< 1 KB"
                    )
                )
        wds = attempt("webdataset restore", partial(wds_restore, tars, rows, percent / 100))
        if wds and wds_fresh:
            peer_ms = max(wds - wds_fresh, 1e-4) * 1000
            out.append(
                Row("sources: tar", metric, extra, peer_ms, "webdataset (skip)", False, FLAT)
            )
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
        out.append(exactly_once_row(files["parquet"], rows))
    return out


def exactly_once_row(files: list[str], rows: int) -> Row:
    loader = ours_loader(files, 2)
    iterator = iter(loader)
    head = [row["id"] for _ in range(5) for row in next(iterator)]
    state = loader.state_dict()
    del iterator
    resumed = ours_loader(files, 1)
    resumed.load_state_dict(state)
    tail = [row["id"] for batch in resumed for row in batch]
    ok = sorted(head + tail) == list(range(rows))
    return Row(
        "sources: parquet", "exactly-once, 2 -> 1 workers", float(ok), 1.0, "(must be 1)", True, "1"
    )


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
