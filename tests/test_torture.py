"""The guarantees proven by force: SIGKILLs at random times (checkpointable.testing.torture)
and a soak (checkpointable.testing.soak), in their short versions; and proof that each of them
can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import checkpointable
from checkpointable.testing.soak import Sample, SoakReport, _judge

SRC = str(Path(checkpointable.__file__).resolve().parent.parent)
ENV = {**os.environ, "PYTHONPATH": SRC}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sixty_kills_lose_duplicate_reorder_and_leak_nothing(tmp_path: Path) -> None:
    out = tmp_path / "torture.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpointable.testing.torture",
            "--kills",
            "60",
            "--json",
            str(out),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sum(r["kills"] for r in results) >= 55
    assert {r["case"] for r in results} >= {"loader map fork", "pipeline prefetch+parallel_map"}
    for r in results:
        assert (r["lost"], r["duplicated"], r["reordered"]) == (0, 0, 0), r
        assert (r["leaked_processes"], r["leaked_shm"], r["errors"]) == (0, 0, []), r
        assert r["runs"] >= 1, r


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_the_harness_catches_a_component_that_forgets_its_position() -> None:
    script = textwrap.dedent(
        """
        from checkpointable.testing import torture
        from checkpointable.testing._torture_cases import Case, _epochs, _loader

        class Forgetful:
            def __init__(self, size):
                self.loader = _loader(size)
            def __iter__(self):
                return iter(self.loader)
            def state_dict(self):
                return self.loader.state_dict()
            def load_state_dict(self, state):
                pass  # restarts from the beginning: replays what was consumed

        case = Case("forgetful", (0,), Forgetful, _epochs)
        [result] = torture.torture(kills=4, seed=5, cases=[case])
        print(result.kills, result.duplicated, result.clean)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    kills, duplicated, clean = result.stdout.split()
    assert int(kills) == 4 and int(duplicated) > 0 and clean == "False"


@pytest.mark.slow
@pytest.mark.timeout(200)
def test_a_short_soak_finds_no_growth_and_exactly_once_epochs(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "checkpointable.testing.soak",
            "--minutes",
            "0.12",
            "--interval",
            "0.5",
            "--json",
            str(out),
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["epochs"] >= 1 and report["restarts"] >= 1
    assert report["epoch_errors"] == 0 and report["problems"] == []


def test_the_soak_judges_growth_and_leftovers() -> None:
    def sample(second: int, fds: int, shm: int) -> Sample:
        return Sample(second, 100 * 2**20, 0, 0, fds, 3, shm)

    report = SoakReport(
        1.0, samples=[sample(s, 20 + s, 0) for s in range(10)] + [sample(10, 30, 1)]
    )
    _judge(report)
    assert any(p.startswith("fds grew by") for p in report.problems)
    assert any("/dev/shm entries left" in p for p in report.problems)
    steady = SoakReport(1.0, samples=[sample(s, 20, 0) for s in range(10)])
    _judge(steady)
    assert steady.problems == [] and steady.clean


def test_the_soak_judges_descriptors_between_loaders_not_the_worker_count_of_the_last_one() -> None:
    def sample(second: int, workers: int, fds: int) -> Sample:
        return Sample(second, 100 * 2**20, 0, workers, fds, 1, 0)

    # what CI once saw: a live loader holds 4 descriptors per worker, and the run ended while a
    # 3-worker loader was alive, after starting with a 1-worker one
    counts = [3, 1, 1, 0, 3, 1, 3, 2, 2, 2, 1, 3, 1, 3, 3, 0]
    samples = [sample(s, w, 6 + 4 * w) for s, w in enumerate(counts)]
    steady = SoakReport(1.0, samples=samples, rest=[sample(s, 0, 6) for s in range(10)])
    _judge(steady)
    assert steady.problems == []
    leaking = SoakReport(1.0, samples=samples, rest=[sample(s, 0, 6 + s) for s in range(10)])
    _judge(leaking)
    assert leaking.problems == ["fds_at_rest grew by 8.0 (limit 4)"]
