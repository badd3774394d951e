"""A real multi-process elastic resume: torchrun with 2 ranks, then 3 ranks, and then 1 rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import checkpointable

SCRIPT = Path(__file__).parent / "dist_scripts" / "sampler_elastic.py"
SRC = str(Path(checkpointable.__file__).resolve().parent.parent)


def torchrun(ranks: int, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={ranks}", str(SCRIPT), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"


def read(directory: Path, tag: str, ranks: int) -> list[dict]:
    return [json.loads((directory / f"{tag}_rank{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_two_ranks_resume_on_three_and_on_one(tmp_path: Path) -> None:
    torchrun(2, "first", str(tmp_path))
    first = read(tmp_path, "first", 2)
    assert all(part["world"] == 2 and len(part["indices"]) == 6 for part in first)
    assert first[0]["state"] == first[1]["state"], "the ranks' states differ"
    assert (first[0]["state"]["progress"], first[0]["state"]["position"]) == (12, 6)
    before = [i for part in first for i in part["indices"]]
    assert len(set(before)) == 12

    torchrun(3, "finish", str(tmp_path), "three")
    torchrun(1, "finish", str(tmp_path), "one")
    for tag, ranks in (("three", 3), ("one", 1)):
        parts = read(tmp_path, tag, ranks)
        lengths = {len(part["indices"]) for part in parts}
        assert len(lengths) == 1, f"{tag}: the ranks are out of lockstep: {lengths}"
        counts = Counter(before + [i for part in parts for i in part["indices"]])
        assert set(counts) == set(range(23)), f"{tag}: samples missing"
        repeats = sum(counts.values()) - 23
        assert repeats < ranks, f"{tag}: more repeats than torch's padding: {counts}"
        assert all(part["state"]["progress"] == 23 for part in parts)
    # 11 samples left: 3 ranks take 4 each (one padding repeat), 1 rank takes the 11
    assert [len(p["indices"]) for p in read(tmp_path, "three", 3)] == [4, 4, 4]
    assert [len(p["indices"]) for p in read(tmp_path, "one", 1)] == [11]
