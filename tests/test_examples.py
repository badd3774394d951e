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


def torchrun(ranks: int, *args: str) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={ranks}", str(EXAMPLES / "ddp_resume.py"), *args,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def samples_per_epoch(out: Path) -> dict[int, Counter[int]]:
    epochs: dict[int, Counter[int]] = {}
    for path in out.glob("ids-*.json"):
        for epoch, *ids in json.loads(path.read_text())["batches"]:
            epochs.setdefault(epoch, Counter()).update(ids)
    return epochs


@pytest.mark.timeout(600)
def test_ddp_example_resumes_on_another_number_of_ranks(tmp_path):
    first = tmp_path / "first"
    torchrun(2, "--out", str(first), "--stop-after", "5")
    for ranks in (1, 3):
        out = tmp_path / f"resumed-on-{ranks}"
        shutil.copytree(first, out)
        torchrun(ranks, "--out", str(out), "--resume")
        epochs = samples_per_epoch(out)
        assert sorted(epochs) == [0, 1]
        for epoch, counts in epochs.items():
            assert set(counts) == set(range(60)), f"epoch {epoch}: every sample, on {ranks} ranks"
            padding = sum(counts.values()) - 60
            assert 0 <= padding < 3, f"epoch {epoch}: only torch's padding repeats samples"
