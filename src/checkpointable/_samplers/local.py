"""The single-process samplers: a seeded random order and the sequential order."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import torch

from .._checks import require_seed
from .base import ResumableSampler, dataset_length, generator

__all__ = ["ResumableRandomSampler", "ResumableSequentialSampler"]


class ResumableRandomSampler(ResumableSampler):
    """Random sampler with resumable state: a drop-in replacement for torch's ``RandomSampler``.

    Epoch `e` yields ``torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))``,
    helios' order bit for bit, from the saved position on. Call ``set_epoch(e)`` before each
    epoch, or every epoch has the same order. After a resume, ``len()`` is still the whole
    epoch's length (schedules are computed from it), and the next epoch starts at its beginning.

    Args:
        data_source: the dataset to sample from (anything with ``__len__``).
        seed: the seed of the order, an int in ``[-2**63, 2**64)``.
        batch_size: the number of samples per batch (only `start_iter` depends on it).

    Raises:
        TypeError, ValueError: an argument has the wrong type or value.

    State: ``{"version", "type", "epoch", "dataset_length", "seed", "position"}``, plain ints:
    ``position`` counts the samples of epoch ``epoch`` already yielded. Restoring costs one
    ``randperm(n)`` (O(n) in C) at the first index, whatever the position; nothing is replayed.
    Loading a state saved with another ``dataset_length`` or ``seed`` raises
    `IncompatibleStateError`.

    >>> sampler = ResumableRandomSampler(range(6), seed=0, batch_size=2)
    >>> full = list(sampler)
    >>> it = iter(sampler)
    >>> first = [next(it), next(it)]
    >>> state = sampler.state_dict()
    >>> state["position"], sampler.start_iter
    (2, 1)
    >>> restored = ResumableRandomSampler(range(6), seed=0, batch_size=2)
    >>> restored.load_state_dict(state)
    >>> first + list(restored) == full
    True
    """

    def __init__(self, data_source: Sized, seed: int = 0, batch_size: int = 1) -> None:
        super().__init__(batch_size)
        name = type(self).__name__
        self._length = dataset_length(data_source, name, "data_source")
        self.data_source = data_source
        self._seed = require_seed(seed, name)

    @property
    def seed(self) -> int:
        """The seed of the order; epoch `e` is shuffled with ``seed + e``."""
        return self._seed

    def __len__(self) -> int:
        return self._length

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of `epoch` as a tensor (``randperm(n)`` seeded ``seed + epoch``)."""
        return torch.randperm(
            self._length, generator=generator(self._seed, epoch, type(self).__name__)
        )

    def _config(self) -> dict[str, Any]:
        return {"dataset_length": self._length, "seed": self._seed}


class ResumableSequentialSampler(ResumableSampler):
    """Sequential sampler with resumable state: a drop-in replacement for ``SequentialSampler``.

    Every epoch yields ``0, 1, ..., n - 1``, from the saved position on.

    Args:
        data_source: the dataset to sample from (anything with ``__len__``).
        batch_size: the number of samples per batch (only `start_iter` depends on it).

    Raises:
        TypeError, ValueError: an argument has the wrong type or value.

    State: ``{"version", "type", "epoch", "dataset_length", "position"}``, plain ints;
    restoring is O(1). Loading a state saved with another ``dataset_length`` raises
    `IncompatibleStateError`.

    >>> sampler = ResumableSequentialSampler(range(5), batch_size=2)
    >>> sampler.start_iter = 1  # helios' way: skip the first batch of this epoch
    >>> list(sampler)
    [2, 3, 4]
    >>> list(sampler)  # the next pass is a whole epoch again
    [0, 1, 2, 3, 4]
    """

    def __init__(self, data_source: Sized, batch_size: int = 1) -> None:
        super().__init__(batch_size)
        self._length = dataset_length(data_source, type(self).__name__, "data_source")
        self.data_source = data_source

    def __len__(self) -> int:
        return self._length

    def order(self, epoch: int) -> range:
        """``range(n)``, whatever the epoch."""
        return range(self._length)
