"""A Lightning ``Trainer`` fit over our `StatefulDataLoader`, killed and resumed mid-epoch.

Run it once with a kill, then resume from the latest checkpoint::

    python examples/lightning_resume.py --out /tmp/pl --kill-at 14
    python examples/lightning_resume.py --out /tmp/pl --resume

Lightning saves the state of every train dataloader that has ``state_dict()`` /
``load_state_dict()`` in its checkpoints (under ``loops.fit_loop.state_dict.combined_loader``)
and loads it before ``trainer.fit(ckpt_path=...)`` iterates again. So a `ModelCheckpoint` every
few steps plus ``trainer.fit(ckpt_path="last")`` continues with exactly the batch after the
checkpoint, in the epoch where it was. Two details make the resumed fit equal to the
uninterrupted one:

- a seeded ``generator`` for ``shuffle=True`` (its state is in the loader's state), or a
  `ResumableRandomSampler` (Lightning calls its ``set_epoch`` at each epoch): Lightning does not
  restore the global RNG, from which later epochs would otherwise draw their order;
- deterministic model code (``torch.set_num_threads(1)`` here), for bit-identical weights.

Each step appends ``{"step", "epoch", "ids"}`` to ``<out>/steps-<phase>.jsonl``; ``--kill-at``
sends SIGKILL to the process itself after that step (no cleanup of any kind runs), and the final
weights go to ``<out>/final.pt``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from checkpointable import ResumableRandomSampler, StatefulDataLoader

SAMPLES, FEATURES, BATCH = 40, 6, 4


class Points(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Samples of a linear problem; sample i is a pure function of i."""

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x = torch.randn(FEATURES, generator=torch.Generator().manual_seed(index))
        return {"id": torch.tensor(index), "x": x, "y": (x.sum() > 0).long()}


class Model(pl.LightningModule):
    def __init__(self, log: Path, kill_at: int | None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(FEATURES, 2)
        self.log_path, self.kill_at = log, kill_at

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        self.ids = batch["id"].tolist()
        return torch.nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step  # optimizer steps done, this one included
        record = {"step": step, "epoch": self.current_epoch, "ids": self.ids}
        with open(self.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loader(workers: int, sampler: str) -> StatefulDataLoader:
    """The train loader: shuffled by a seeded generator, or by a resumable sampler."""
    if sampler == "resumable":
        order = ResumableRandomSampler(Points(), seed=5)
        return StatefulDataLoader(Points(), batch_size=BATCH, sampler=order, num_workers=workers)
    return StatefulDataLoader(
        Points(),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        generator=torch.Generator().manual_seed(5),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="checkpoint and log directory")
    parser.add_argument("--workers", type=int, default=0, help="loader worker processes")
    parser.add_argument("--sampler", choices=["generator", "resumable"], default="generator")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--every", type=int, default=4, help="checkpoint every N steps")
    parser.add_argument("--kill-at", type=int, default=None, help="SIGKILL after this step")
    parser.add_argument("--resume", action="store_true", help='trainer.fit(ckpt_path="last")')
    args = parser.parse_args()

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    phase = "resumed" if args.resume else "first"
    model = Model(out / f"steps-{phase}.jsonl", args.kill_at)
    checkpoints = ModelCheckpoint(
        dirpath=out / "checkpoints", every_n_train_steps=args.every, save_top_k=-1, save_last=True
    )
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[checkpoints],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train = loader(args.workers, args.sampler)
    trainer.fit(model, train_dataloaders=train, ckpt_path="last" if args.resume else None)
    torch.save(model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
