"""The main job: `checkpointable demo` in a reduced size, for several seeds and kill points."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

import checkpointable
from checkpointable._demo.cli import Run, plot
from checkpointable._demo.data import write_corpus

SRC = str(Path(checkpointable.__file__).resolve().parents[1])


def demo(tmp_path: Path, *args: str, bars: bool = False) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "checkpointable", "demo", "--out", str(tmp_path)]
    command += ["--steps", "30", "--checkpoint-every", "5", "--epoch-size", "8"]
    command += [] if bars else ["--no-progress"]
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("seed", "kill_at"), [(0, 12), (3, 27)])
def test_a_killed_run_resumes_identically(tmp_path: Path, seed: int, kill_at: int) -> None:
    # Bars asked for, but the output is a pipe: none is drawn, the output stays clean.
    done = demo(
        tmp_path, "--seed", str(seed), "--kill-at", str(kill_at), "--workers", "2", bars=True
    )
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
    assert "it/s" not in done.stderr and "%|" not in done.stderr, done.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.timeout(300)
def test_a_lost_batch_is_reported_as_different(tmp_path: Path) -> None:
    """The comparison can fail: a resume that skips one batch must be caught."""
    done = demo(tmp_path, "--kill-at", "17", "--workers", "0", "--break-resume")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIFFERENT" in done.stdout
    assert done.stdout.rstrip().endswith("identical: no")


def test_bad_options_are_refused(tmp_path: Path) -> None:
    done = demo(tmp_path, "--kill-at", "3")
    assert done.returncode == 2
    assert "--kill-at must be after the first checkpoint" in done.stderr


def test_the_training_shows_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """The demo's training child draws its tqdm bar when its stderr is a terminal (a pty)."""
    write_corpus(tmp_path / "data", 0)
    command = [
        sys.executable, "-m", "checkpointable._demo.train", "--run-dir", str(tmp_path / "run"),
        "--data-dir", str(tmp_path / "data"), "--steps", "6", "--workers", "0", "--seed", "0",
        "--checkpoint-every", "3", "--epoch-size", "4", "--progress", "--label", "training",
    ]  # fmt: skip
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns
    env = {**os.environ, "PYTHONPATH": SRC, "TERM": "xterm"}
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=child, env=env) as process:
        os.close(child)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=120) == 0, shown.decode(errors="replace")
    os.close(main)
    text = shown.decode(errors="replace")
    assert "training:" in text and "/8 [" in text and "it/s]" in text, text  # 2 epochs of 4


def test_the_plot_draws_both_resumed_runs_and_their_difference(tmp_path: Path) -> None:
    reference = Run(records={s: {"loss": 1.0 / s} for s in range(1, 11)}, done=True)
    killed = Run(records={s: {"loss": 1.0 / s} for s in range(1, 8)})
    same = Run(records={s: {"loss": 1.0 / s} for s in range(6, 11)}, resumed_from=5, done=True)
    other = Run(records={s: {"loss": 1.0 / s} for s in range(6, 11)}, resumed_from=5, done=True)
    labels = plot(tmp_path / "loss.png", reference,
                  [("2 workers (same count)", killed, same),
                   ("1 worker (different count)", killed, other)], kill_at=7)  # fmt: skip
    assert labels == [
        "uninterrupted run (reference)",
        "run killed with SIGKILL at step 7",
        "resumed from step 5 with 2 workers (same count)",
        "resumed from step 5 with 1 worker (different count)",
    ]
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
