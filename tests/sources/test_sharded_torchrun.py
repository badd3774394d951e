"""A real elastic resume of a ShardedDataset: torchrun (gloo) on 2 ranks, then on 3 and on 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import checkpointable

from ._data import write_shards

SCRIPT = Path(__file__).parent.parent / "dist_scripts" / "sources_elastic.py"
SRC = str(Path(checkpointable.__file__).resolve().parent.parent)
SIZES = [9, 6, 8]  # 23 rows
TOTAL = sum(SIZES)


def torchrun(ranks: int, *args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={ranks}", str(SCRIPT), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout}\n{done.stderr}"


def read(directory: Path, tag: str, ranks: int) -> list[dict]:
    return [json.loads((directory / f"{tag}_rank{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_two_ranks_then_three_and_one(tmp_path: Path) -> None:
    write_shards(tmp_path / "data", "parquet", SIZES, row_group=3)
    data = str(tmp_path / "data" / "*.parquet")
    out = str(tmp_path)
    torchrun(2, "first", data, out)
    first = read(tmp_path, "first", 2)
    assert first[0]["sampler"] == first[1]["sampler"], "the ranks' states differ"
    assert first[0]["sampler"]["progress"] == 12
    before = [i for part in first for i in part["rows"]]
    assert len(set(before)) == len(before) == 12

    torchrun(3, "finish", data, out, "three", "dcp")  # the state through torch's DCP
    torchrun(1, "finish", data, out, "one")
    for tag, ranks in (("three", 3), ("one", 1)):
        parts = read(tmp_path, tag, ranks)
        assert len({len(part["rows"]) for part in parts}) == 1, f"{tag}: ranks out of lockstep"
        counts = Counter(before + [i for part in parts for i in part["rows"]])
        assert set(counts) == set(range(TOTAL)), f"{tag}: rows missing"
        assert sum(counts.values()) - TOTAL < ranks, f"{tag}: more repeats than padding"
    # 11 rows left: 3 ranks take 4 each (one padding repeat), 1 rank takes the 11
    assert [len(p["rows"]) for p in read(tmp_path, "three", 3)] == [4, 4, 4]
    assert [len(p["rows"]) for p in read(tmp_path, "one", 1)] == [11]
