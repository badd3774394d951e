"""The demo's data, generated from a seed: gzipped text chunks and a map-style dataset.

Everything here is module level so that it pickles into ``spawn`` worker processes.
"""

from __future__ import annotations

import gzip
import random
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..datasets import chunked_dataset_iterator, read_text_chunk
from ..iterators import CheckpointableIterator, MapIterator

FEATURES = 16
WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
]  # fmt: skip
_POSITIVE = {"alpha", "delta", "golf", "kilo", "oscar"}


def write_corpus(directory: Path, seed: int, chunks: int = 8, lines: int = 60) -> list[str]:
    """Write `chunks` gzipped text files of `lines` labelled sentences; return their paths.

    Each line is ``"<id>\\t<label>\\t<sentence>"``; the label says whether the sentence has more
    "positive" words than not, so the model has something to learn.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for chunk in range(chunks):
        rows = []
        for line in range(lines):
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
            label = int(2 * sum(word in _POSITIVE for word in words) > len(words) * 0.6)
            rows.append(f"{chunk * lines + line}\t{label}\t{' '.join(words)}")
        path = directory / f"chunk-{chunk:03d}.txt.gz"
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        paths.append(str(path))
    return paths


def parse_line(line: str) -> dict[str, Any]:
    """A text line as a sample: its id, hashed bag-of-words features and label."""
    sample_id, label, sentence = line.split("\t")
    features = torch.zeros(FEATURES)
    for word in sentence.split():
        features[zlib.crc32(word.encode()) % FEATURES] += 1.0
    return {"id": int(sample_id), "x": features / 4.0, "y": int(label)}


def make_text_shard(
    shard_index: int, num_shards: int, paths: Sequence[str], seed: int
) -> CheckpointableIterator:
    """One shard of the endless, shuffled text stream (a `chunked_dataset_iterator`)."""
    lines = chunked_dataset_iterator(
        list(paths),
        read_text_chunk,
        buffer_size=32,
        seed=seed,
        num_instances=num_shards,
        instance_rank=shard_index,
    )
    return MapIterator(lines, parse_line)


class FeatureDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """A map-style dataset of noisy feature vectors with a linearly separable label.

    The augmentation noise of sample ``i`` is drawn from a generator seeded by ``(seed, i)``, so
    it is the same whichever worker process loads the sample: a run resumed with another number
    of workers sees exactly the same data.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(index)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        x = torch.randn(FEATURES, generator=generator)
        label = int(x[:4].sum() > 0)
        noise = 0.1 * torch.randn(FEATURES, generator=generator)
        return {"id": 100_000 + index, "x": x + noise, "y": label}
