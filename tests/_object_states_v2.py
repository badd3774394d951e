"""Iterator states of format version 2 (random generators as ``[version, [625 ints], gauss]``
lists), recorded with ``python -m tests._object_states_v2`` from commit e511600: the old-format
fixtures of ``tests/data/object_states_v2.json``. Each holds the state after `taken` items and
the next `rest` items of the uninterrupted run."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    BufferedShuffleIterator,
    CheckpointableIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
    RandomIterator,
    SamplingRandomMapIterator,
)

FIXTURES = Path(__file__).resolve().parent / "data" / "object_states_v2.json"


def _add_noise(random: Any, item: int) -> float:
    return float(item + random.random())


#: name -> a fresh pipeline
PIPELINES: dict[str, Callable[[], CheckpointableIterator]] = {
    "random": lambda: RandomIterator(seed=3),
    "buffered_shuffle": lambda: BufferedShuffleIterator(
        NativeCheckpointableIterator(list(range(50))), 8, seed=3
    ),
    "blockwise_shuffle": lambda: BlockwiseShuffleIterator(
        NativeCheckpointableIterator(list(range(50))), 8, seed=3
    ),
    "permutation": lambda: InfinitePermutationSourceIterator(list(range(7)), seed=3),
    "sampling_map": lambda: SamplingRandomMapIterator(
        NativeCheckpointableIterator(list(range(50))), _add_noise, seed=3
    ),
}


def record() -> dict[str, Any]:
    out = {}
    for name, make in PIPELINES.items():
        pipeline = make()
        for _ in range(11):
            next(pipeline)
        state = json.loads(json.dumps(pipeline.state_dict()))
        rest = [next(pipeline) for _ in range(12)]
        out[name] = {"state": state, "rest": rest}
    return out


if __name__ == "__main__":
    FIXTURES.write_text(json.dumps(record(), sort_keys=True) + "\n")
