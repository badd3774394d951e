"""The real Lightning ``Trainer`` over our `StatefulDataLoader`: killed with SIGKILL mid-epoch,
resumed with ``trainer.fit(ckpt_path="last")`` from a `ModelCheckpoint` taken every 4 steps, it
trains on exactly the batches of the uninterrupted fit and ends with bit-identical weights; and
``checkpointable inspect`` finds our state in Lightning's checkpoint.

The fits are ``examples/lightning_resume.py`` run as child processes (about 4 s each).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pl = pytest.importorskip("pytorch_lightning")

import checkpointable  # noqa: E402
from checkpointable._inspect import main as inspect_main  # noqa: E402

SRC = str(Path(checkpointable.__file__).resolve().parents[1])
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lightning_resume.py"
KILL_AT, EVERY, STEPS = 14, 4, 20  # 10 steps an epoch: killed in the second epoch, after step 12


def fit(out: Path, *args: str, killed: bool = False) -> list[dict]:
    """Run the example; return its step records."""
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(EXAMPLE), "--out", str(out), "--every", str(EVERY), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    if killed:
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    else:
        assert done.returncode == 0, done.stdout + done.stderr
    return records(out, "resumed" if "--resume" in args else "first")


def records(out: Path, phase: str) -> list[dict]:
    lines = (out / f"steps-{phase}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("workers", "sampler"), [(0, "generator"), (2, "generator"), (2, "resumable")]
)
def test_a_fit_killed_mid_epoch_resumes_with_the_same_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: int, sampler: str
) -> None:
    options = ("--workers", str(workers), "--sampler", sampler)
    # The reference has the same workers: torch's RandomSampler makes one more draw from the
    # generator at the end of an epoch when workers prefetch to its end (ours does the same).
    reference_dir = tmp_path / "reference"
    reference = {r["step"]: r for r in fit(reference_dir, *options)}
    assert sorted(reference) == list(range(1, STEPS + 1))
    tmp_path = tmp_path / "killed"

    before = fit(tmp_path, *options, "--kill-at", str(KILL_AT), killed=True)
    assert [r["step"] for r in before] == list(range(1, KILL_AT + 1))
    assert before == [reference[r["step"]] for r in before]
    checkpoints = {p.name for p in (tmp_path / "checkpoints").iterdir()}
    assert {"last.ckpt", "epoch=1-step=12.ckpt"} <= checkpoints
    # Lightning keeps our state in its checkpoint, as plain data: 2 batches into epoch 1.
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    (state,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (state["type"], *state["position"][:3]) == ("StatefulDataLoader", 1, True, 2)
    assert inspect_main(str(tmp_path / "checkpoints" / "last.ckpt"), as_json=True) == 0
    (entry,) = json.loads(capsys.readouterr().out)["states"]
    assert entry["key"] == "loops.fit_loop.state_dict.combined_loader[0]"
    assert entry["where"][0].startswith("inside pass 1 over the data (passes counted from 0): 2 ")

    after = fit(tmp_path, *options, "--resume")
    last = KILL_AT // EVERY * EVERY
    assert [r["step"] for r in after] == list(range(last + 1, STEPS + 1)), "from the checkpoint"
    assert after == [reference[r["step"]] for r in after], "the batches of the uninterrupted fit"
    assert after[0]["epoch"] == 1 and after[-1]["epoch"] == 1

    final = torch.load(tmp_path / "final.pt", weights_only=True)
    expected = torch.load(reference_dir / "final.pt", weights_only=True)
    assert all(torch.equal(final[k], expected[k]) for k in expected), "bit-identical weights"
