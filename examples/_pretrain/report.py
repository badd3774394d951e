"""The example's checks, its loss-curve PNG and its one-line verdict, from the runs' logs."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .train import PERIOD, WEIGHTS


@dataclass(frozen=True)
class Record:
    """One step of one rank, as logged."""

    restart: int
    step: int
    world: int
    draws: list[int]
    sources: list[int]
    loss: float


@dataclass
class Run:
    """What the ranks of one run logged, keeping each step's latest attempt.

    A step logged again after a restart (it followed the last checkpoint) replaces the earlier
    record: the later one is what the final weights were trained on.
    """

    records: dict[tuple[int, int], Record] = field(default_factory=dict)
    replayed: set[int] = field(default_factory=set)  # steps trained again after a restart
    restarts: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, folder: Path) -> Run:
        run = cls()
        for path in sorted(folder.glob("log-rank*.jsonl")):
            rank = int(path.stem.removeprefix("log-rank"))
            for line in path.read_text().splitlines():
                record = Record(**json.loads(line))
                key = (record.step, rank)
                if key in run.records:
                    run.replayed.add(record.step)
                run.records[key] = record
                run.restarts.add(record.restart)
        return run

    def steps(self) -> list[int]:
        return sorted({step for step, _ in self.records})

    def draws(self, step: int) -> list[int]:
        """The draws of `step` over all ranks, in the global order."""
        return sorted(d for (s, _), r in self.records.items() if s == step for d in r.draws)

    def sources(self) -> Counter[int]:
        return Counter(s for r in self.records.values() for s in r.sources)

    def loss(self, step: int) -> float:
        return self.records[(step, 0)].loss


def weights_equal(first: Path, second: Path) -> bool:
    """Whether two saved state dicts hold bit-identical tensors under the same names."""
    a, b = torch.load(first), torch.load(second)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def plot(
    out: Path, reference: Run, restarted: Run, elastic: Run, kill_at: int, resumed_from: int
) -> Path:
    """The loss curves: uninterrupted, restarted after the kill, continued on 3 ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    steps = reference.steps()
    axes.plot(steps, [reference.loss(s) for s in steps], lw=4, alpha=0.35, label="uninterrupted")
    steps = restarted.steps()
    axes.plot(
        steps, [restarted.loss(s) for s in steps], "k.", ms=5, label="killed, restarted by torchrun"
    )
    steps = elastic.steps()
    axes.plot(steps, [elastic.loss(s) for s in steps], "C3.-", ms=5, label="resumed on 3 ranks")
    axes.axvline(kill_at, color="C1", ls="--", lw=1, label=f"SIGKILL (step {kill_at})")
    axes.axvline(resumed_from, color="C2", ls=":", lw=1, label=f"resumed from step {resumed_from}")
    axes.set(xlabel="step", ylabel="loss (mean over ranks)", title="pretrain_gpt.py")
    axes.legend()
    path = out / "loss.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def verify(out: Path, kill_at: int, steps: int) -> tuple[bool, list[str], str]:
    """Run the checks, draw the PNG; return (all passed, one line per check, the verdict)."""
    reference = Run.read(out / "uninterrupted")
    restarted = Run.read(out / "restarted")
    elastic = Run.read(out / "elastic")
    lines, ok = [], True

    def check(passed: bool, line: str) -> None:
        nonlocal ok
        ok = ok and passed
        lines.append(("ok    " if passed else "FAILED") + " " + line)

    killed = (out / "restarted" / "killed.marker").exists() and restarted.restarts == {0, 1}
    check(killed, f"one rank was SIGKILLed at step {kill_at} and torchrun restarted the group once")
    check(
        restarted.steps() == reference.steps() == list(range(1, steps + 1)),
        f"both runs trained steps 1..{steps}; steps {sorted(restarted.replayed)} were trained "
        "again after the restart (they followed the last checkpoint)",
    )
    same = [restarted.draws(s) for s in restarted.steps()] == [
        reference.draws(s) for s in reference.steps()
    ]
    count = sum(len(reference.draws(s)) for s in reference.steps())
    check(same, f"the {count} sample ids consumed, step by step, equal the uninterrupted run's")
    identical = weights_equal(
        out / "uninterrupted" / "weights-2ranks.pt", out / "restarted" / "weights-2ranks.pt"
    )
    check(identical, "the final weights are bit-identical to the uninterrupted run's")
    same_loss = restarted.steps() == reference.steps() and all(
        restarted.loss(s) == reference.loss(s) for s in reference.steps()
    )
    check(same_loss, "the loss curve is identical, step by step")

    consumed = Counter(d for s in restarted.steps() for d in restarted.draws(s))
    consumed.update(d for s in elastic.steps() for d in elastic.draws(s))
    total = sum(consumed.values())
    worlds = sorted({r.world for r in elastic.records.values()})
    exact = sorted(consumed) == list(range(total)) and worlds == [3]
    check(
        exact,
        f"resumed on {worlds} ranks after step {steps}: the {total} samples of the global order "
        "were each consumed exactly once over both world sizes",
    )
    mix = restarted.sources() + elastic.sources()
    share = WEIGHTS["modules"] / sum(WEIGHTS.values())
    check(
        abs(mix[0] - share * total) < PERIOD,
        f"the mixture's proportions: {mix[0]} windows from 'modules', {mix[1]} from 'packages' "
        f"(weights {WEIGHTS['modules']} / {WEIGHTS['packages']}, exact in every {PERIOD} draws)",
    )
    resumed_from = min(restarted.replayed, default=kill_at) - 1
    plot(out, reference, restarted, elastic, kill_at, resumed_from)
    verdict = (
        f"PASS: rank 1 SIGKILLed at step {kill_at}, torchrun restarted the group from the "
        f"checkpoint of step {resumed_from}: its {count} sample ids and its final weights are "
        f"identical to the uninterrupted run's; resumed on 3 ranks, the {total} samples were "
        "each consumed exactly once"
        if ok
        else "FAIL, not true: "
        + "; ".join(line.removeprefix("FAILED ") for line in lines if "FAILED" in line)
    )
    return ok, lines, verdict
