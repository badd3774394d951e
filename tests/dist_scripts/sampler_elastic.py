"""Run under torchrun: part of an epoch through a DataLoader, or the rest of it from a state.

    torchrun --standalone --nproc_per_node=2 sampler_elastic.py first DIR
    torchrun --standalone --nproc_per_node=3 sampler_elastic.py finish DIR three

Each rank writes ``DIR/<tag>_rank<r>.json`` with the indices it yielded and its sampler state;
``finish`` loads the state that rank 0 saved in the ``first`` run.
"""

from __future__ import annotations

import json
import sys
from itertools import islice
from pathlib import Path
from typing import cast

import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from checkpointable.samplers import ResumableDistributedSampler

DATASET_LENGTH = 23
BATCH_SIZE = 2
FIRST_BATCHES = 3
EPOCH = 2


def main(phase: str, directory: Path, tag: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = range(DATASET_LENGTH)
    # num_replicas and rank come from the process group
    sampler = ResumableDistributedSampler(dataset, seed=7, batch_size=BATCH_SIZE)
    assert (sampler.num_replicas, sampler.rank) == (world, rank)
    if phase == "finish":
        saved = json.loads((directory / "first_rank0.json").read_text())
        sampler.load_state_dict(saved["state"])
    sampler.set_epoch(EPOCH)
    # torch's DataLoader reads a map-style dataset by len() and [i]: a range will do
    loader = DataLoader(
        cast("Dataset[int]", dataset), batch_size=BATCH_SIZE, sampler=sampler, num_workers=0
    )
    batches = islice(loader, FIRST_BATCHES) if phase == "first" else loader
    indices = [i for batch in batches for i in batch.tolist()]
    out = {"world": world, "indices": indices, "state": sampler.state_dict()}
    (directory / f"{tag}_rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    phase, directory = sys.argv[1], Path(sys.argv[2])
    main(phase, directory, sys.argv[3] if len(sys.argv) > 3 else phase)
