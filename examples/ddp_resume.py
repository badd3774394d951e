"""DDP training that stops, checkpoints with torch.distributed.checkpoint, and resumes on another
number of ranks, continuing the epoch exactly once over all ranks.

Run it on 2 ranks and stop after 5 steps, then resume on 3 ranks (or 1)::

    torchrun --standalone --nproc_per_node=2 examples/ddp_resume.py --out /tmp/ddp --stop-after 5
    torchrun --standalone --nproc_per_node=3 examples/ddp_resume.py --out /tmp/ddp --resume

Each rank reads its share of a map-style dataset through a `ResumableDistributedSampler` and a
`StatefulDataLoader` (with a worker process), driven by a `Stream`. The checkpoint holds the
model, the optimizer and the stream (whose state includes the loader's and the sampler's): our
objects are ``Stateful``, so ``torch.distributed.checkpoint`` saves and loads them directly. The
sampler records global progress through the epoch, so the state is the same on every rank and
a resume on M ranks deals the rest of the epoch over the M ranks. Each rank writes the sample ids
it trained on to ``<out>/ids-<phase>-rank<r>.json``; at the end of a run that finishes, rank 0
reads them all (both runs, every rank) and prints its verdict: every sample of every epoch used
exactly once, apart from the few repeats of torch's padding (equal shares for every rank). The
exit status is 1 if not.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

from checkpointable import ResumableDistributedSampler, StatefulDataLoader, Stream

SAMPLES, FEATURES, BATCH = 60, 8, 4


class Points(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Samples of a linear problem; sample i is a pure function of i."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = torch.randn(FEATURES, generator=torch.Generator().manual_seed(index))
        return {"id": torch.tensor(index), "x": x, "y": (x.sum() > 0).long()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint and log directory")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--stop-after", type=int, default=None, help="stop (as if killed) here")
    parser.add_argument("--resume", action="store_true", help="resume from <out>/checkpoint")
    parser.add_argument("--workers", type=int, default=1, help="loader worker processes")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(FEATURES, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sampler = ResumableDistributedSampler(Points(), shuffle=True, seed=7, batch_size=BATCH)
    loader = StatefulDataLoader(
        Points(), batch_size=BATCH, sampler=sampler, num_workers=args.workers
    )
    stream = Stream(loader)
    out = Path(args.out)
    checkpoint = {"model": model, "optimizer": optimizer, "stream": stream}
    if args.resume:
        # get_state_dict gives the optimizer's state its full shape: a fresh optimizer's own
        # state_dict() is empty (no momentum yet), so DCP would load nothing into it.
        weights, moments = get_state_dict(model, optimizer)
        state: dict[str, Any] = {"model": weights, "optimizer": moments, "stream": stream}
        dcp.load(state, checkpoint_id=out / "checkpoint")  # loads the Stateful stream in place
        set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=moments)

    used: list[list[int]] = []
    for epoch in stream.epochs(args.epochs, progress_bar=False):
        sampler.set_epoch(stream.epoch - 1)  # the same epoch after a resume keeps the position
        for batch in epoch:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
            used.append([stream.epoch - 1, *batch["id"].tolist()])
            if stream.iteration == args.stop_after:
                save(checkpoint, out / "checkpoint")
                break
        if stream.iteration == args.stop_after:
            break
    phase = "resumed" if args.resume else "first"
    (out / f"ids-{phase}-rank{rank}.json").write_text(json.dumps({"world": world, "batches": used}))
    loader.close()
    dist.barrier()  # every rank's ids are written
    stopped = args.stop_after is not None and not args.resume
    exact = True
    if rank == 0:
        if stopped:
            print(f"stopped after step {args.stop_after} on {world} ranks; resume with --resume")
        else:
            exact = check_exactly_once(out, args.epochs)
    dist.destroy_process_group()
    if not exact:
        raise SystemExit(1)


def check_exactly_once(out: Path, epochs: int) -> bool:
    """Print whether every sample of every epoch was used once over all ranks and runs."""
    counts = {epoch: Counter[int]() for epoch in range(epochs)}
    worlds = []
    for path in sorted(out.glob("ids-*-rank*.json")):
        record = json.loads(path.read_text())
        worlds.append(record["world"])
        for epoch, *ids in record["batches"]:
            counts[epoch].update(ids)
    padding_allowed = max(worlds) - 1  # torch pads each rank's share to the same length
    exact = True
    for epoch, used in counts.items():
        missing = sorted(set(range(SAMPLES)) - set(used))
        repeats = sum(used.values()) - len(used)
        wrong = sorted(set(used) - set(range(SAMPLES)))
        ok = not missing and not wrong and repeats <= padding_allowed
        exact = exact and ok
        print(
            f"epoch {epoch}: {len(used)} of {SAMPLES} samples used, {len(missing)} missing, "
            f"{repeats} repeated (torch's padding: at most {padding_allowed}): "
            f"{'exactly once' if ok else 'NOT exactly once'}"
            + (f"; missing {missing[:10]}" if missing else "")
        )
    runs = " then ".join(f"{w} ranks" for w in sorted(set(worlds), key=worlds.index))
    print(f"verdict: {'exactly once' if exact else 'NOT exactly once'} over {runs}")
    return exact


def save(parts: dict[str, object], path: Path) -> None:
    """Save with torch.distributed.checkpoint; every rank writes its part."""
    model, optimizer = parts["model"], parts["optimizer"]
    assert isinstance(model, torch.nn.Module) and isinstance(optimizer, torch.optim.Optimizer)
    weights, moments = get_state_dict(model, optimizer)
    state = {"model": weights, "optimizer": moments, "stream": parts["stream"]}
    dcp.save(state, checkpoint_id=path)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
