"""Run under torchrun: a Mixture and a packed Mixture, stopped and resumed on another world.

    torchrun --standalone --nproc_per_node=2 pretrain_elastic.py first DIR
    torchrun --standalone --nproc_per_node=3 pretrain_elastic.py finish DIR three

Rank and world size come from the process group. ``first`` takes `FIRST_STEPS` batches of the
mixture's loader and of the packed loader, saves both states (the packed one per rank), and
also runs the packed loader of its rank to the end uninterrupted. ``finish`` loads the mixture
state and runs the rest of its epoch; it loads this rank's packed state (rank 0's when there is
none) and runs the rest, or records why it was refused. Each rank writes
``DIR/<tag>_rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from checkpointable import IncompatibleStateError, Mixture, PackedSequences, StatefulDataLoader

FIRST_STEPS = 2


def mixture() -> Mixture:
    web = [{"id": f"web{i}", "tokens": list(range(i % 7 + 1))} for i in range(20)]
    code = [{"id": f"code{i}", "tokens": [9] * (i % 4 + 2)} for i in range(9)]
    return Mixture({"web": web, "code": code}, weights={"web": 2, "code": 1}, exhausted="stop")


def loaders() -> tuple[StatefulDataLoader, StatefulDataLoader]:
    mix = mixture()
    plain = StatefulDataLoader(mix, batch_size=2, sampler=mix.sampler, collate_fn=list)
    packed = PackedSequences(mixture(), 4, eos_id=0, num_shards=2, epochs=1)
    return plain, StatefulDataLoader(packed, batch_size=2, num_workers=1)


def main(phase: str, directory: Path, tag: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    plain, packed = loaders()
    out: dict[str, object] = {"world": world}
    if phase == "first":
        it = iter(plain)
        out["ids"] = [d["id"] for _ in range(FIRST_STEPS) for d in next(it)]
        if rank == 0:
            (directory / "mixture_state.json").write_text(json.dumps(plain.state_dict()))
        batches = iter(packed)
        out["packed"] = [next(batches).tolist() for _ in range(FIRST_STEPS)]
        (directory / f"packed_state_rank{rank}.json").write_text(json.dumps(packed.state_dict()))
        del batches
        out["packed_full"] = [b.tolist() for b in loaders()[1]]
    else:
        plain.load_state_dict(json.loads((directory / "mixture_state.json").read_text()))
        out["ids"] = [d["id"] for batch in plain for d in batch]
        path = directory / f"packed_state_rank{rank}.json"
        if not path.exists():
            path = directory / "packed_state_rank0.json"
        try:
            packed.load_state_dict(json.loads(path.read_text()))
            out["packed"] = [b.tolist() for b in packed]
        except IncompatibleStateError as error:
            out["refused"] = str(error)
    (directory / f"{tag}_rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    phase, directory = sys.argv[1], Path(sys.argv[2])
    main(phase, directory, sys.argv[3] if len(sys.argv) > 3 else phase)
