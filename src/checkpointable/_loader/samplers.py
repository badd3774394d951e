"""torchdata's stateful samplers: torch's `RandomSampler`, `BatchSampler`, `DistributedSampler`
with ``state_dict`` / ``load_state_dict``, drawing exactly torch's order.

A state is where the current pass is: how many indices (or samples) it gave, and what its order
was drawn from (a seed, or a generator's state, as base64 text): plain data, restored without
replaying any index (the random order is regenerated block by block, as `RandomOrder` does for
the loader). A loaded state applies to the next ``iter()``, which continues that pass. Once a
pass has ended (its iterator raised `StopIteration`), the state is the next pass's start, so the
next ``iter()`` starts a new pass, as torch's samplers do (torchdata's distributed sampler
resumed from such a state gives an empty epoch instead).
"""

from __future__ import annotations

from collections.abc import Iterator, Sized
from itertools import islice
from typing import Any, ClassVar

import torch
import torch.utils.data as tud

from .._errors import IncompatibleStateError
from .._rng import draw_seed, encode_torch_generator, restore_torch_generator
from .index_orders import RandomOrder
from .indices import has_state

__all__ = ["BatchSampler", "RandomSampler", "StatefulDistributedSampler"]


def _read(owner: str, state: Any, keys: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Check that `state` is a dict with exactly `keys`, each of one of its types."""
    if not isinstance(state, dict) or set(state) != set(keys):
        raise IncompatibleStateError(
            f"{owner}.load_state_dict: expected a dict with the keys {sorted(keys)}, got "
            f"{state!r:.80}"
        )
    for key, kinds in keys.items():
        value = state[key]
        if type(value) not in kinds or (type(value) is int and value < 0):
            raise IncompatibleStateError(
                f"{owner}.load_state_dict: {key!r} must be "
                f"{' or '.join(k.__name__ for k in kinds)} (>= 0), got {value!r:.60}"
            )
    return state


class RandomSampler(tud.RandomSampler):
    """torch's ``RandomSampler`` (same arguments, checks and order) with a resumable state.

    Without a `generator` each pass draws its seed from the global torch RNG at its first index,
    as torch's does; with one, the pass draws from it. The state records that seed (or the
    generator's state at the pass's start) and the indices given.

    State: ``{"seed", "generator_state", "yielded"}``; restoring regenerates the pass's order
    (one ``randperm`` per pass over the data), never replays indices.

    >>> torch.manual_seed(0) and None
    >>> sampler = RandomSampler(range(6))
    >>> it = iter(sampler)
    >>> first = [next(it), next(it)]
    >>> state = sampler.state_dict()
    >>> restored = RandomSampler(range(6))
    >>> restored.load_state_dict(state)
    >>> list(restored) == list(it)
    True
    """

    _KEYS: ClassVar[dict[str, tuple[type, ...]]] = {
        "seed": (int, type(None)),
        "generator_state": (dict, str, type(None)),
        "yielded": (int,),
    }

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(data_source, replacement, num_samples, generator)
        self._seed: int | None = None
        self._generator_state: dict[str, Any] | str | None = None
        self._yielded = 0
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[int]:
        pending, self._pending = self._pending, None
        n, total = len(self.data_source), self.num_samples
        seed = pending["seed"] if pending else None
        generator_state = pending["generator_state"] if pending else None
        start = pending["yielded"] if pending else 0
        # As torch's, the order is drawn at the first index (a generator function).
        if self.generator is None:
            if seed is None:
                seed = draw_seed()
            generator = torch.Generator()
            generator.manual_seed(seed)
        else:
            generator = self.generator
            if generator_state is None:
                generator_state = encode_torch_generator(generator)
            else:
                restore_torch_generator(generator, generator_state, "RandomSampler")
        self._seed, self._generator_state, self._yielded = seed, generator_state, start
        stream = RandomOrder(n, total, self.replacement, generator, self.generator is None)
        if start > stream.skip(start) or start > total:
            raise IncompatibleStateError(
                f"RandomSampler: the state is at index {start} of a pass of {total}; it was "
                "saved over other data"
            )
        while True:  # the end is detected by one more take, which draws what torch draws there
            taken = stream.take(1)
            if not taken:  # the pass is over: the state is now the next pass's start
                self._seed, self._yielded = None, 0
                self._generator_state = (
                    None if self.generator is None else encode_torch_generator(self.generator)
                )
                return
            self._yielded += 1
            yield taken[0]

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        return {
            "seed": self._seed,
            "generator_state": self._generator_state,
            "yielded": self._yielded,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(_read("RandomSampler", state_dict, self._KEYS))


class BatchSampler(tud.BatchSampler):
    """torch's ``BatchSampler`` (same arguments, checks and batches) with a resumable state.

    State: ``{"samples_yielded", "sampler_state", "sampler_done"}``: the indices taken from the
    sampler in the current pass, when the sampler has ``state_dict`` its state (loaded back:
    nothing is replayed), and whether the sampler's pass is over (only a last short batch was
    left to give); a sampler without state is iterated again and its first `samples_yielded`
    indices are discarded (a replay of indices, never of data).
    """

    _KEYS: ClassVar[dict[str, tuple[type, ...]]] = {
        "samples_yielded": (int,),
        "sampler_state": (dict, list, str, int, type(None)),
        "sampler_done": (bool,),
    }

    def __init__(self, sampler: Any, batch_size: int, drop_last: bool) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self._samples = 0
        self._done = False  # the sampler's pass is over; the last batch may still be given
        self._pending: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[list[int]]:
        pending, self._pending = self._pending, None
        sampler: Any = self.sampler
        stateful = has_state(sampler)
        skip = 0
        self._done = False
        self._samples = 0
        if pending is not None:
            if stateful and pending["sampler_state"] is not None:
                sampler.load_state_dict(pending["sampler_state"])
            else:
                skip = pending["samples_yielded"]
            if pending["sampler_done"]:  # only StopIteration was left
                return
            self._samples = pending["samples_yielded"]
        indices = iter(self.sampler)
        for _ in islice(indices, skip):
            pass
        batch: list[int] = []
        for index in indices:
            batch.append(index)
            self._samples += 1
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        self._done = True
        if batch and not self.drop_last:
            yield batch
        self._samples, self._done = 0, False  # the pass is over: the next iter() starts anew

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:
            return dict(self._pending)
        sampler: Any = self.sampler
        sampler_state = sampler.state_dict() if has_state(sampler) else None
        return {
            "samples_yielded": self._samples,
            "sampler_state": sampler_state,
            "sampler_done": self._done,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(_read("BatchSampler", state_dict, self._KEYS))


class StatefulDistributedSampler(tud.DistributedSampler):
    """torch's ``DistributedSampler`` (same arguments and order) with a resumable state.

    ``set_epoch`` stays the script's, as with torch; the state is the position in this rank's
    share of the epoch.

    State: ``{"yielded"}``; restoring skips that many indices of the rank's share (computed
    from the seed and epoch, no data read).
    """

    _KEYS: ClassVar[dict[str, tuple[type, ...]]] = {"yielded": (int,)}

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)
        self.yielded = 0
        self._pending: int | None = None

    def __iter__(self) -> Iterator[int]:
        start, self._pending = self._pending or 0, None
        self.yielded = start
        for index in islice(super().__iter__(), start, None):
            self.yielded += 1
            yield index
        self.yielded = 0  # the pass is over: the next iter() starts a new one

    def state_dict(self) -> dict[str, Any]:
        return {"yielded": self.yielded if self._pending is None else self._pending}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = _read("StatefulDistributedSampler", state_dict, self._KEYS)["yielded"]
