"""Datasets written the way torchdata users write them (module level: workers import them)."""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info


def _share() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class RandomWalkIterator:
    """A stateful iterator whose randomness is in its state (its own generator)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.i = n, 0
        self.g = torch.Generator()
        self.g.manual_seed(seed)

    def __iter__(self) -> RandomWalkIterator:
        return self

    def __next__(self) -> tuple[int, int]:
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return self.i, int(torch.randint(1000, (), generator=self.g))

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "rng": self.g.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]
        self.g.set_state(torch.tensor(state["rng"], dtype=torch.uint8))


class StatefulIteratorDataset(IterableDataset[Any]):
    """The dataset has no state; the iterator its ``__iter__`` returns has one.

    With `random_seed`, each iterator draws its seed from the OS: only its saved state can bring
    its data back (a fast-forward of a new iterator gives other data).
    """

    def __init__(self, n: int, random_seed: bool = False) -> None:
        self.n = n
        self.random_seed = random_seed
        self.iter_calls = 0

    def __iter__(self) -> RandomWalkIterator:
        self.iter_calls += 1
        worker, _ = _share()
        seed = int.from_bytes(os.urandom(4), "little") if self.random_seed else 17 + worker
        return RandomWalkIterator(self.n + worker, seed)


class SelfIterating(IterableDataset[Any]):
    """Its own iterator, and ``__iter__`` resets its fields (torchdata's docs pattern)."""

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0

    def __iter__(self) -> SelfIterating:
        worker, workers = _share()
        self.mine = list(range(worker, self.n, workers))
        self.i = 0
        return self

    def __next__(self) -> int:
        if self.i >= len(self.mine):
            raise StopIteration
        self.i += 1
        return self.mine[self.i - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]


class ResettingIter(IterableDataset[Any]):
    """``__iter__`` (a plain method) resets the position, then returns a generator."""

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0

    def __iter__(self) -> Any:
        self.i = 0
        worker, workers = _share()
        return self._items(list(range(worker, self.n, workers)))

    def _items(self, mine: list[int]) -> Any:
        while self.i < len(mine):
            self.i += 1
            yield mine[self.i - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]


class Overlong(IterableDataset[Any]):
    """Reports 3 items but yields 5."""

    def __len__(self) -> int:
        return 3

    def __iter__(self) -> Any:
        worker, workers = _share()
        return iter(range(worker, 5, workers))

    def __repr__(self) -> str:
        return "Overlong()"


class Noisy(Dataset[Any]):
    """Map-style: each item draws from the worker's global torch RNG."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[int, float]:
        return index, float(torch.rand(()))


class SlowFirstWorker(IterableDataset[Any]):
    """Worker 0 sleeps before its first item; worker 1 is fast."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __iter__(self) -> Any:
        worker, workers = _share()
        for item in range(worker, self.n, workers):
            if worker == 0 and item == 0:
                time.sleep(self.delay)
            yield item


class SlowFirstItem(Dataset[Any]):
    """Map-style: item 0 sleeps."""

    def __init__(self, n: int, delay: float) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        if index == 0:
            time.sleep(self.delay)
        return index


def shuffled_pipe(n: int) -> Any:
    """An IterDataPipe that shuffles, sharded over the workers as torch's DataLoader shards it."""
    from torch.utils.data.datapipes.iter import IterableWrapper

    return IterableWrapper(range(n)).shuffle().sharding_filter()
