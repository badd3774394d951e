"""Stream's cost per batch against the hand-written loop it replaces.

The peer is the seed tutorial's first loop, ``for epoch in range(max_epoch): for batch in
loader: iteration += 1``, measured side by side: over a list (the stream's whole overhead per
item, a worst case) and over a torch DataLoader (what a training loop pays), with and without a
progress bar (tqdm writing to a string buffer in both). The last row is the price of a
checkpoint: the stream's state_dict() against the loader's own, the difference being the check
and copy of the loader's state as plain data (linear in its size, here a 625-int RNG state).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import Row, median_seconds, print_rows

from checkpointable import Stream
from checkpointable.iterators import InfinitePermutationSourceIterator

PEER = "hand-written loop"


def _hand_loop(loader: Any, max_epoch: int, bar: bool) -> int:
    iteration = 0
    progress = tqdm(total=max_epoch * len(loader), file=io.StringIO()) if bar else None
    for _ in range(max_epoch):
        for _batch in loader:
            iteration += 1
            if progress is not None:
                progress.update()
    if progress is not None:
        progress.close()
    return iteration


def _stream_loop(loader: Any, max_epoch: int, bar: bool, epoch_size: int | None = None) -> int:
    stream = Stream(loader)
    options = {"file": io.StringIO()} if bar else None
    for epoch in stream.epochs(max_epoch, epoch_size, options, progress_bar=bar):
        for _batch in epoch:
            pass
    return stream.iteration


def _rate(fn: Any, items: int, repeat: int) -> float:
    return items / median_seconds(fn, repeat=repeat)


def run(quick: bool = False) -> list[Row]:
    n = 20_000 if quick else 200_000
    repeat = 3 if quick else 5
    rows = []
    plain = list(range(n))
    for bar in (False, True):
        label = "with bar" if bar else "no bar"
        rows.append(
            Row(
                f"stream: epochs loop over a list ({label})",
                "items/s",
                _rate(lambda bar=bar: _stream_loop(plain, 2, bar), 2 * n, repeat),
                _rate(lambda bar=bar: _hand_loop(plain, 2, bar), 2 * n, repeat),
                PEER,
                True,
                "overhead only (worst case)",
            )
        )
    dataset = TensorDataset(torch.randn(n // 4, 16))
    loader = DataLoader(dataset, batch_size=8)
    batches = len(loader)
    rows.append(
        Row(
            "stream: epochs loop over a DataLoader (bs=8, with bar)",
            "batches/s",
            _rate(lambda: _stream_loop(loader, 2, True), 2 * batches, repeat),
            _rate(lambda: _hand_loop(loader, 2, True), 2 * batches, repeat),
            PEER,
            True,
            ">= 0.9x",
        )
    )
    source = InfinitePermutationSourceIterator(list(range(1000)), seed=0)
    stream = Stream(source)
    for _ in range(500):
        stream.next()
    rows.append(
        Row(
            "stream: state_dict() over an iterator (1000-item permutation)",
            "us",
            median_seconds(stream.state_dict, repeat=repeat, number=200) * 1e6,
            median_seconds(source.state_dict, repeat=repeat, number=200) * 1e6,
            "the loader's own state_dict()",
            False,
            "informative: + a plain-data copy of the loader's state",
        )
    )
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
