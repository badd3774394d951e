"""Batches handed from loader workers to the main process through shared-memory slabs
(``checkpointable._runtime.slabs``): the same values as torch's DataLoader, batches kept by the
user never overwritten, torch's pickling where a batch does not fit, and nothing left behind
when a worker or the consumer is SIGKILLed."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, IterableDataset

import checkpointable
from checkpointable._runtime import slabs
from checkpointable._runtime.channels import relay
from checkpointable._runtime.group import WorkerDied, WorkerGroup
from checkpointable._runtime.messages import Kind, Reply
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.testing._processes import alive, descendants, shm_entries
from tests.leaks import child_pids, eventually, no_leaks_of_ours

SRC = str(Path(checkpointable.__file__).resolve().parent.parent)
ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, ROOT])}


class Records(Dataset[Any]):
    """Nested items of mixed dtypes: non-contiguous, 0-dim, empty and bool tensors, text."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "x": (torch.arange(6, dtype=torch.float32).view(2, 3) + index).t(),
            "flags": torch.tensor([index % 2 == 0, True]),
            "half": torch.full((3,), index, dtype=torch.float16),
            "ids": [torch.tensor(index), (torch.zeros(0, 2), f"item {index}")],
            "n": index,
        }


class Rows(Dataset[Any]):
    """Item i: a float32 row of `width` values, all i."""

    def __init__(self, n: int, width: int = 8) -> None:
        self.n = n
        self.width = width

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((self.width,), float(index))


class Words(Dataset[Any]):
    """No tensors at all."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int) -> tuple[str, int]:
        return f"word {index}", index


def _same(left: Any, right: Any) -> None:
    """Equal values, types, dtypes and shapes, all the way down."""
    assert type(left) is type(right), (left, right)
    if isinstance(left, torch.Tensor):
        assert left.dtype == right.dtype and left.shape == right.shape, (left, right)
        assert torch.equal(left, right), (left, right)
    elif isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            _same(left[key], right[key])
    elif isinstance(left, list | tuple):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            _same(a, b)
    else:
        assert left == right


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _both(dataset: Any, **options: Any) -> tuple[list[Any], list[Any]]:
    ours = list(StatefulDataLoader(dataset, num_workers=2, **options))
    options.pop("multiprocessing_context", None)
    return ours, list(DataLoader(dataset, **options))


def _slab_maps() -> set[str]:
    """This process's mappings and descriptors of slabs."""
    found = {line for line in Path("/proc/self/maps").read_text().splitlines() if "slab" in line}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if "checkpointable-slab" in target:
            found.add(f"fd {name}: {target}")
    return found


@pytest.mark.parametrize("batch_size", [4, None])
def test_batches_equal_torchs_with_nested_mixed_dtypes(batch_size: int | None) -> None:
    ours, theirs = _both(Records(24), batch_size=batch_size, multiprocessing_context="fork")
    _same(ours, theirs)
    handed = [tensor for batch in ours for tensor in _tensors(batch) if tensor.numel()]
    assert handed and not any(tensor.is_shared() for tensor in handed)  # from the slabs


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_batches_equal_torchs_under_every_start_method(method: str) -> None:
    ours, theirs = _both(Records(16), batch_size=4, multiprocessing_context=method)
    _same(ours, theirs)
    assert not any(tensor.is_shared() for batch in ours for tensor in _tensors(batch))


def test_a_kept_batch_is_never_overwritten_and_full_slots_fall_back() -> None:
    ours, theirs = _both(Rows(400), batch_size=4, multiprocessing_context="fork")
    assert len(ours) == 100
    _same(ours, theirs)
    shared = [batch.is_shared() for batch in ours]
    # 2 workers x SLOTS slots hold the first batches; the next ones go through torch's pickling
    assert shared.count(False) <= 2 * slabs.SLOTS and shared.count(True) > 0


def test_batches_that_do_not_fit_go_through_torchs_pickling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(slabs, "SLOT_BYTES", 4096)
    ours, theirs = _both(Rows(12, width=2048), batch_size=3, multiprocessing_context="fork")
    _same(ours, theirs)
    assert all(batch.is_shared() for batch in ours)
    ours, theirs = _both(Words(), batch_size=5, multiprocessing_context="fork")
    _same(ours, theirs)


def test_persistent_epochs_release_their_slots() -> None:
    before = _slab_maps()
    loader = StatefulDataLoader(
        Rows(160), batch_size=4, num_workers=2, persistent_workers=True, prefetch_factor=4
    )
    for _ in range(3):  # more batches than slots: each dropped batch gives its slot back
        _same(list(loader), list(DataLoader(Rows(160), batch_size=4)))
    loader.close()
    del loader
    gc.collect()
    assert eventually(lambda: _slab_maps() <= before), _slab_maps() - before


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_killed_worker_leaves_kept_batches_intact_and_nothing_behind(method: str) -> None:
    before = _slab_maps()
    killed: set[int] = set()
    with no_leaks_of_ours(killed=killed):
        workers = child_pids()
        loader = StatefulDataLoader(
            Rows(400), batch_size=4, num_workers=2, multiprocessing_context=method
        )
        iterator = iter(loader)
        kept = [next(iterator) for _ in range(10)]
        victim = min(child_pids() - workers)
        if method == "spawn":  # a memfd, mapped here: the name shows in /proc/self/maps
            assert _slab_maps() - before
        killed.add(victim)
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(WorkerDied):
            for _ in range(200):
                next(iterator)
        expected = list(DataLoader(Rows(40), batch_size=4))
        _same(kept, expected)  # still readable: the memory outlives the worker
        del iterator, loader, kept
    gc.collect()
    assert eventually(lambda: _slab_maps() <= before), _slab_maps() - before


CONSUMER = textwrap.dedent(
    """
    import sys, time
    from checkpointable.dataloader import StatefulDataLoader
    from tests.test_handoff import Rows
    loader = StatefulDataLoader(
        Rows(4000), batch_size=4, num_workers=2, multiprocessing_context=sys.argv[1]
    )
    iterator = iter(loader)
    kept = [next(iterator) for _ in range(50)]
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_a_killed_consumer_leaves_no_process_and_no_shared_memory(method: str) -> None:
    shm = shm_entries()
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, method], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().strip() == "ready"
        below = descendants(consumer.pid)
        assert below  # its workers (and, under forkserver, the fork server)
    finally:
        consumer.kill()
        consumer.wait()
    assert eventually(lambda: not any(alive(pid) for pid in below), 20.0), [
        pid for pid in below if alive(pid)
    ]
    ours = {f"torch_{pid}_" for pid in below | {consumer.pid}}
    left = [name for name in shm_entries() - shm if name.startswith(tuple(ours))]
    assert not left, left


def _send_rows(slab: slabs.Slab, results: Any, count: int, stop: Any, watch: Any) -> None:
    encode = slabs.HandOffEncoder(slab, 0)
    for index in range(count):
        # wait for a free slot (given back by the relay), so that every row goes through one
        while slab.memory.find(b"\x00", 0, slab.slots) < 0 and not stop.wait(0.01):
            pass
        results.put(encode(Reply(Kind.ITEMS, task=index, data=torch.full((4,), float(index)))))
    stop.wait(60)


def test_a_relay_that_copies_batches_gives_their_slots_back() -> None:
    # The loader's pin-memory thread: decode in the thread, copy, drop the slot's view.
    group = WorkerGroup("test", multiprocessing.get_context("fork"))
    try:
        slab = group.slab(0)
        assert slab is not None
        results = group.queue()
        count = 3 * slabs.SLOTS  # more than the slots: every copied batch gave its slot back
        group.start(_send_rows, (slab, results, count, group.stop))
        copied: queue.Queue[Any] = group.queue(local=True)
        shared: list[bool] = []

        def copy(reply: Reply) -> Reply:
            shared.append(reply.data.is_shared())
            reply.data = reply.data.clone()  # as pinning does: the slot's view is dropped
            return reply

        group.start_thread(relay, (results, copied, group.stop, copy, group.loads), "relay")
        replies = [group.receive(copied, False) for _ in range(count)]
    finally:
        group.close()
    assert [reply.data.tolist() for reply in replies] == [[float(i)] * 4 for i in range(count)]
    assert shared == [False] * count  # each from a slot (torch's pickling would share)


class Mixed(IterableDataset[Any]):
    """Small batches, then one too large to be written at once, then small ones again."""

    def __iter__(self) -> Iterator[Any]:
        for index in range(30):
            yield "x" * 6000 if index == 10 else torch.tensor([index])


def test_messages_stay_in_order_when_one_goes_through_the_feeder_thread() -> None:
    ours = list(StatefulDataLoader(Mixed(), batch_size=None, num_workers=1, in_order=False))
    _same(ours, list(DataLoader(Mixed(), batch_size=None)))


@given(
    kind=st.sampled_from(list(Kind)),
    task=st.integers(-1, 2**40),
    worker=st.integers(0, 64),
    generation=st.integers(0, 2**40),
    data=st.recursive(
        st.none() | st.integers() | st.text(max_size=5) | st.tuples(st.integers()),
        lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner),
        max_leaves=6,
    ),
    exhausted=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_a_reply_travels_as_its_wire_tuple_and_comes_back_whole(
    kind: Kind, task: int, worker: int, generation: int, data: Any, exhausted: bool
) -> None:
    """Every encoder sends a Reply as a plain tuple (cheaper to pickle than a class); the
    consumer's decoders (the slab reader, and a queue's own decoding through
    `WorkerGroup.receive`) give it back as a Reply, tuples in its data left alone."""
    from checkpointable._runtime.messages import Encoder, dumps

    reply = Reply(kind, task, worker, generation, data, {"at": task}, exhausted, None)
    reader = slabs.SlabReader()
    for raw in (Encoder()(reply), dumps(reply)):
        assert type(pickle.loads(raw)) is tuple
        assert reader.loads(raw) == reply
        assert Reply.unwire(pickle.loads(raw)) == reply
    assert pickle.loads(pickle.dumps(reply)) == reply  # a queue's own pickling: a Reply too
