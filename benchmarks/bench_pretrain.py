"""Pretraining data: packed sequences and token windows against plain loops and the peers.

The data: `TOKENS` random uint16 tokens in 4 ``.bin`` files, and the same tokens cut into
documents of 50..3000 tokens (a map-style dataset of memmap slices). Metrics, in one run:

- ``packed tokens/s``: `PackedSequences` (eos separator, ``seq_len=SEQ``, batches of 8,
  ``num_workers=0``) through `StatefulDataLoader`, against a plain Python loop that packs the
  same documents (``numpy.concatenate`` and cut), and grain's ``ConcatThenSplitIterDataset``.
- ``window tokens/s``: `TokenArrayDataset` shuffled through `StatefulDataLoader`, against a
  plain torch ``DataLoader`` over the same memmapped windows (shuffled), and litdata's
  ``TokensLoader`` after its conversion (not counted).
- ``restore ms at P%`` (P = 10, 90): time from a fresh loader to its first batch after loading
  a state saved at P% of the epoch (ours: load; the peer: the usual replay, skipping P% of the
  batches; grain: ``set_state``), the best of 3. Flat in P is the goal.
- ``state bytes``: the whole loader state (JSON) against grain's iterator state.

A peer that is not installed, or fails, is reported on stderr and left out of the table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import Row, print_rows
from torch.utils.data import DataLoader

from checkpointable import PackedSequences, StatefulDataLoader, TokenArrayDataset

SEQ = 2048
BATCH = 8
FLAT = "flat in P"


class Documents:
    """Documents as slices of one memmapped token file: ``{"tokens": array}``."""

    def __init__(self, path: str, bounds: np.ndarray[Any, Any]) -> None:
        self.path, self.bounds = path, bounds
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def __getitem__(self, index: int) -> dict[str, np.ndarray[Any, Any]]:
        return {"tokens": np.asarray(self.tokens[self.bounds[index] : self.bounds[index + 1]])}


class Windows(torch.utils.data.Dataset[torch.Tensor]):
    """The plain loop's dataset: fixed windows of a memmap."""

    def __init__(self, path: str) -> None:
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")

    def __len__(self) -> int:
        return len(self.tokens) // SEQ

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.tokens[index * SEQ : (index + 1) * SEQ].astype(np.int64))


def write(folder: Path, tokens: int) -> tuple[str, Documents]:
    rng = np.random.default_rng(0)
    data = rng.integers(1, 50_000, tokens, dtype=np.uint16)
    for number, part in enumerate(np.array_split(data, 4)):
        part.tofile(folder / f"tokens-{number}.bin")
    data.tofile(folder / "all.bin")
    lengths = rng.integers(50, 3000, tokens // 50)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    bounds = bounds[bounds <= tokens]
    return str(folder / "tokens-*.bin"), Documents(str(folder / "all.bin"), bounds)


def attempt(name: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as error:  # a peer that fails is reported and left out
        print(f"bench_pretrain: {name} skipped: {type(error).__name__}: {error}", file=sys.stderr)
        if os.environ.get("BENCH_DEBUG"):
            traceback.print_exc()
        return None


def tokens_per_second(batches: Iterator[Any]) -> float:
    start, count = time.perf_counter(), 0
    for batch in batches:
        count += batch.numel() if isinstance(batch, torch.Tensor) else batch["tokens"].size
    return count / (time.perf_counter() - start)


def packed_loader(docs: Documents) -> StatefulDataLoader:
    packed = PackedSequences(docs, SEQ, eos_id=0, num_shards=1, epochs=1)
    return StatefulDataLoader(packed, batch_size=BATCH)


def plain_packing(docs: Documents) -> Iterator[torch.Tensor]:
    buffer, rows = np.empty(0, dtype=np.int64), []
    for index in range(len(docs)):
        buffer = np.concatenate([buffer, docs[index]["tokens"].astype(np.int64), [0]])
        while len(buffer) >= SEQ:
            rows.append(torch.from_numpy(buffer[:SEQ].copy()))
            buffer = buffer[SEQ:]
            if len(rows) == BATCH:
                yield torch.stack(rows)
                rows = []
    if rows:
        yield torch.stack(rows)


def grain_packed(docs: Documents) -> Any:
    import grain  # type: ignore[import-not-found]  # a peer, in the bench set-up only

    source = grain.MapDataset.source(docs).map(
        lambda d: {"tokens": np.append(d["tokens"].astype(np.int64), 0)}
    )
    packed = grain.experimental.ConcatThenSplitIterDataset(
        source.to_iter_dataset(), length_struct={"tokens": SEQ}
    )
    return packed.batch(BATCH)


def window_loader(pattern: str) -> StatefulDataLoader:
    dataset = TokenArrayDataset(pattern, SEQ, "uint16", seed=1)
    return StatefulDataLoader(dataset, batch_size=BATCH, sampler=dataset.sampler)


def litdata_windows(folder: Path, pattern: str) -> Iterator[Any]:
    import litdata
    from litdata.streaming.item_loader import TokensLoader

    out = folder / "lit"
    files = sorted(str(p) for p in folder.glob("tokens-*.bin"))
    litdata.optimize(
        fn=_lit_tokens,
        inputs=files,
        output_dir=str(out),
        chunk_size=SEQ * 512,
        item_loader=TokensLoader(),
        num_workers=1,
    )
    dataset = litdata.StreamingDataset(
        str(out), item_loader=TokensLoader(block_size=SEQ), shuffle=True, seed=1
    )
    return iter(litdata.StreamingDataLoader(dataset, batch_size=BATCH))


def _lit_tokens(path: str) -> Iterator[torch.Tensor]:
    yield torch.from_numpy(np.fromfile(path, dtype=np.uint16).astype(np.int32))


def best(make: Callable[[], Iterator[Any]], rounds: int = 2) -> float:
    """The best of `rounds` passes (the first one warms up torch, the page cache, the orders)."""
    return max(tokens_per_second(make()) for _ in range(rounds))


def throughput_rows(pattern: str, docs: Documents, folder: Path) -> list[Row]:
    out: list[Row] = []
    ours = best(lambda: iter(packed_loader(docs)))
    plain = best(lambda: plain_packing(docs))
    out.append(Row("pretrain: packed", "tokens/s", ours, plain, "plain packing loop", True, "~1x"))
    peer = attempt("grain", lambda: best(lambda: iter(grain_packed(docs))))
    if peer:
        out.append(Row("pretrain: packed", "tokens/s", ours, peer, "grain", True, ">= 1.0x"))
    ours = best(lambda: iter(window_loader(pattern)))
    plain_loader = DataLoader(Windows(docs.path), batch_size=BATCH, shuffle=True)
    plain = best(lambda: iter(plain_loader))
    out.append(Row("pretrain: windows", "tokens/s", ours, plain, "torch DataLoader", True, "~1x"))
    peer = attempt("litdata", lambda: tokens_per_second(litdata_windows(folder, pattern)))
    if peer:
        label = "tokens/s (peer after conversion)"
        out.append(Row("pretrain: windows", label, ours, peer, "litdata TokensLoader", True, ""))
    return out


def first_batch_ms(build: Callable[[], Any], state: Any) -> float:
    start = time.perf_counter()
    loader = build()
    loader.load_state_dict(state)
    next(iter(loader))
    return (time.perf_counter() - start) * 1000


def replay_ms(build: Callable[[], Any], batches: int) -> float:
    start = time.perf_counter()
    iterator = iter(build())
    for _ in range(batches + 1):
        next(iterator)
    return (time.perf_counter() - start) * 1000


def restore_rows(pattern: str, docs: Documents) -> list[Row]:
    out: list[Row] = []
    cases = (
        ("windows", lambda: window_loader(pattern)),
        ("packed", lambda: packed_loader(docs)),
    )
    packed_batches = (int(docs.bounds[-1]) + len(docs)) // (SEQ * BATCH) - 1
    for name, build in cases:
        total = len(build()) if name == "windows" else packed_batches
        for percent in (10, 90):
            k = total * percent // 100
            loader = build()
            iterator = iter(loader)
            for _ in range(k):
                next(iterator)
            state = json.loads(json.dumps(loader.state_dict()))
            ours = min(first_batch_ms(build, state) for _ in range(3))  # the first: warm-up
            peer = min(replay_ms(build, k) for _ in range(3))
            metric = f"restore ms at {percent}%"
            out.append(Row(f"pretrain: {name}", metric, ours, peer, "replay (skip N)", False, FLAT))
            if name == "packed":
                grain_ms = attempt("grain restore", partial(grain_restore_ms, docs, k))
                if grain_ms:
                    out.append(
                        Row("pretrain: packed", metric, ours, grain_ms, "grain", False, FLAT)
                    )
        size = len(json.dumps(state))
        if name == "packed":
            grain_size = attempt("grain state", lambda: grain_state_bytes(docs))
            if grain_size:
                out.append(
                    Row("pretrain: packed", "state bytes", size, grain_size, "grain", False, "")
                )
        else:
            out.append(
                Row("pretrain: windows", "state bytes", size, 1024, "(1 KB goal)", False, "< 1 KB")
            )
    return out


def grain_restore_ms(docs: Documents, batches: int) -> float:
    iterator = iter(grain_packed(docs))
    for _ in range(batches):
        next(iterator)
    state = iterator.get_state()
    start = time.perf_counter()
    fresh = iter(grain_packed(docs))
    fresh.set_state(state)
    next(fresh)
    return (time.perf_counter() - start) * 1000


def grain_state_bytes(docs: Documents) -> int:
    iterator = iter(grain_packed(docs))
    next(iterator)
    return len(json.dumps(iterator.get_state(), default=str))


def run(quick: bool = False) -> list[Row]:
    tokens = 2_000_000 if quick else 8_000_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pattern, docs = write(folder, tokens)
        out = throughput_rows(pattern, docs, folder)
        out += restore_rows(pattern, docs)
    return out


if __name__ == "__main__":
    print(f"load: {os.getloadavg()}", file=sys.stderr)
    print_rows(run(quick="--quick" in sys.argv))
