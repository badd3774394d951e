"""The demo's training run, started as a child process by ``checkpointable demo``.

``python -m checkpointable._demo.train --run-dir DIR --data-dir DIR ... [--resume]``

Trains a small MLP on two data sources at once: a map-style dataset through a
`StatefulDataLoader` with worker processes, driven by a `Stream` (epochs of a custom size, one
progress bar), and an endless shuffled text stream read through `chunked_dataset_iterator`
shards, also through a `StatefulDataLoader`. Every few steps it writes a checkpoint atomically
(temporary file, fsync, rename: a crash during the save never leaves a corrupt latest
checkpoint). Each step is reported on stdout as one JSON line, which the parent reads. With
``--pause-at N`` it blocks after step N (its checkpoint written) until the parent kills it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..dataloader import ShardedIterableDataset, StatefulDataLoader
from ..stream import Stream
from .data import FEATURES, FeatureDataset, make_text_shard

CHECKPOINT = "latest.pt"
FINAL = "final.pt"


def build(args: argparse.Namespace) -> dict[str, Any]:
    """The model, optimizer, loaders and stream of a run, identical in every process."""
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    features = StatefulDataLoader(
        FeatureDataset(size=400, seed=args.seed),
        batch_size=16,
        shuffle=True,
        num_workers=args.workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    paths = sorted(str(p) for p in Path(args.data_dir).glob("chunk-*.txt.gz"))
    shards = functools.partial(make_text_shard, paths=paths, seed=args.seed)
    text = StatefulDataLoader(
        ShardedIterableDataset(shards, num_shards=4), batch_size=16, num_workers=args.workers
    )
    return {"model": model, "optimizer": optimizer, "stream": Stream(features), "text": text}


def save_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` so that `path` always holds a complete checkpoint."""
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def train(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = build(args)
    model, optimizer, stream, text = parts.values()
    if args.resume:
        checkpoint = torch.load(run_dir / CHECKPOINT, weights_only=True)
        for name, part in parts.items():
            part.load_state_dict(checkpoint[name])
        emit({"resumed_from": checkpoint["step"]})
    text_batches = iter(text)
    if args.break_resume and args.resume:
        next(text_batches)  # test hook: lose one batch, which the comparison must catch
    max_epoch = -(-args.steps // args.epoch_size)
    loss_fn = torch.nn.CrossEntropyLoss()
    bar = {"desc": args.label, "leave": False}
    shown = None if args.progress else False  # None: on a terminal only
    for epoch in stream.epochs(max_epoch, args.epoch_size, bar, progress_bar=shown):
        for batch in epoch:
            step = stream.iteration
            other = next(text_batches)
            optimizer.zero_grad()
            loss = loss_fn(model(batch["x"]), batch["y"]) + loss_fn(model(other["x"]), other["y"])
            loss.backward()
            optimizer.step()
            emit(
                {
                    "step": step,
                    "map_ids": batch["id"].tolist(),
                    "text_ids": other["id"].tolist(),
                    "loss": loss.item(),
                    "time": time.time(),
                }
            )
            if step % args.checkpoint_every == 0:
                states = {name: part.state_dict() for name, part in parts.items()}
                save_atomically(run_dir / CHECKPOINT, {"step": step, **states})
                emit({"checkpoint": step})
            if step == args.pause_at:  # wait for the parent's SIGKILL (EOF: it is gone)
                emit({"paused": step})
                sys.stdin.read()
                sys.exit(1)
            if step >= args.steps:
                break
        if stream.iteration >= args.steps:
            break
    torch.save(model.state_dict(), run_dir / FINAL)
    emit({"done": stream.iteration})


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="the training child of checkpointable demo")
    for name in ("--run-dir", "--data-dir"):
        p.add_argument(name, required=True)
    for name in ("--steps", "--workers", "--seed", "--checkpoint-every", "--epoch-size"):
        p.add_argument(name, type=int, required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--label", default="training")
    p.add_argument("--pause-at", type=int, default=None, help="block after this step")
    p.add_argument("--break-resume", action="store_true", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    train(parser().parse_args())
