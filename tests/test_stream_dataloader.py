"""A Stream over our StatefulDataLoader: one stream state resumes the whole loop exactly."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch

from checkpointable import (
    ResumableRandomSampler,
    ShardedIterableDataset,
    StatefulDataLoader,
    Stream,
)
from checkpointable.iterators import NativeCheckpointableIterator

from ._loader_data import Squares
from .stream_checks import assert_stream_resumable


def map_loader(num_workers: int = 0, n: int = 10, **kwargs: Any) -> StatefulDataLoader:
    generator = torch.Generator().manual_seed(3)
    return StatefulDataLoader(
        Squares(n), batch_size=3, shuffle=True, generator=generator, num_workers=num_workers,
        **kwargs,
    )  # fmt: skip


def shard(index: int, count: int) -> NativeCheckpointableIterator:
    return NativeCheckpointableIterator(list(range(index, 14, count)))


def sharded_loader(num_workers: int = 0) -> StatefulDataLoader:
    return StatefulDataLoader(
        ShardedIterableDataset(shard, num_shards=3), batch_size=2, num_workers=num_workers
    )


def sampler_loader(num_workers: int = 0) -> StatefulDataLoader:
    sampler = ResumableRandomSampler(Squares(9), seed=2, batch_size=2)
    return StatefulDataLoader(Squares(9), batch_size=2, sampler=sampler, num_workers=num_workers)


@pytest.mark.resumable("Stream", "StatefulDataLoader")
@pytest.mark.parametrize("epoch_size", [None, 2, 7])
def test_over_a_map_style_loader(epoch_size: int | None) -> None:
    """Epoch sizes: the loader's, smaller than it (4 batches), larger than it."""
    events = assert_stream_resumable(map_loader, max_epoch=3, epoch_size=epoch_size)
    assert events


@pytest.mark.resumable("Stream", "StatefulDataLoader")
def test_over_a_loader_with_a_resumable_sampler_and_reloads() -> None:
    assert_stream_resumable(sampler_loader, max_epoch=3, reload_each_epoch=True)


@pytest.mark.resumable("Stream", "StatefulDataLoader")
def test_over_a_sharded_iterable_dataset() -> None:
    assert_stream_resumable(sharded_loader, max_epoch=2, epoch_size=5, max_items=30)


@pytest.mark.resumable("Stream", "StatefulDataLoader")
def test_after_set_loader_to_another_loader() -> None:
    assert_stream_resumable(
        map_loader, max_epoch=3, epoch_size=3, switch=(4, functools.partial(map_loader, n=7))
    )


@pytest.mark.timeout(120)
@pytest.mark.resumable("Stream", "StatefulDataLoader")
@pytest.mark.parametrize("persistent", [False, True])
def test_over_a_loader_with_worker_processes(persistent: bool) -> None:
    factory = functools.partial(map_loader, 2, persistent_workers=persistent)
    assert_stream_resumable(
        factory, max_epoch=2, epoch_size=None, max_items=9, positions=[0, 2, 4, 5, 6, 8]
    )


@pytest.mark.timeout(120)
def test_a_resumed_stream_can_change_the_number_of_workers() -> None:
    stream = Stream(map_loader(2))
    seen = []
    for epoch in stream.epochs(2, progress_bar=False):
        for batch in epoch:
            seen.append((stream.epoch, batch[0].tolist()))
            if stream.iteration == 3:
                state = stream.state_dict()
    resumed = Stream(map_loader(0))
    resumed.load_state_dict(state)
    rest = [
        (resumed.epoch, b[0].tolist()) for e in resumed.epochs(2, progress_bar=False) for b in e
    ]
    assert rest == seen[3:]
