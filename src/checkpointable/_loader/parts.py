"""What the loader's modules share, typed: the dataset kind, the parts built once per loader, and
the options an epoch reads at its ``iter()``. None of them refers to the loader, so that a loader
is freed (and its workers stopped) as soon as the user drops it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
from torch.utils.data import IterableDataset

from .indices import IndexPlan
from .sharded import ShardedIterableDataset
from .state import LoaderState

__all__ = ["DatasetKind", "EpochOptions", "LoaderParts"]


class DatasetKind(str, Enum):
    """How the loader reads its dataset; the value is the state's ``"dataset_kind"``."""

    MAP = "map"  # indices from a sampler
    ITERABLE = "iterable"  # a copy of an IterableDataset per worker
    SHARDED = "sharded"  # a ShardedIterableDataset's shards, in the loader's order

    def __str__(self) -> str:
        return self.value

    @classmethod
    def of(cls, dataset: object) -> DatasetKind:
        if isinstance(dataset, ShardedIterableDataset):
            return cls.SHARDED
        return cls.ITERABLE if isinstance(dataset, IterableDataset) else cls.MAP


@dataclass(frozen=True)
class LoaderParts:
    """What a loader builds once: its dataset, kind, index plan and position."""

    dataset: Any
    kind: DatasetKind
    plan: IndexPlan | None  # map-style only
    state: LoaderState
    dataset_stateful: bool  # the dataset has state_dict / load_state_dict (not for sharded)
    index_sampler: Any  # torch's ``_index_sampler`` (fixed once the loader is built)
    batch_size: int | None
    drop_last: bool

    def epoch_length(self) -> int | None:
        """A map-style epoch's batches as torch counts them (None: a sampler without len())."""
        try:
            return len(self.index_sampler)
        except TypeError:
            return None


@dataclass(frozen=True)
class EpochOptions:
    """The loader's arguments as an ``iter()`` reads them (torch lets a script change these
    between epochs)."""

    num_workers: int
    persistent_workers: bool
    collate_fn: Callable[[Any], Any]
    auto_collation: bool
    in_order: bool
    prefetch_factor: int | None
    timeout: float
    multiprocessing_context: Any
    worker_init_fn: Callable[[int], None] | None
    snapshot_every: int | None
    generator: torch.Generator | None
    pin_memory: bool
    pin_memory_device: str
    length_reported: int | None  # len(loader) of an iterable-style dataset, once asked
