"""Pretrain a small GPT under torchrun, kill a rank, restart, resume on 3 ranks, verify.

Run it (on CPU, about a minute)::

    python examples/pretrain_gpt.py --out /tmp/gpt

It writes the corpora once (the ``.py`` files of Python's standard library, byte-level tokens,
as JSONL shards packed into token arrays: see ``_pretrain/corpus.py``), then launches three
runs of this script under torchrun, each printed as it starts:

1. ``uninterrupted``: ``torchrun --standalone --nproc-per-node 2 pretrain_gpt.py --train``,
   the reference.
2. ``restarted``: the same with ``--max-restarts 2``; rank 1 SIGKILLs itself at step
   ``--kill-at`` (once: a marker file stops the restarted group from doing it again), the
   torchrun agent restarts the group, and training resumes from the latest checkpoint.
3. ``elastic``: the restarted run's final checkpoint, continued for ``--more-steps`` steps on
   ``--nproc-per-node 3``.

The corpora are written once per ``--out``. A rank can also be started by hand, e.g. the
restarted run (the environment variable works around pytorch/pytorch#135712: without it, a
group of gloo workers restarted by torchrun reads the dead group's addresses)::

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc-per-node 2 \
        --max-restarts 2 examples/pretrain_gpt.py --train --phase restarted --out /tmp/gpt \
        --kill-at 13

Training (``_pretrain/train.py``) mixes the two corpora by weight (`Mixture` of
`TokenArrayDataset` windows), reads them through a `StatefulDataLoader`, and saves the model,
the optimizer and the loader with ``torch.distributed.checkpoint`` every ``--save-every`` steps.
Packing happens offline, when the token arrays are written (`PackedSequences` over the JSONL
shards): windows of a token array resume on any world size, where online packing streams are
tied to the world size that packed them. Then the script checks, from the ranks' logs and
weights, that the sample ids consumed (each
window's draw number in the mixture, which does not depend on the ranks) equal the
uninterrupted run's step by step, that the final weights are bit-identical, and that after the
resume on 3 ranks every sample of the global order was consumed exactly once. It writes
``<out>/loss.png`` and prints one line: ``verdict: PASS ...`` (exit status 0) or
``verdict: FAIL ...`` (exit status 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent
sys.path.insert(0, str(EXAMPLES))

from _pretrain.corpus import write_corpus  # noqa: E402
from _pretrain.report import verify  # noqa: E402
from _pretrain.train import latest_checkpoint, train  # noqa: E402

# torchrun's agent shares its rendezvous store with the workers, and a restarted group of
# gloo workers then reads the dead group's addresses from it (pytorch/pytorch#135712): each
# group gets its own store.
TORCHRUN_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="data, checkpoints, logs and the PNG")
    parser.add_argument("--steps", type=int, default=24, help="steps of the 2-rank runs")
    parser.add_argument("--more-steps", type=int, default=8, help="steps then on 3 ranks")
    parser.add_argument("--save-every", type=int, default=8, help="checkpoint period (steps)")
    parser.add_argument(
        "--kill-at", type=int, default=None, help="rank 1 dies at this step (13; --train: never)"
    )
    parser.add_argument("--batch", type=int, default=4, help="sequences per rank and step")
    parser.add_argument("--context", type=int, default=32, help="tokens per sequence")
    parser.add_argument("--workers", type=int, default=1, help="loader worker processes")
    parser.add_argument("--corpus-bytes", type=int, default=200_000, help="per corpus")
    parser.add_argument("--train", action="store_true", help="be one rank (torchrun starts it)")
    parser.add_argument("--phase", default="uninterrupted", help="with --train: the run folder")
    parser.add_argument("--kill-rank", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.kill_at is None:
        args.kill_at = 0 if args.train else 13
    if not args.train and (
        not 0 < args.kill_at <= args.steps or args.kill_at % args.save_every == 0
    ):
        parser.error("--kill-at must be a step in 1..--steps that is not a checkpoint step")
    return args


def torchrun(args: argparse.Namespace, run: str, ranks: int, *extra: str) -> None:
    """Launch this script's ranks under torchrun (CPU, gloo); its output goes to a log."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(ranks), *extra, __file__, "--train", "--phase", run,
        "--out", args.out, "--batch", str(args.batch), "--context", str(args.context),
        "--workers", str(args.workers), "--save-every", str(args.save_every),
        "--corpus-bytes", str(args.corpus_bytes),
    ]  # fmt: skip
    command += ["--kill-at", str(args.kill_at if run == "restarted" else 0)]  # 0: never
    command += ["--steps", str(args.steps + (args.more_steps if run == "elastic" else 0))]
    shown = " ".join(
        [*(f"{k}={v}" for k, v in TORCHRUN_ENV.items()), "torchrun", *command[3:]]
    ).replace(str(EXAMPLES) + os.sep, "")
    print(f"[{run}] {shown}", flush=True)
    folder = Path(args.out) / run
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **TORCHRUN_ENV, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    began = time.perf_counter()
    with (folder / "torchrun.log").open("w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    said = (folder / "torchrun.log").read_text()
    for line in said.splitlines():
        if line.startswith(f"[{run}]") or "SIGKILL" in line:
            print("    " + line.split("]:", 1)[-1].strip(), flush=True)
    if done.returncode != 0:
        print(said[-4000:])
        raise SystemExit(f"verdict: FAIL: torchrun exited with {done.returncode} in run {run!r}")
    print(f"    done in {time.perf_counter() - began:.1f} s", flush=True)


def drive(args: argparse.Namespace) -> None:
    out = Path(args.out)
    for run in ("uninterrupted", "restarted", "elastic"):
        shutil.rmtree(out / run, ignore_errors=True)
    for corpus in ("modules", "packages"):
        path = write_corpus(out / "data", corpus, args.corpus_bytes)
        print(f"corpus {corpus!r}: {path.stat().st_size // 2:,} byte tokens in {path}")
    torchrun(args, "uninterrupted", 2)
    torchrun(args, "restarted", 2, "--max-restarts", "2")
    latest = latest_checkpoint(out / "restarted" / "checkpoints")
    assert latest is not None and latest[0] == args.steps, latest
    shutil.copytree(latest[1], out / "elastic" / "checkpoints" / latest[1].name)
    torchrun(args, "elastic", 3)
    ok, lines, verdict = verify(out, args.kill_at, args.steps)
    print("\n".join(lines))
    print(f"loss curves: {out / 'loss.png'}")
    print(f"verdict: {verdict}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    arguments = parse()
    if arguments.train:
        train(arguments)
    else:
        drive(arguments)
