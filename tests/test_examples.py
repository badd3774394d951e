"""The examples run as documented: the DDP example on 2 ranks, resumed on 1 and on 3."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import checkpointable

SRC = str(Path(checkpointable.__file__).resolve().parents[1])
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def torchrun(ranks: int, *args: str) -> str:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", str(EXAMPLES / "ddp_resume.py"), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def samples_per_epoch(out: Path) -> dict[int, Counter[int]]:
    epochs: dict[int, Counter[int]] = {}
    for path in out.glob("ids-*.json"):
        for epoch, *ids in json.loads(path.read_text())["batches"]:
            epochs.setdefault(epoch, Counter()).update(ids)
    return epochs


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_example_resumes_on_another_number_of_ranks(tmp_path: Path) -> None:
    first = tmp_path / "first"
    said = torchrun(2, "--out", str(first), "--stop-after", "5")
    assert "stopped after step 5 on 2 ranks; resume with --resume" in said
    check_inspect_reads_the_dcp_folder(first / "checkpoint")
    for ranks in (1, 3):
        out = tmp_path / f"resumed-on-{ranks}"
        shutil.copytree(first, out)
        said = torchrun(ranks, "--out", str(out), "--resume")
        assert f"verdict: exactly once over 2 ranks then {ranks} ranks" in said, said
        assert "NOT" not in said
        epochs = samples_per_epoch(out)
        assert sorted(epochs) == [0, 1]
        for epoch, counts in epochs.items():
            assert set(counts) == set(range(60)), f"epoch {epoch}: every sample, on {ranks} ranks"
            padding = sum(counts.values()) - 60
            assert 0 <= padding < 3, f"epoch {epoch}: only torch's padding repeats samples"


def check_inspect_reads_the_dcp_folder(folder: Path) -> None:
    """`checkpointable inspect` on the example's DCP folder: the stream's state and its ranks."""
    command = [sys.executable, "-m", "checkpointable", "inspect", "--json", str(folder)]
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["format"] == "dcp" and set(report["ranks"]) == {"0", "1"}
    (entry,) = report["states"]
    assert entry["key"] == "stream" and entry["type"] == "Stream"
    assert entry["state"]["iteration"] == 5
    sampler = entry["state"]["loader"]["order"][2]  # sampler_state
    assert (sampler["type"], sampler["progress"]) == ("ResumableDistributedSampler", 40)
    # DCP keeps one copy of each item, on the rank its planner picks: the whole stream in one
    # rank's file, or spread over the ranks' files (then no single writer is reported).
    writer = entry["written_by_rank"]
    assert writer is None or report["ranks"][str(writer)] == ["stream"]
    assert entry["where"][:2] == [
        "the Stream's loop is at epoch 1 (its epochs() counts from 1; 0: none begun) and "
        "iteration 5 (items served since the start)",
        "inside epoch 1: 5 of its 8 items served",
    ]
