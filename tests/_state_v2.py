"""The objects whose version-2 states (written before nested states lost their "version") are
recorded in tests/data/*_v2.json; `python tests/_state_v2.py` recorded them with that release."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from checkpointable.iterators import (
    BufferedShuffleIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    MapIterator,
)
from checkpointable.samplers import ResumableRandomSampler
from checkpointable.stream import Stream

DATA = Path(__file__).parent / "data"
TAKEN = 5  # items taken before each state was recorded


def double(value: int) -> int:
    return 2 * value


def pipeline() -> Any:
    it: Any = InfinitePermutationSourceIterator(list(range(20)), seed=3)
    it = BufferedShuffleIterator(it, buffer_size=4, seed=5)
    it = MapIterator(it, double)
    return FixedBatchIterator(it, batch_size=3)


def sampler() -> ResumableRandomSampler:
    return ResumableRandomSampler(range(17), seed=7, batch_size=2)


def stream() -> Stream:
    return Stream(ResumableRandomSampler(range(11), seed=2))


def advanced(name: str) -> tuple[Any, Any]:
    """The object `name`, advanced by `TAKEN` items, and an iterator over its next items."""
    made: Any
    if name == "stream":
        made = stream()
        epochs = made.epochs(3, progress_bar=False)
        items = (item for epoch in epochs for item in epoch)
    else:
        made = pipeline() if name == "pipeline" else sampler()
        items = iter(made)
    for _ in range(TAKEN):
        next(items)
    return made, items


def record() -> None:
    random.seed(0)
    DATA.mkdir(exist_ok=True)
    for name in ("pipeline", "sampler", "stream"):
        made, _ = advanced(name)
        path = DATA / f"{name}_state_v2.json"
        path.write_text(json.dumps(made.state_dict()) + "\n")


if __name__ == "__main__":
    record()
