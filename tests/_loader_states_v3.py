"""Loader states of format version 3, recorded from the release before version 4, and how to
make each loader again: the old-format fixtures of ``tests/data/loader_states_v3.json``.

Recorded with ``python -m tests._loader_states_v3`` from commit e511600 (format v3); each
fixture holds the configuration, the state written after `taken` batches (`epochs_done` whole
epochs first), and the batches that the uninterrupted run delivered after that point up to the
end of the epoch (or the whole next epoch at an epoch boundary).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from checkpointable.dataloader import StatefulDataLoader
from checkpointable.samplers import ResumableRandomSampler
from tests._loader_data import CountingNoise, Squares, StatefulPartitioned, sharded

FIXTURES = Path(__file__).resolve().parent / "data" / "loader_states_v3.json"

#: name -> (dataset, loader arguments, whole epochs before, batches taken in the next)
CONFIGS: dict[str, dict[str, Any]] = {
    "map_shuffle_w0_mid": {"dataset": "squares", "shuffle": True, "workers": 0, "taken": 2},
    "map_shuffle_w2_mid": {"dataset": "squares", "shuffle": True, "workers": 2, "taken": 3},
    "map_shuffle_w0_boundary": {"dataset": "squares", "shuffle": True, "workers": 0, "taken": 0},
    "map_plain_w0_mid": {"dataset": "squares", "shuffle": False, "workers": 0, "taken": 2},
    "map_plain_w2_boundary": {"dataset": "squares", "shuffle": False, "workers": 2, "taken": 0},
    "map_generator_w0_mid": {
        "dataset": "squares",
        "shuffle": True,
        "workers": 0,
        "taken": 3,
        "generator": 7,
    },
    "map_generator_w2_boundary": {
        "dataset": "squares",
        "shuffle": True,
        "workers": 2,
        "taken": 0,
        "generator": 7,
    },
    "map_noise_w2_mid": {"dataset": "noise", "shuffle": True, "workers": 2, "taken": 3},
    "iterable_w0_mid": {"dataset": "partitioned", "workers": 0, "taken": 2},
    "iterable_w2_mid": {"dataset": "partitioned", "workers": 2, "taken": 3},
    "iterable_w2_boundary": {"dataset": "partitioned", "workers": 2, "taken": 0},
    "sharded_w2_mid": {"dataset": "sharded", "workers": 2, "taken": 3},
}


def make_loader(config: dict[str, Any]) -> StatefulDataLoader:
    """A loader of fixture configuration `config`."""
    kind = config["dataset"]
    dataset: Any
    if kind == "squares":
        dataset = Squares(20)
    elif kind == "noise":
        dataset = CountingNoise(20)
    elif kind == "partitioned":
        dataset = StatefulPartitioned(20)
    else:
        dataset = sharded(20, 4)
    kwargs: dict[str, Any] = {"batch_size": 3, "num_workers": config["workers"]}
    if "shuffle" in config:
        kwargs["shuffle"] = config["shuffle"]
    if "generator" in config:
        kwargs["generator"] = torch.Generator().manual_seed(config["generator"])
    if config.get("sampler") == "resumable":  # the package's stateful sampler (format 4 on)
        kwargs["sampler"] = ResumableRandomSampler(dataset, seed=5, batch_size=3)
    return StatefulDataLoader(dataset, **kwargs)


def plain(batch: Any) -> Any:
    """A batch as JSON data."""
    if isinstance(batch, torch.Tensor):
        return batch.tolist()
    if isinstance(batch, list | tuple):
        return [plain(item) for item in batch]
    if isinstance(batch, dict):
        return {str(key): plain(value) for key, value in batch.items()}
    return batch


def rest_after_state(config: dict[str, Any], state: dict[str, Any]) -> list[Any]:
    """The batches a fresh loader delivers after loading `state`, to the end of one epoch."""
    loader = make_loader(config)
    loader.load_state_dict(state)
    try:
        return [plain(batch) for batch in loader]
    finally:
        loader.close()


def record(configs: dict[str, dict[str, Any]] = CONFIGS) -> dict[str, Any]:
    """Run each configuration, take its state and the batches that follow it."""
    out = {}
    for name, config in configs.items():
        torch.manual_seed(1234)
        loader = make_loader(config)
        batches = iter(loader)
        if config["taken"] == 0:  # an epoch boundary: one whole epoch read
            list(batches)
            state = loader.state_dict()
            rest = [plain(batch) for batch in loader]
        else:
            for _ in range(config["taken"]):
                next(batches)
            state = loader.state_dict()
            rest = [plain(batch) for batch in batches]
        loader.close()
        state = json.loads(json.dumps(state))
        assert rest_after_state(config, state) == rest, name
        out[name] = {"config": config, "state": state, "rest": rest}
    return out


if __name__ == "__main__":
    FIXTURES.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
