"""The pretraining example end to end: a rank SIGKILLed under torchrun, the group restarted and
resumed from its DCP checkpoint, then a resume on 3 ranks; all verified by the example itself
and again here from its logs. Its checks also fail when the results are tampered with."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

import checkpointable

SRC = str(Path(checkpointable.__file__).resolve().parents[1])
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def records(folder: Path) -> list[dict[str, Any]]:
    """Every step every rank logged in a run folder, in the order written, with its rank."""
    found = []
    for path in sorted(folder.glob("log-rank*.jsonl")):
        rank = int(path.stem.removeprefix("log-rank"))
        found += [{**json.loads(line), "rank": rank} for line in path.read_text().splitlines()]
    return found


def trained(folder: Path) -> dict[tuple[int, int], list[int]]:
    """(step, rank) -> draws of the attempt that counted (the last one logged)."""
    return {(r["step"], r["rank"]): r["draws"] for r in records(folder)}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_pretrain_example_survives_a_kill_and_resumes_on_3_ranks(tmp_path: Path) -> None:
    out = tmp_path / "gpt"
    command = [
        sys.executable, str(EXAMPLES / "pretrain_gpt.py"), "--out", str(out),
        "--steps", "12", "--save-every", "4", "--kill-at", "6", "--more-steps", "4",
        "--corpus-bytes", "60000",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=540)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    assert said.strip().splitlines()[-1].startswith("verdict: PASS"), said
    assert "FAILED" not in said
    assert "rank 1: SIGKILL at step 6" in said
    assert "2 ranks resume from step 4" in said and "3 ranks resume from step 12" in said

    # written once: JSONL shards and token arrays of both corpora
    for corpus in ("modules", "packages"):
        assert len(list((out / "data" / corpus).glob("docs-*.jsonl"))) == 2
        assert (out / "data" / corpus / "tokens.npy").stat().st_size > 50_000

    # the logs, read here: one restart; the steps after the checkpoint were trained twice
    restarted = records(out / "restarted")
    assert {r["restart"] for r in restarted} == {0, 1}
    assert sorted({r["step"] for r in restarted if r["restart"] == 1}) == list(range(5, 13))
    assert trained(out / "restarted") == trained(out / "uninterrupted")
    first = torch.load(out / "uninterrupted" / "weights-2ranks.pt")
    second = torch.load(out / "restarted" / "weights-2ranks.pt")
    assert all(torch.equal(first[name], second[name]) for name in first)
    # 12 steps of 2 ranks x 4, then 4 steps of 3 ranks x 4: each draw of the global order once
    draws = Counter(d for ids in trained(out / "restarted").values() for d in ids)
    elastic = trained(out / "elastic")
    assert {rank for _, rank in elastic} == {0, 1, 2}
    draws.update(d for ids in elastic.values() for d in ids)
    assert sorted(draws.elements()) == list(range(12 * 2 * 4 + 4 * 3 * 4))
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    check_inspect_reads_the_checkpoint(out / "restarted" / "checkpoints" / "step-000012")
    check_the_checks_fail_on_tampered_results(out, kill_at=6, steps=12)


def check_inspect_reads_the_checkpoint(folder: Path) -> None:
    """`checkpointable inspect` finds the loader in the DCP folder: 12 steps of 2 ranks x 4."""
    command = [sys.executable, "-m", "checkpointable", "inspect", "--json", str(folder)]
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == "dcp" and set(report["ranks"]) == {"0", "1"}
    (entry,) = report["states"]
    assert (entry["key"], entry["type"]) == ("loader", "StatefulDataLoader")
    sampler = entry["state"]["order"][2]  # sampler_state
    assert (sampler["type"], sampler["progress"]) == ("MixtureSampler", 96)
    assert sum(sampler["drawn"].values()) == 96 and sampler["period"] == 10
    said = "\n".join(entry["where"])
    assert "96 samples of the epoch consumed over all ranks" in said and "None" not in said, said


def check_the_checks_fail_on_tampered_results(out: Path, kill_at: int, steps: int) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        report = importlib.import_module("_pretrain.report")
    finally:
        sys.path.remove(str(EXAMPLES))
    ok, lines, verdict = report.verify(out, kill_at, steps)
    assert ok and verdict.startswith("PASS"), lines

    weights = out / "restarted" / "weights-2ranks.pt"
    saved = weights.read_bytes()
    state = torch.load(weights)
    name = next(iter(state))
    state[name].view(-1)[0] = torch.nextafter(state[name].view(-1)[0], torch.tensor(9.0))
    torch.save(state, weights)
    ok, lines, verdict = report.verify(out, kill_at, steps)
    assert not ok and [line for line in lines if line.startswith("FAILED")] == [
        "FAILED the final weights are bit-identical to the uninterrupted run's"
    ]
    assert (
        verdict == "FAIL, not true: the final weights are bit-identical to the uninterrupted run's"
    )
    weights.write_bytes(saved)

    log = out / "elastic" / "log-rank2.jsonl"
    kept = log.read_text()
    log.write_text("".join(kept.splitlines(keepends=True)[:-1]))  # its last step lost
    ok, lines, verdict = report.verify(out, kill_at, steps)
    assert not ok and any("exactly once" in line for line in lines if line.startswith("FAILED"))
    log.write_text(kept)
