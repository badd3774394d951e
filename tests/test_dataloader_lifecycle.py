"""The loader's phases through the public API: each ``iter()``, ``load_state_dict`` and
``skip`` from each phase (fresh, mid-epoch, epoch ended, abandoned, loaded), pinned as they are."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset

from checkpointable._loader.state_layout import long_form
from checkpointable.dataloader import StatefulDataLoader


class Pids(Dataset[Any]):
    """Item i is (i, the pid of the process that read it)."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, os.getpid()


def batches(iterator: Any) -> list[list[int]]:
    return [batch.tolist() for batch in iterator]


def position(loader: StatefulDataLoader[Any]) -> tuple[int, bool, int]:
    state = long_form(loader.state_dict())
    return state["epoch"], state["in_epoch"], state["batches"]


EPOCH = [[0, 1], [2, 3], [4, 5], [6, 7]]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_partial_epoch_state_then_resume(workers: int) -> None:
    loader = StatefulDataLoader(list(range(8)), batch_size=2, num_workers=workers)
    assert position(loader) == (0, False, 0)  # fresh
    iterator = iter(loader)
    assert next(iterator).tolist() == [0, 1]
    assert position(loader) == (0, True, 1)  # mid-epoch
    state = loader.state_dict()
    resumed = StatefulDataLoader(list(range(8)), batch_size=2, num_workers=2 - workers)
    resumed.load_state_dict(state)
    # loaded, not yet iterated: reads back as loaded (a map-style state holds no worker count)
    assert resumed.state_dict() == state
    assert batches(resumed) == EPOCH[1:]  # continues the loaded epoch
    assert position(resumed) == (1, False, 4)  # epoch ended
    assert batches(resumed) == EPOCH  # the next iter() starts the next epoch
    assert batches(iterator) == EPOCH[1:]  # the original, untouched by the state it gave
    loader.close()
    resumed.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_reiterate_after_epoch_end_and_after_break(workers: int) -> None:
    loader = StatefulDataLoader(list(range(8)), batch_size=2, num_workers=workers)
    assert batches(loader) == EPOCH
    assert position(loader) == (1, False, 4)
    assert batches(loader) == EPOCH  # a new epoch from its start
    assert position(loader) == (2, False, 4)
    for batch in loader:  # break out of the loop: the epoch is abandoned
        assert batch.tolist() == [0, 1]
        break
    assert position(loader) == (2, True, 1)
    assert batches(loader) == EPOCH  # the next iter() ends it and starts the next one
    assert position(loader) == (4, False, 4)
    loader.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 2])
def test_a_new_iter_or_load_state_dict_stops_the_running_iterator(workers: int) -> None:
    loader = StatefulDataLoader(list(range(8)), batch_size=2, num_workers=workers)
    first = iter(loader)
    assert next(first).tolist() == [0, 1]
    state = loader.state_dict()
    second = iter(loader)  # abandons the first iterator's epoch
    with pytest.raises(StopIteration):
        next(first)
    assert next(second).tolist() == [0, 1]
    assert next(second).tolist() == [2, 3]
    loader.load_state_dict(state)  # after iteration started: allowed, it stops the iterator
    with pytest.raises(StopIteration):
        next(second)
    assert batches(loader) == EPOCH[1:]  # the loaded position, not the stopped iterator's
    loader.close()


@pytest.mark.timeout(60)
def test_a_boundary_state_fixes_the_next_shuffled_epoch() -> None:
    torch.manual_seed(3)
    loader = StatefulDataLoader(list(range(8)), batch_size=2, shuffle=True)
    batches(loader)
    state = loader.state_dict()  # epoch ended: the next epoch's seed is drawn now
    expected = batches(loader)
    resumed = StatefulDataLoader(list(range(8)), batch_size=2, shuffle=True)
    torch.manual_seed(99)  # the resumed run's global RNG does not matter
    resumed.load_state_dict(state)
    assert batches(resumed) == expected


@pytest.mark.timeout(90)
def test_persistent_workers_live_across_epochs_until_a_state_is_loaded(no_leaks: None) -> None:
    def pids(loader: StatefulDataLoader[Any]) -> set[int]:
        return {pid for _, pid_batch in loader for pid in pid_batch.tolist()}

    with StatefulDataLoader(Pids(), batch_size=2, num_workers=2, persistent_workers=True) as kept:
        first = pids(kept)
        assert len(first) == 2 and os.getpid() not in first
        assert pids(kept) == first  # the same workers serve the next epoch
        iterator = iter(kept)
        next(iterator)
        state = kept.state_dict()
        del iterator  # abandoned: the workers stay
        assert pids(kept) == first
        kept.load_state_dict(state)  # the workers hold the old position: new ones start
        assert not pids(kept) & first
    with StatefulDataLoader(Pids(), batch_size=2, num_workers=2) as fresh:
        assert not pids(fresh) & pids(fresh)  # without persistent_workers: new workers per epoch


@pytest.mark.timeout(90)
@pytest.mark.parametrize("persistent", [False, True])
def test_close_releases_every_descriptor_while_the_epoch_iterator_is_still_referenced(
    persistent: bool, no_leaks: None
) -> None:
    """A training loop that calls ``loader.close()`` inside its ``for`` gets the queues' pipes
    and the workers' sentinels back at once, not when the iterator is collected."""

    def descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    def opened() -> tuple[StatefulDataLoader[Any], Any]:
        loader = StatefulDataLoader(
            list(range(64)), batch_size=4, num_workers=2, persistent_workers=persistent
        )
        iterator = iter(loader)
        next(iterator)
        return loader, iterator

    loader, iterator = opened()  # made once first: multiprocessing's lazily opened files
    loader.close()
    del loader, iterator
    before = descriptors()
    loader, iterator = opened()
    assert descriptors() >= before + 8  # 2 workers: a task queue each, the result queue...
    loader.close()
    assert descriptors() == before, "close() kept descriptors while the iterator lives"
    with pytest.raises(StopIteration):
        next(iterator)  # the closed epoch delivers nothing more, and does not fail otherwise
    assert loader.state_dict()["position"][2] == 1  # the position stays where it was


@pytest.mark.timeout(60)
def test_skip_waits_for_the_running_iterator() -> None:
    loader = StatefulDataLoader(list(range(8)), batch_size=2)
    iterator = iter(loader)
    next(iterator)
    with pytest.raises(RuntimeError, match="inside epoch 0"):
        loader.skip(1)
    del iterator  # a break: the skip applies to the next epoch
    loader.skip(1)
    assert batches(loader) == EPOCH[1:]
    state = loader.state_dict()
    loader.load_state_dict(state)
    loader.skip(5)  # longer than an epoch: carried over
    assert batches(loader) == []
    assert batches(loader) == EPOCH[1:]
