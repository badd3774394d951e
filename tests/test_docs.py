"""The docs run as written: every code block after a ``<!-- runnable -->`` line of README.md and
docs/guide.md is a complete script, run here in a fresh folder; the README quick start twice (the
second run resumes from the first one's checkpoint); the guide's state sizes are measured again.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import checkpointable
from checkpointable import (
    ResumableDistributedSampler,
    ResumableRandomSampler,
    StatefulDataLoader,
    Stream,
)
from checkpointable.datasets import chunked_dataset_iterator, read_text_chunk

ROOT = Path(__file__).resolve().parents[1]
SRC = str(Path(checkpointable.__file__).resolve().parents[1])
MARKER = "<!-- runnable -->"
BLOCK = re.compile("^" + re.escape(MARKER) + r"\n```python\n(.*?)\n```", re.S | re.M)
MARKER_LINE = re.compile("^" + re.escape(MARKER) + "$", re.M)


def runnable_blocks(name: str) -> list[tuple[int, str]]:
    """(line number, code) of every block marked runnable in the file `name`."""
    text = (ROOT / name).read_text()
    blocks = [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]
    marked = len(MARKER_LINE.findall(text))
    assert len(blocks) == marked, f"{name}: a {MARKER} line without a python block after it"
    return blocks


def run_script(code: str, folder: Path) -> str:
    script = folder / "block.py"
    script.write_text(code + "\n")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, env=env,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, f"{code}\n--- stdout:\n{done.stdout}\n--- stderr:\n{done.stderr}"
    return done.stdout


def quick_start() -> str:
    """The README's quick start: the runnable block right under its heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start") :]
    found = BLOCK.search(section)
    assert found is not None and section.index(MARKER) < section.index("```")
    return found.group(1)


BLOCKS = [
    pytest.param(code, id=f"{name}:{line}")
    for name in ("README.md", "docs/guide.md")
    for line, code in runnable_blocks(name)
    if code != quick_start()  # run twice below
]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("code", BLOCKS)
def test_every_runnable_block_runs_as_written(tmp_path: Path, code: str) -> None:
    run_script(code, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_readme_quick_start_runs_and_resumes(tmp_path: Path) -> None:
    code = quick_start()
    first = run_script(code, tmp_path)
    assert (tmp_path / "checkpoint.pt").exists()
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert saved["stream"]["iteration"] == 40  # the last multiple of 10 of 3 epochs of 16
    again = run_script(code, tmp_path)  # resumes at iteration 40, trains 8 more
    assert first.strip() == again.strip() == first.strip().splitlines()[-1]
    assert first.startswith("done: epoch 3, iteration 48, loss ")


def test_the_marker_is_documented() -> None:
    assert MARKER in (ROOT / "docs" / "guide.md").read_text().split("## Quick start")[0]


# --- the guide's table of state sizes, measured ---------------------------------------------


def _mid_epoch(loader: StatefulDataLoader) -> dict:
    batches = iter(loader)
    next(batches)
    return loader.state_dict()


def _stream_state() -> dict:
    stream = Stream(StatefulDataLoader(list(range(10_000)), batch_size=64, shuffle=True))
    next(next(stream.epochs(2, progress_bar=False)))
    return stream.state_dict()


def _pipeline_state(folder: Path) -> dict:
    from checkpointable._demo.data import write_corpus

    write_corpus(folder, 0)
    paths = sorted(str(p) for p in folder.glob("chunk-*.txt.gz"))
    lines = chunked_dataset_iterator(paths, read_text_chunk, buffer_size=10_000, seed=1)
    for _ in range(1000):
        next(lines)
    return lines.state_dict()


def _demo_text_state(folder: Path) -> dict:
    from checkpointable._demo.data import write_corpus
    from checkpointable._demo.train import build

    write_corpus(folder, 0)
    args = argparse.Namespace(seed=0, workers=0, data_dir=str(folder))
    return _mid_epoch(build(args)["text"])


DATA = list(range(10_000))


def _shuffled(folder: Path, **options: Any) -> dict:
    return _mid_epoch(StatefulDataLoader(DATA, batch_size=64, shuffle=True, **options))


def _sampled(folder: Path, distributed: bool = False) -> dict:
    sampler: ResumableDistributedSampler | ResumableRandomSampler
    if distributed:
        sampler = ResumableDistributedSampler(DATA, num_replicas=2, rank=0, seed=0)
    else:
        sampler = ResumableRandomSampler(DATA, seed=0)
    return _mid_epoch(StatefulDataLoader(DATA, batch_size=64, sampler=sampler))


def _with_generator(folder: Path) -> dict:
    return _shuffled(folder, generator=torch.Generator().manual_seed(0))


SIZES: dict[str, Callable[[Path], dict]] = {
    "`StatefulDataLoader`, map-style, `shuffle=True` (any `num_workers`)": _shuffled,
    "`StatefulDataLoader`, map-style, `shuffle=True` with a seeded `generator`": _with_generator,
    "`StatefulDataLoader` with a `ResumableRandomSampler`": _sampled,
    "`StatefulDataLoader` with a `ResumableDistributedSampler`": functools.partial(
        _sampled, distributed=True
    ),
    "`Stream` over a `StatefulDataLoader`, `shuffle=True`": lambda folder: _stream_state(),
    "`chunked_dataset_iterator` (a buffered shuffle)": _pipeline_state,
    "the demo's text loader: 4 `chunked_dataset_iterator` shards": _demo_text_state,
}


@pytest.mark.parametrize("case", list(SIZES))
def test_the_guide_states_sizes_as_measured(tmp_path: Path, case: str) -> None:
    guide = (ROOT / "docs" / "guide.md").read_text()
    row = re.search(re.escape(f"| {case} | ") + r"([\d.]+) KB \|", guide)
    assert row is not None, f"no row for {case!r} in the guide's size table"
    written = float(row.group(1)) * 1000
    measured = len(json.dumps(SIZES[case](tmp_path)))
    assert abs(measured - written) <= 0.1 * measured + 50, f"{case}: measured {measured} bytes"
