"""Datasets and samplers shared by the StatefulDataLoader tests (module level: they pickle under
spawn, and worker processes import them by this module's name)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from checkpointable.dataloader import ShardedIterableDataset
from checkpointable.iterators import ChunkedSourceIterator, NativeCheckpointableIterator


class Squares(Dataset[Any]):
    """Map-style and deterministic: item i is (i, i * i)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return index, index * index


class WorkerView(Squares):
    """Map-style: each item also shows the worker that read it and draws from its global RNGs."""

    # items of another type than Squares': a view for the tests, not a Squares to substitute
    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        info = get_worker_info()
        return {
            "index": index,
            "worker": -1 if info is None else info.id,
            "workers": 0 if info is None else info.num_workers,
            "seed": -1 if info is None else info.seed % 2**31,
            "torch": torch.rand(()).item(),
            "random": random.random(),
            "numpy": float(numpy.random.rand()),
        }


class CountingNoise(Squares):
    """Map-style with its own state: a per-process counter drives the 'augmentation' of items.

    Its state is plain data, so assert_resumable can check it; after a resume the same noise
    comes back only if the counter of the worker that reads each item is restored.
    """

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.count = 0
        self.seed: int | None = None

    def __getitem__(self, index: int) -> tuple[int, int]:
        if self.seed is None:
            info = get_worker_info()
            self.seed = 7 if info is None else info.seed % 1000
        self.count += 1
        return index, (self.seed * 31 + self.count * 17) % 997

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count, self.seed = state["count"], state["seed"]


class Slow(Squares):
    """Map-style, sleeping `delay(index)` seconds per item: results arrive out of order."""

    def __getitem__(self, index: int) -> tuple[int, int]:
        time.sleep(0.02 if index % 5 == 0 else 0.0)
        return super().__getitem__(index)


class CountingSampler(Sampler[int]):
    """A sampler with its own state: a random order per pass, a position."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.passes, self.i = n, seed, 0, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = list(range(self.n))
        random.Random(self.seed * 1000 + self.passes).shuffle(order)
        while self.i < self.n:
            self.i += 1
            yield order[self.i - 1]
        self.passes, self.i = self.passes + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"passes": self.passes, "i": self.i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passes, self.i = state["passes"], state["i"]


class PlainSampler(Sampler[int]):
    """A sampler without state: a fixed pseudo-random order (replayed on restore)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(range(self.n), key=lambda i: (i * 7919) % 101))


class Partitioned(IterableDataset[Any]):
    """Iterable-style: worker w of W reads items w, w + W, ... of range(n) (uneven shares)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        yield from range(first, self.n, step)


class StatefulPartitioned(IterableDataset[Any]):
    """As `Partitioned`, with a position: the tutorial's per-worker dataset state."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.i = 0

    def __iter__(self) -> Iterator[int]:
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        mine = range(first, self.n, step)
        while self.i < len(mine):
            self.i += 1
            yield mine[self.i - 1]
        self.i = 0

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]


def _uneven(items: list[int], index: int, count: int) -> NativeCheckpointableIterator:
    """Shard `index` of `count`: shard s gets s + 1 of every count * (count + 1) // 2 items."""
    period = count * (count + 1) // 2
    low = index * (index + 1) // 2
    return NativeCheckpointableIterator([x for x in items if low <= x % period < low + index + 1])


def _chunk(items: list[int], index: int, count: int) -> ChunkedSourceIterator:
    return ChunkedSourceIterator(items, num_instances=count, instance_rank=index)


def sharded(n: int, num_shards: int, uneven: bool = True) -> ShardedIterableDataset:
    """A ShardedIterableDataset over range(n), shards of unequal sizes unless `uneven` is False."""
    make = _uneven if uneven else _chunk
    return ShardedIterableDataset(partial(make, list(range(n))), num_shards)


# ---------------------------------------------------------------- the seed tutorial's classes


class TutorialSampler(Sampler[int]):
    """The tutorial's MySampler: `limit` random indices from its own generator, with a state."""

    def __init__(self, high: int, seed: int, limit: int) -> None:
        self.seed, self.high, self.limit = seed, high, limit
        self.g = torch.Generator()
        self.g.manual_seed(self.seed)
        self.i = 0

    def __iter__(self) -> Iterator[int]:
        while self.i < self.limit:
            val = int(torch.randint(high=self.high, size=(1,), generator=self.g))
            self.i += 1
            yield val

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.i = state_dict["i"]
        self.g.set_state(state_dict["rng"])

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "rng": self.g.get_state()}


class NoisyRange(Dataset[float]):
    """The tutorial's NoisyRange: its noise comes from the (worker's) global torch RNG."""

    def __init__(self, high: int, mean: float, std: float) -> None:
        self.high, self.mean, self.std = high, torch.tensor([float(mean)]), float(std)

    def __len__(self) -> int:
        return self.high

    def __getitem__(self, idx: int) -> float:
        if not (0 <= idx < self.high):
            raise IndexError()
        x = torch.normal(self.mean, self.std)
        return idx + x.item()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["rng"])

    def state_dict(self) -> dict[str, Any]:
        return {"rng": torch.get_rng_state()}


class TutorialIterable(IterableDataset[Any]):
    """The tutorial's MyIterableDataset: a shuffled range split over workers, with a position."""

    def __init__(self, high: int, seed: int) -> None:
        self.high, self.seed = high, seed
        self.g = torch.Generator()
        self.i = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        worker_info = get_worker_info()
        if worker_info is not None:
            worker_id, num_workers = worker_info.id, worker_info.num_workers
        else:
            worker_id, num_workers = 0, 1
        self.g.manual_seed(self.seed)
        arr = torch.randperm(self.high, generator=self.g)
        arr = arr[worker_id : self.high : num_workers]
        for idx in range(self.i, len(arr)):
            self.i += 1
            yield arr[idx]
        self.i = 0

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.i = state_dict["i"]


# ---------------------------------------------------------------- failures


class Faulty(Squares):
    """Raises for one index, in whatever process reads it."""

    def __getitem__(self, index: int) -> tuple[int, int]:
        if index == 7:
            raise ValueError(f"item {index} is broken")
        return super().__getitem__(index)


class Sleepy(Squares):
    """Sleeps `seconds` per item."""

    def __init__(self, n: int, seconds: float) -> None:
        super().__init__(n)
        self.seconds = seconds

    def __getitem__(self, index: int) -> tuple[int, int]:
        time.sleep(self.seconds)
        return super().__getitem__(index)


def unpicklable_collate(items: list[Any]) -> Any:
    return [lambda item=item: item for item in items]  # a lambda cannot be pickled


def failing_init(worker_id: int) -> None:
    raise RuntimeError(f"worker {worker_id} cannot start")
