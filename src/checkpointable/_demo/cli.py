"""``checkpointable demo``: a training run killed hard, resumed, and compared with an unbroken one.

The demo runs the training of `train.py` as child processes:

1. an uninterrupted reference run;
2. a run killed with SIGKILL at a random step, then resumed from its latest checkpoint with the
   same number of workers;
3. the same with a different number of workers on resume.

It compares, for each resumed run, the sample ids consumed after the checkpoint and the final
model parameters with the reference (bit for bit), prints a short report, plots the loss curves
of both runs into ``loss.png``, and exits with status 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import checkpointable

from .data import write_corpus

_SRC = str(Path(checkpointable.__file__).resolve().parents[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options."""
    parser.add_argument("--steps", type=int, default=120, help="training steps (default 120)")
    parser.add_argument("--workers", type=int, default=2, help="loader workers (default 2)")
    parser.add_argument(
        "--kill-at", type=int, default=None, help="step to kill at (default: random)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data, model and kill step")
    parser.add_argument(
        "--out",
        default="checkpointable-demo",
        help="output directory (default ./checkpointable-demo)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=10, help="default 10 steps")
    parser.add_argument("--epoch-size", type=int, default=20, help="steps per epoch (default 20)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--break-resume", action="store_true", help=argparse.SUPPRESS)


@dataclass
class Run:
    """What a training child reported: one record per step, checkpoints, and its end."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    resumed_from: int | None = None
    done: bool = False
    seconds: float = 0.0


def run(args: argparse.Namespace) -> int:
    """Run the demo; return the exit status (0: every resumed run identical)."""
    problem = _check_arguments(args)
    if problem:
        print(f"checkpointable demo: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    kill_at = args.kill_at
    if kill_at is None:  # somewhere in the middle half of the run, after the first checkpoint
        low = max(args.checkpoint_every + 1, args.steps // 4)
        kill_at = random.Random(args.seed).randint(low, max(low, 3 * args.steps // 4))
    other_workers = 1 if args.workers != 1 else 2
    write_corpus(out / "data", args.seed)
    print(
        f"checkpointable demo: {args.steps} training steps of a small MLP on two data sources "
        f"(a map-style dataset and gzipped text chunks), {args.workers} loader workers, "
        f"seed {args.seed}"
    )
    reference = _train(args, out / "reference", args.workers, label="reference")
    if not reference.done:
        print("checkpointable demo: the reference run failed", file=sys.stderr)
        return 2
    print(f"  uninterrupted reference run: {len(reference.records)} steps", flush=True)
    identical = True
    resumes: list[tuple[str, Run, Run]] = []
    for label, workers in (("same", args.workers), ("different", other_workers)):
        run_dir = out / f"resumed-{label}-workers"
        killed = _train(args, run_dir, args.workers, kill_at=kill_at, label="killed")
        resumed = _train(args, run_dir, workers, resume=True, label=f"resumed, {_workers(workers)}")
        same = _report(label, workers, kill_at, reference, killed, resumed, run_dir, out)
        identical = identical and same
        resumes.append((f"{_workers(workers)} ({label} count)", killed, resumed))
    try:
        plot(out / "loss.png", reference, resumes, kill_at)
        print(f"loss curves of the reference and both resumed runs: {out / 'loss.png'}")
    except ImportError:  # matplotlib is the demo extra
        print("no plot: matplotlib is not installed (pip install 'checkpointable[demo]')")
    print(f"identical: {'yes' if identical else 'no'}")
    return 0 if identical else 1


def _check_arguments(args: argparse.Namespace) -> str | None:
    if args.steps < 4:
        return f"--steps must be at least 4, got {args.steps}"
    if args.workers < 0:
        return f"--workers must be >= 0, got {args.workers}"
    if not 1 <= args.checkpoint_every < args.steps - 1:
        return f"--checkpoint-every must be in [1, steps - 1), got {args.checkpoint_every}"
    if args.kill_at is not None and not args.checkpoint_every < args.kill_at < args.steps:
        return (
            f"--kill-at must be after the first checkpoint and before the last step, "
            f"in ({args.checkpoint_every}, {args.steps}), got {args.kill_at}"
        )
    if args.epoch_size < 1:
        return f"--epoch-size must be >= 1, got {args.epoch_size}"
    return None


def _train(
    args: argparse.Namespace,
    run_dir: Path,
    workers: int,
    kill_at: int | None = None,
    resume: bool = False,
    label: str = "training",
) -> Run:
    """Start a training child, follow its report line by line, SIGKILL it at `kill_at`."""
    command = [
        sys.executable, "-m", "checkpointable._demo.train",
        "--run-dir", str(run_dir), "--data-dir", str(Path(args.out).resolve() / "data"),
        "--steps", str(args.steps), "--workers", str(workers), "--seed", str(args.seed),
        "--checkpoint-every", str(args.checkpoint_every), "--epoch-size", str(args.epoch_size),
        "--label", label,
    ]  # fmt: skip
    if resume:
        command.append("--resume")
    if kill_at is not None:  # the child waits there, so that the kill lands at that step
        command += ["--pause-at", str(kill_at)]
    if not args.no_progress:
        command.append("--progress")
    if args.break_resume:
        command.append("--break-resume")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [_SRC, os.environ.get("PYTHONPATH")])),
    }
    result = Run()
    # The child's stdin is a pipe that stays silent: the killed child blocks reading it after
    # step `kill_at` (its checkpoint included), so SIGKILL lands there and not a few steps later.
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        for line in cast(IO[str], child.stdout):
            record = json.loads(line)
            if "step" in record:
                result.records[record["step"]] = record
            elif "paused" in record:
                child.send_signal(signal.SIGKILL)
                break
            elif "checkpoint" in record:
                result.checkpoints.append(record["checkpoint"])
            elif "resumed_from" in record:
                result.resumed_from = record["resumed_from"]
            elif "done" in record:
                result.done = True
        child.wait()
    if kill_at is None and child.returncode != 0:
        print(
            f"checkpointable demo: training exited with status {child.returncode}", file=sys.stderr
        )
    return result


def _report(
    label: str,
    workers: int,
    kill_at: int,
    reference: Run,
    killed: Run,
    resumed: Run,
    run_dir: Path,
    out: Path,
) -> bool:
    """Print how a killed and resumed run compares with the reference; True if identical."""
    import torch

    start = resumed.resumed_from
    if start is None or not resumed.done:
        print(f"  resumed run with {workers} workers ({label}): FAILED, see the output above")
        return False
    steps = sorted(s for s in reference.records if s > start)
    same_samples = all(
        resumed.records.get(s, {}).get(key) == reference.records[s][key]
        for s in steps
        for key in ("map_ids", "text_ids")
    )
    samples = sum(
        len(reference.records[s]["map_ids"]) + len(reference.records[s]["text_ids"]) for s in steps
    )
    final = torch.load(run_dir / "final.pt", weights_only=True)
    expected = torch.load(out / "reference" / "final.pt", weights_only=True)
    same_weights = final.keys() == expected.keys() and all(
        torch.equal(final[k], expected[k]) for k in final
    )
    redone = kill_at - start
    print(
        f"  killed with SIGKILL at step {kill_at}, resumed from the checkpoint of step {start} "
        f"with {_workers(workers)} ({label} count): {samples} samples of steps {start + 1}-"
        f"{steps[-1] if steps else start} {'identical' if same_samples else 'DIFFERENT'}, final "
        f"weights {'bit-identical' if same_weights else 'DIFFERENT'}; time lost: {redone} "
        f"steps redone ({_seconds(killed, start, kill_at):.2f} s)",
        flush=True,
    )
    return same_samples and same_weights


def _workers(count: int) -> str:
    return f"{count} worker" if count == 1 else f"{count} workers"


def _seconds(run: Run, start: int, stop: int) -> float:
    """Wall time of steps start..stop in `run`: the work a crash throws away."""
    if start in run.records and stop in run.records:
        return float(run.records[stop]["time"] - run.records[start]["time"])
    return 0.0


def plot(
    path: Path, reference: Run, resumes: list[tuple[str, Run, Run]], kill_at: int
) -> list[str]:
    """Loss curves of the reference, the killed run and each resumed run, and their difference.

    The top panel draws the uninterrupted run, the killed run up to its kill, and every resumed
    run from its checkpoint; the bottom panel draws each resumed run's loss minus the
    reference's at the same step, which is zero everywhere when the resume is exact. Returns the
    legend's labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    steps = sorted(reference.records)
    top.plot(steps, [reference.records[s]["loss"] for s in steps], lw=6, alpha=0.3,
             color="tab:blue", label="uninterrupted run (reference)")  # fmt: skip
    killed = resumes[0][1]
    before = sorted(s for s in killed.records if s <= kill_at)
    top.plot(before, [killed.records[s]["loss"] for s in before], lw=1.5, color="tab:red",
             label=f"run killed with SIGKILL at step {kill_at}")  # fmt: skip
    # The resumed runs coincide: one is a dashed line, the other markers, so both show.
    styles = [{"ls": "--", "lw": 1.5, "color": "tab:green"},
              {"ls": "none", "marker": "x", "markersize": 5, "color": "tab:purple"}]  # fmt: skip
    deltas = []
    for (label, _, resumed), style in zip(resumes, styles, strict=False):
        after = sorted(s for s in resumed.records if s in reference.records)
        name = f"resumed from step {resumed.resumed_from} with {label}"
        top.plot(after, [resumed.records[s]["loss"] for s in after], label=name, **style)
        delta = [resumed.records[s]["loss"] - reference.records[s]["loss"] for s in after]
        deltas += delta
        bottom.plot(after, delta, **style)
    start = resumes[0][2].resumed_from
    for axes in (top, bottom):
        axes.axvline(kill_at, color="tab:red", ls=":", lw=1)
        if start is not None:
            axes.axvline(start, color="grey", ls=":", lw=1)
    high = top.get_ylim()[1]
    top.text(kill_at, high, " SIGKILL", color="tab:red", va="top", fontsize=8)
    if start is not None:
        top.text(start, high, "checkpoint ", color="grey", va="top", ha="right", fontsize=8)
    top.set_ylabel("training loss")
    top.set_title("checkpointable demo: killed, resumed, and retracing the uninterrupted run")
    top.legend(fontsize=9)
    largest = max((abs(d) for d in deltas), default=0.0)
    verdict = "0 at every step" if largest == 0 else f"max |Δ| = {largest:.3g}"
    bottom.set_ylabel("Δ loss vs reference")
    bottom.set_xlabel("training step")
    bottom.set_title(f"resumed minus uninterrupted, step by step: {verdict}", fontsize=10)
    if largest == 0:
        bottom.set_ylim(-1, 1)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return [text.get_text() for text in top.get_legend().get_texts()]
