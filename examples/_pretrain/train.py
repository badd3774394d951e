"""One rank of the training run, as started by torchrun (``pretrain_gpt.py --train``).

Data: `Mixture` of the two corpora's `TokenArrayDataset` windows, by weight, dealt over the
ranks by ``mixture.sampler`` through a `StatefulDataLoader`. Every item carries its draw number
in the mixture (the rank-independent sample id): rank ``r`` of ``R`` reads draws
``progress + r + j * R``, so one step of ``R`` ranks consumes a contiguous block of draws.

Checkpoints: ``torch.distributed.checkpoint`` of the model, the optimizer and the loader (a
``Stateful``) every `save_every` steps into ``<run>/checkpoints/step-NNNNNN``; a folder counts
only once DCP has written its ``.metadata`` (last), so a rank killed during a save leaves an
incomplete folder that is ignored. At start, a rank loads the latest complete checkpoint.

Log: each rank appends one JSON line per step to ``<run>/log-rank<r>.jsonl``: the restart
count (torchrun's ``TORCHELASTIC_RESTART_COUNT``), the step, the world size, the draws it
trained on, their corpora, and the loss averaged over the ranks.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel

from checkpointable import Mixture, StatefulDataLoader, TokenArrayDataset

from .corpus import CORPORA, write_corpus
from .model import GPT, GPTConfig

WEIGHTS = {"modules": 0.7, "packages": 0.3}
PERIOD = 10  # the mixture's round: every 10 draws hold exactly 7 "modules" and 3 "packages"


class Tagged(torch.utils.data.Dataset[dict[str, Any]]):
    """The mixture's item ``i`` with its draw number and its corpus: the sample's id."""

    def __init__(self, mixture: Mixture) -> None:
        self.mixture = mixture

    def __len__(self) -> int:
        return len(self.mixture)

    def __getitem__(self, index: int) -> dict[str, Any]:
        source, row = self.mixture.locate(index)  # what mixture[index] reads
        tokens = self.mixture.datasets[self.mixture.names[source]][row]
        return {"draw": index, "source": source, "tokens": tokens}


def build_data(data: Path, context: int, batch: int, workers: int) -> StatefulDataLoader:
    sources = {
        name: TokenArrayDataset(str(data / name / "tokens.npy"), seq_len=context + 1, seed=1)
        for name in CORPORA
    }
    mixture = Mixture(sources, weights=WEIGHTS, seed=0, period=PERIOD)
    return StatefulDataLoader(
        Tagged(mixture), batch_size=batch, sampler=mixture.sampler, num_workers=workers
    )


def latest_checkpoint(folder: Path) -> tuple[int, Path] | None:
    """(step, folder) of the latest complete checkpoint, or None."""
    done = sorted(path.parent for path in folder.glob("step-*/.metadata"))
    return (int(done[-1].name.split("-")[1]), done[-1]) if done else None


def train(args: Any) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    run = Path(args.out) / args.phase
    config = GPTConfig(context=args.context)
    torch.manual_seed(0)
    model = GPT(config)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = Path(args.out) / "data"
    if rank == 0:  # the driver wrote them already, unless this rank was started by hand
        for corpus in CORPORA:
            write_corpus(data, corpus, args.corpus_bytes)
    dist.barrier()
    loader = build_data(data, config.context, args.batch, args.workers)

    start = 0
    latest = latest_checkpoint(run / "checkpoints")
    if latest is not None:
        start, folder = latest
        # get_state_dict gives the optimizer's state its full shape (a fresh AdamW has none
        # yet, so optimizer.state_dict() would leave its moments out of the load)
        weights, moments = get_state_dict(ddp, optimizer)
        state = {"model": weights, "optim": moments, "loader": loader}
        dcp.load(state, checkpoint_id=folder)  # in place: the tensors and the Stateful loader
        set_state_dict(ddp, optimizer, model_state_dict=weights, optim_state_dict=moments)
        if rank == 0:
            print(f"[{args.phase}] {world} ranks resume from step {start} ({folder.name})")

    run.mkdir(parents=True, exist_ok=True)
    log = (run / f"log-rank{rank}.jsonl").open("a")
    batches = iter(loader)
    for step in range(start + 1, args.steps + 1):
        batch = next(batches)
        if step == args.kill_at and rank == args.kill_rank:
            kill_once(run / "killed.marker", step)
        tokens = batch["tokens"]
        loss = ddp(tokens[:, :-1], tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        record = {
            "restart": restart,
            "step": step,
            "world": world,
            "draws": batch["draw"].tolist(),
            "sources": batch["source"].tolist(),
            "loss": mean.item() / world,
        }
        log.write(json.dumps(record) + "\n")
        log.flush()
        if step % args.save_every == 0 or step == args.steps:
            weights, moments = get_state_dict(ddp, optimizer)
            state = {"model": weights, "optim": moments, "loader": loader}
            dcp.save(state, checkpoint_id=run / "checkpoints" / f"step-{step:06d}")
    log.close()
    if rank == 0:
        torch.save(model.state_dict(), run / f"weights-{world}ranks.pt")
        print(f"[{args.phase}] {world} ranks reached step {args.steps}")
    loader.close()
    dist.barrier()
    dist.destroy_process_group()


def kill_once(marker: Path, step: int) -> None:
    """SIGKILL this process unless the marker says it was done; the marker is written first."""
    if marker.exists():
        return
    with marker.open("w") as file:
        file.write(f"rank {dist.get_rank()} killed itself at step {step}\n")
        file.flush()
        os.fsync(file.fileno())
    print(f"rank {dist.get_rank()}: SIGKILL at step {step}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
