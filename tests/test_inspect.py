"""``checkpointable inspect``: every field of a state, JSON and torch files, no code unpickled."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import checkpointable
from checkpointable import ResumableDistributedSampler, StatefulDataLoader, Stream
from checkpointable._inspect import main as inspect_main
from checkpointable.iterators import (
    BlockwiseShuffleIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
)

SRC = str(Path(checkpointable.__file__).resolve().parents[1])


def pipeline_state() -> dict:
    it = FixedBatchIterator(
        BlockwiseShuffleIterator(InfinitePermutationSourceIterator(list(range(20)), seed=1), 4), 3
    )
    next(it)
    return it.state_dict()


def leaves(value, key=""):
    """(key, value) of every scalar field, keyed as the printer shows them."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaves(item, name)
    elif isinstance(value, list) and any(isinstance(x, dict | list) for x in value):
        if key == "random_state":
            yield key, value
            return
        for index, item in enumerate(value):
            yield from leaves(item, f"[{index}]")
    else:
        yield key, value


def sampler_state() -> dict:
    sampler = ResumableDistributedSampler(range(10), num_replicas=2, rank=0, batch_size=2)
    sampler.set_epoch(1)
    iterator = iter(sampler)
    next(iterator), next(iterator)
    return sampler.state_dict()


def loader_state() -> dict:
    loader = StatefulDataLoader(list(range(10)), batch_size=3, shuffle=True)
    batches = iter(loader)
    next(batches)
    return loader.state_dict()


def stream_state() -> dict:
    stream = Stream(StatefulDataLoader(list(range(10)), batch_size=3, shuffle=True))
    epoch = next(stream.epochs(2, progress_bar=False))
    next(epoch)
    return stream.state_dict()


@pytest.mark.parametrize(
    ("make", "kind", "where"),
    [
        (pipeline_state, "FixedBatchIterator", None),
        (sampler_state, "ResumableDistributedSampler", "epoch 1, 2 samples of the epoch drawn, "
         "global progress 4 (all ranks)"),
        (loader_state, "StatefulDataLoader", "epoch 0, 1 batches of the epoch delivered"),
        (stream_state, "Stream", "epoch 1, iteration 1, item 1 of 4 in the epoch, loader at "
         "epoch 0, 1 batches of the epoch delivered"),
    ],
)  # fmt: skip
def test_prints_every_field_of_a_state(tmp_path, capsys, make, kind, where):
    state = make()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "data": state}, path)
    assert inspect_main(str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: {kind} (version 2, ")
    assert (f"\n  where: {where}\n" in out) if where else "where:" not in out
    for key, value in leaves(state):
        if key == "random_state":
            assert f"random_state: <random.Random state v3: 625 words {value[1][1]}," in out
        else:
            assert f"{key}: {value!r}" in out, key


def test_reads_json_and_selects_a_key(tmp_path, capsys):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"run": {"data": pipeline_state()}}))
    assert inspect_main(str(path), key="run.data.source") == 0
    out = capsys.readouterr().out
    assert out.startswith("run.data.source: BlockwiseShuffleIterator")
    assert inspect_main(str(path), key="run.nothing") == 2
    assert "no key 'nothing'" in capsys.readouterr().err


class Payload:
    """An object whose unpickling would need this test module's code."""


def test_refuses_a_pickle_that_needs_code(tmp_path, capsys):
    path = tmp_path / "objects.pt"
    torch.save({"loader": Payload()}, path)
    assert inspect_main(str(path)) == 2
    err = capsys.readouterr().err
    assert "need code to load" in err and "weights_only=True" in err


def test_command_line_entry_point(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(pipeline_state()))
    done = subprocess.run(
        [sys.executable, "-m", "checkpointable", "inspect", str(path)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "<root>: FixedBatchIterator (version 2" in done.stdout


@pytest.mark.parametrize("content", [b"not a checkpoint", b"{broken json"])
def test_unreadable_files_give_a_clear_message(tmp_path, capsys, content):
    path = tmp_path / "bad"
    path.write_bytes(content)
    assert inspect_main(str(path)) == 2
    assert "checkpointable inspect:" in capsys.readouterr().err
