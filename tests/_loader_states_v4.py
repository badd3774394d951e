"""Loader states of format version 4, recorded from the release before version 5, whose nested
states of the package's own objects (a `ResumableRandomSampler`'s, a shard iterator's) each
carry a ``"version"``: the fixtures of ``tests/data/loader_states_v4.json``.

Recorded with ``python -m tests._loader_states_v4`` from commit 43afb10 (format v4), as
`tests._loader_states_v3` records (same fixture layout, same `make_loader`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests._loader_states_v3 import record

FIXTURES = Path(__file__).resolve().parent / "data" / "loader_states_v4.json"

#: name -> loader configuration (see `tests._loader_states_v3.CONFIGS`)
CONFIGS: dict[str, dict[str, Any]] = {
    "map_shuffle_w0_mid": {"dataset": "squares", "shuffle": True, "workers": 0, "taken": 2},
    "map_shuffle_w2_mid": {"dataset": "squares", "shuffle": True, "workers": 2, "taken": 3},
    "map_generator_w2_boundary": {
        "dataset": "squares",
        "shuffle": True,
        "workers": 2,
        "taken": 0,
        "generator": 7,
    },
    "map_noise_w2_mid": {"dataset": "noise", "shuffle": True, "workers": 2, "taken": 3},
    "map_resumable_w0_mid": {
        "dataset": "squares",
        "sampler": "resumable",
        "workers": 0,
        "taken": 2,
    },
    "map_resumable_w2_mid": {
        "dataset": "squares",
        "sampler": "resumable",
        "workers": 2,
        "taken": 3,
    },
    "map_resumable_w2_boundary": {
        "dataset": "squares",
        "sampler": "resumable",
        "workers": 2,
        "taken": 0,
    },
    "iterable_w2_mid": {"dataset": "partitioned", "workers": 2, "taken": 3},
    "sharded_w0_mid": {"dataset": "sharded", "workers": 0, "taken": 2},
    "sharded_w2_mid": {"dataset": "sharded", "workers": 2, "taken": 3},
    "sharded_w2_boundary": {"dataset": "sharded", "workers": 2, "taken": 0},
}


if __name__ == "__main__":
    FIXTURES.write_text(json.dumps(record(CONFIGS), indent=1, sort_keys=True) + "\n")
