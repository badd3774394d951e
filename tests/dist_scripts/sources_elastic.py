"""Run under torchrun: a train-like loop over a ShardedDataset, stopped and resumed elsewhere.

    torchrun --standalone --nproc_per_node=2 sources_elastic.py first DATA DIR
    torchrun --standalone --nproc_per_node=3 sources_elastic.py finish DATA DIR three [dcp]

Each step every rank all-reduces a stand-in gradient (so the ranks stay in lockstep, as DDP
keeps them). ``first`` stops after `FIRST_STEPS` steps; rank 0 saves the loader's state as JSON,
and every rank saves it with ``torch.distributed.checkpoint`` (``{"loader": loader}``: DCP
calls its ``state_dict``, and keeps one copy of each key). ``finish`` loads that state on every
rank (from the JSON, or with ``dcp`` from the DCP folder) and runs to the end of the epoch. Each rank writes
``DIR/<tag>_rank<r>.json`` with the row ids it trained on and its loader state.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from checkpointable import ShardedDataset, StatefulDataLoader

BATCH_SIZE = 3
FIRST_STEPS = 2


def main(phase: str, data: str, directory: Path, tag: str, source: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    # rank and world size come from the process group
    dataset = ShardedDataset(data, seed=11, window=2, block_rows=4)
    assert (dataset.sampler.rank, dataset.sampler.num_replicas) == (rank, world)
    loader = StatefulDataLoader(
        dataset, batch_size=BATCH_SIZE, sampler=dataset.sampler, collate_fn=list, num_workers=1
    )
    if phase == "finish" and source == "dcp":
        dcp.load({"loader": loader}, checkpoint_id=str(directory / "first_dcp"))
    elif phase == "finish":
        saved = json.loads((directory / "first_state.json").read_text())
        loader.load_state_dict(saved)
    rows: list[int] = []
    for step, batch in enumerate(loader):
        rows += [row["id"] for row in batch]
        gradient = torch.tensor([float(len(batch))])
        dist.all_reduce(gradient)  # the lockstep of a DDP step
        if phase == "first" and step + 1 == FIRST_STEPS:
            break
    state = loader.state_dict()
    if phase == "first" and rank == 0:
        (directory / "first_state.json").write_text(json.dumps(state))
    if phase == "first":
        dcp.save({"loader": loader}, checkpoint_id=str(directory / "first_dcp"))
    out = {"world": world, "rows": rows, "sampler": state["order"][2]}
    (directory / f"{tag}_rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    phase, data, directory = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    tag = sys.argv[4] if len(sys.argv) > 4 else phase
    main(phase, data, directory, tag, sys.argv[5] if len(sys.argv) > 5 else "json")
