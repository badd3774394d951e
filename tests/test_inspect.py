"""``checkpointable inspect``: every field of a state, JSON and torch files, no code unpickled."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import checkpointable
from checkpointable import STATE_VERSION, ResumableDistributedSampler, StatefulDataLoader, Stream
from checkpointable._inspect import describe
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


def leaves(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(key, value) of every scalar field, keyed as the printer shows them."""
    if isinstance(value, dict) and key != "random_state":
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
        (pipeline_state, "FixedBatchIterator", []),
        (sampler_state, "ResumableDistributedSampler", [
            "- epoch 1 (set_epoch): 2 samples of it yielded by this sampler",
            "- 4 of the 10 samples of the epoch consumed over all ranks (a resume on any number "
            "of ranks continues from there)",
        ]),
        (loader_state, "StatefulDataLoader", [
            "- inside pass 0 over the data (passes counted from 0): 1 of its 4 batches "
            "delivered; the next iter(loader) continues with the one after them",
            "- it loads with any num_workers",
        ]),
        (stream_state, "Stream", [
            "- the Stream's loop is at epoch 1 (its epochs() counts from 1; 0: none begun) and "
            "iteration 1 (items served since the start)",
            "- inside epoch 1: 1 of its 4 items served",
            "- its loader (StatefulDataLoader):",
            "  - inside pass 0 over the data (passes counted from 0): 1 of its 4 batches",
        ]),
    ],
)  # fmt: skip
def test_prints_every_field_of_a_state(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[], dict[str, Any]],
    kind: str,
    where: list[str],
) -> None:
    state = make()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "data": state}, path)
    assert inspect_main(str(path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"data: {kind} (version {state['version']}, ")
    if where:
        assert "\n  where:\n" in out
        for line in where:
            assert f"\n    {line}" in out, line
    else:
        assert "where:" not in out
    assert "(StatefulDataLoader):\n" in out or kind != "Stream"  # no empty "loader:" line
    for key, value in leaves(state):
        if key == "random_state":
            assert f"random_state: <random.Random state: {len(value['data'])} chars" in out
        else:
            assert f"{key}: {value!r}" in out, key


def test_where_lines_explain_a_finished_epoch_and_epochs_that_are_not_passes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Stream's epochs of epoch_size items are not the loader's passes: the lines say so."""
    stream = Stream(StatefulDataLoader(list(range(10)), batch_size=2))  # 5 batches a pass
    for epoch in stream.epochs(3, 3, progress_bar=False):  # epochs of 3 batches
        for _ in epoch:
            pass
        if stream.epoch == 3:
            break
    lines = describe(stream.state_dict())
    assert "between epochs: the next step of epochs() begins epoch 4" in lines
    assert "  inside pass 1 over the data (passes counted from 0): 4 of its 5 batches " \
        "delivered; the next iter(loader) continues with the one after them" in lines  # fmt: skip
    assert (
        "the Stream's epoch 3 is not the loader's pass 1: the Stream counts the epochs of its "
        "loop from 1 (epoch_size items each), the loader its passes over the data from 0"
    ) in lines
    loader = StatefulDataLoader(list(range(10)), batch_size=5)
    batches = iter(loader)
    next(batches), next(batches)
    assert describe(loader.state_dict())[0] == (
        "inside pass 0 over the data (passes counted from 0): all 2 batches of it delivered; "
        "the pass ends at the next step, then pass 1 begins"
    )


def test_a_model_only_checkpoint_says_it_has_no_data_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    assert inspect_main(str(path)) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: no data-loading state. It holds 2 keys ('weight', 'bias')")
    assert "save stream.state_dict() or loader.state_dict()" in out
    assert "tensor" not in out.split("It holds")[0]
    assert inspect_main(str(path), as_json=True) == 1
    assert json.loads(capsys.readouterr().out)["states"] == []


def test_json_output_for_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = stream_state()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "stream": state}, path)
    assert inspect_main(str(path), as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "torch" and report["path"] == str(path)
    (entry,) = report["states"]
    assert (
        entry["key"] == "stream" and entry["type"] == "Stream" and entry["version"] == STATE_VERSION
    )
    assert entry["state"] == state
    assert entry["json_bytes"] == len(json.dumps(state))
    assert entry["where"][1] == "inside epoch 1: 1 of its 4 items served"
    assert entry["written_by_rank"] is None


def test_reads_a_dcp_folder_without_running_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A single-process DCP save; the DDP example's folder is inspected in test_examples."""
    import torch.distributed.checkpoint as dcp

    stream = Stream(StatefulDataLoader(list(range(10)), batch_size=3, shuffle=True))
    next(stream.epochs(2, progress_bar=False)).__next__()
    folder = tmp_path / "dcp"
    model = torch.nn.Linear(3, 2)
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process"
        warnings.simplefilter("ignore", UserWarning)
        dcp.save({"model": model.state_dict(), "stream": stream, "lists": [{"a": 1}]},
                 checkpoint_id=folder, no_dist=True)  # fmt: skip
    assert inspect_main(str(folder), as_json=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "dcp" and report["ranks"] == {"0": ["stream"]}
    (entry,) = report["states"]
    assert entry["state"] == stream.state_dict() and entry["written_by_rank"] == 0
    assert inspect_main(str(folder), key="model") == 0
    assert "weight: <tensor (2, 3) torch.float32> (not plain data)" in capsys.readouterr().out

    (folder / ".metadata").write_bytes(pickle.dumps({"x": Payload()}))
    assert inspect_main(str(folder)) == 2
    assert "not part of DCP's metadata" in capsys.readouterr().err
    assert inspect_main(str(tmp_path)) == 2
    assert "without a .metadata file" in capsys.readouterr().err


def test_reads_json_and_selects_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"run": {"data": pipeline_state()}}))
    assert inspect_main(str(path), key="run.data.source") == 0
    out = capsys.readouterr().out
    assert out.startswith("run.data.source: BlockwiseShuffleIterator")
    assert inspect_main(str(path), key="run.nothing") == 2
    assert "no key 'nothing'" in capsys.readouterr().err


class Payload:
    """An object whose unpickling would need this test module's code."""


def test_refuses_a_pickle_that_needs_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "objects.pt"
    torch.save({"loader": Payload()}, path)
    assert inspect_main(str(path)) == 2
    err = capsys.readouterr().err
    assert "need code to load" in err and "weights_only=True" in err


def test_command_line_entry_point(tmp_path: Path) -> None:
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
    assert f"<root>: FixedBatchIterator (version {STATE_VERSION}" in done.stdout


@pytest.mark.parametrize("content", [b"not a checkpoint", b"{broken json"])
def test_unreadable_files_give_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    path = tmp_path / "bad"
    path.write_bytes(content)
    assert inspect_main(str(path)) == 2
    assert "checkpointable inspect:" in capsys.readouterr().err
