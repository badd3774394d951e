"""The main job: `checkpointable demo` in a reduced size, for several seeds and kill points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import checkpointable

SRC = str(Path(checkpointable.__file__).resolve().parents[1])


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "checkpointable", "demo", "--out", str(tmp_path)]
    command += ["--steps", "30", "--checkpoint-every", "5", "--epoch-size", "8", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("seed", "kill_at"), [(0, 12), (3, 27)])
def test_a_killed_run_resumes_identically(tmp_path, seed, kill_at):
    done = demo(tmp_path, "--seed", str(seed), "--kill-at", str(kill_at), "--workers", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    resumed_from = (kill_at // 5) * 5
    for count in ("2 workers (same count)", "1 worker (different count)"):
        assert (
            f"killed with SIGKILL at step {kill_at}, resumed from the checkpoint of step "
            f"{resumed_from} with {count}"
        ) in done.stdout
    assert done.stdout.count("identical, final weights bit-identical") == 2
    assert done.stdout.rstrip().endswith("identical: yes")
    assert "Traceback" not in done.stderr, done.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(300)
def test_a_lost_batch_is_reported_as_different(tmp_path):
    """The comparison can fail: a resume that skips one batch must be caught."""
    done = demo(tmp_path, "--kill-at", "17", "--workers", "0", "--break-resume")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIFFERENT" in done.stdout
    assert done.stdout.rstrip().endswith("identical: no")


def test_bad_options_are_refused(tmp_path):
    done = demo(tmp_path, "--kill-at", "3")
    assert done.returncode == 2
    assert "--kill-at must be after the first checkpoint" in done.stderr
