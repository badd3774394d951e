"""`Mixture`: several map-style sources interleaved by weight, a pure function of the position.

Draw ``k`` of the mixture is computed, not replayed: the draws are cut into rounds of `period`
draws; a round holds each source ``s`` exactly ``quota[s]`` times (the weights rounded to
``period``), in an order permuted by ``randperm(period)`` seeded from ``(seed, start, round)``.
So draw ``k`` comes from source ``s = labels[k % period]`` and is that source's draw number
``counts[s] + round * quota[s] + (occurrences of s earlier in the round)``: O(1) in ``k``.
A source's draw ``j`` is row ``order(j // len) [j % len]`` of its own epoch order (the order of
its ``sampler`` when it is one of ours, ``range(len)`` otherwise). A weight change at a resume
starts a new entry of the schedule at the saved position; the counts at its start are computed
from the entries before it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils.data

from .._checks import require_int, require_seed
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._samplers.distributed import ResumableDistributedSampler
from .._state import state_int
from .sampler import placement
from .schedule import Schedule, quotas

__all__ = ["Mixture", "MixtureSampler", "source_order"]

NAME = "Mixture"
MODES = ("restart", "stop")
STRIDE = 1 << 40  # with exhausted="stop": index = epoch * STRIDE + draw


def source_order(dataset: Any, epoch: int) -> Any:
    """`dataset`'s rank-independent order of rows in `epoch`: its sampler's, or None (identity)."""
    sampler = getattr(dataset, "sampler", None)
    if isinstance(sampler, ResumableDistributedSampler):
        return sampler._permutation(epoch)
    return None


class Mixture(torch.utils.data.Dataset[Any]):
    """Several map-style sources interleaved by weight: deterministic, exact on any ranks.

    Pass it with its sampler::

        mix = Mixture({"web": web, "code": code}, weights={"web": 0.7, "code": 0.3}, seed=0)
        loader = StatefulDataLoader(mix, batch_size=8, sampler=mix.sampler, collate_fn=list)

    Draws: every round of `period` draws holds each source exactly its weight's share (rounded
    to ``1 / period``), in a shuffled order that is a pure function of ``(seed, round)``; so the
    delivered proportions equal the weights over every whole round. A source's draws walk its
    own epoch order (a `ShardedDataset`'s or `TokenArrayDataset`'s shuffle, ``range`` for a
    plain dataset). Item ``k`` is the item of the source that draw ``k`` picks, unchanged.

    Exhaustion: ``exhausted="restart"`` (default): a source that runs out starts its next
    epoch; the mixture never ends, and its sampler cuts it into epochs of ``sum(len(source))``
    draws. ``exhausted="stop"``: the mixture's epoch ends at the first draw that would find a
    source run out; the next epoch reads every source's next epoch, with the same draws.
    ``len(mixture)`` is the sources' rows together (fixed, so a loader's state loads whatever
    the weights); ``mixture.epoch_draws()`` is the draws of an epoch.

    Ranks: ``mixture.sampler`` is ``ResumableDistributedSampler``'s deal over the draws (rank
    ``r`` of ``R`` takes draws ``r + j * R``), so a state loads on any world size and any
    ``num_workers`` and continues exactly; ``sampler.advance(n)`` skips `n` draws per rank.

    New weights at a resume: build the mixture with the new weights and load the old state.
    The draws before the saved position (its ``progress``) keep the weights they had; from it
    on, the new weights apply: the schedule gets an entry ``{"start": progress, "weights"}``,
    whose rounds are seeded from ``(seed, start, round)``. Every rank computes the same
    schedule, so the result does not depend on the world size; a later resume carries it on.
    (With ``exhausted="stop"``, ``start`` is a draw of the epoch and holds in later epochs too.)

    Args:
        datasets: ``{name: dataset}``, each map-style with a ``len``.
        weights: ``{name: weight >= 0}`` for every source, not all 0; default: proportional to
            the sources' lengths.
        seed: the seed of the draws' order.
        exhausted: ``"restart"`` or ``"stop"``.
        period: draws per round (>= 1): weights are rounded to multiples of ``1 / period``.
        rank, world_size, drop_last: as `ShardedDataset`.

    Raises:
        TypeError, ValueError: a bad argument; a negative, non-finite or zero-sum weight; a
            name in `weights` that is not a source (named).

    State (of ``mixture.sampler``, < 1 KB): ``{"version", "type": "MixtureSampler", "epoch",
    "sources": {name: length}, "seed", "exhausted", "period", "drop_last", "schedule":
    [{"start", "weights"}], "drawn": {name: draws before progress}, "progress", "position"}``.
    Restoring computes the counts from the schedule (one round per entry), reads nothing.
    Loading a state of a mixture of other sources raises `IncompatibleStateError` naming both.

    >>> mix = Mixture({"a": ["a0", "a1", "a2"], "b": ["b0"]}, weights={"a": 3, "b": 1}, period=4)
    >>> [mix[i] for i in range(8)]  # each round of 4 draws: 3 from a, 1 from b
    ['a0', 'a1', 'b0', 'a2', 'b0', 'a0', 'a1', 'a2']
    """

    def __init__(
        self,
        datasets: Mapping[str, Any],
        weights: Mapping[str, Any] | None = None,
        seed: int = 0,
        *,
        exhausted: str = "restart",
        period: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(datasets, Mapping) or not datasets:
            raise ArgumentTypeError(
                f"{NAME}: datasets must be a non-empty dict {{name: dataset}}, got {datasets!r:.60}"
            )
        for name, dataset in datasets.items():
            if not isinstance(name, str):
                raise ArgumentTypeError(f"{NAME}: source names must be str, got {name!r}")
            if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
                raise ArgumentTypeError(
                    f"{NAME}: source {name!r} must be a map-style dataset (len and []), got "
                    f"{type(dataset).__name__}"
                )
            if len(dataset) == 0:
                raise ValueError(f"{NAME}: source {name!r} is empty")
        if exhausted not in MODES:
            raise ValueError(f"{NAME}: exhausted must be 'restart' or 'stop', got {exhausted!r}")
        self.datasets = dict(datasets)
        self.names = list(self.datasets)
        self.lengths = [len(self.datasets[name]) for name in self.names]
        self.seed = require_seed(seed, NAME)
        self.period = require_int(period, NAME, "period", minimum=1)
        self.exhausted = exhausted
        if weights is None:
            weights = dict(zip(self.names, self.lengths, strict=True))
        if not isinstance(weights, Mapping):
            raise ArgumentTypeError(
                f"{NAME}: weights must be a dict {{name: weight}}, got {weights!r}"
            )
        self.weights = quotas(weights, self.names, self.period)
        self.schedule = Schedule(
            self.names, self.seed, self.period, [{"start": 0, "weights": self.weights}]
        )
        self._orders: OrderedDict[tuple[int, int], Any] = OrderedDict()
        world_size, rank = placement(NAME, world_size, rank)
        self.sampler = MixtureSampler(self, world_size, rank, drop_last)

    def epoch_draws(self) -> int:
        """Draws per epoch: the sources' rows together ("restart"), or up to the first draw
        that finds a source run out ("stop"; it depends on the weights)."""
        if self.exhausted == "restart":
            return sum(self.lengths)
        return self.schedule.first_exhausted(self.lengths)

    def __len__(self) -> int:
        """The sources' rows together (fixed, whatever the weights); an epoch's draws per rank
        are ``len(mixture.sampler)``."""
        return sum(self.lengths)

    def set_schedule(self, entries: list[Any]) -> None:
        """Use `entries` (a state's ``"schedule"``) for the draws; the length follows."""
        self.schedule = Schedule(self.names, self.seed, self.period, entries)
        self._orders.clear()

    def _order(self, source: int, epoch: int) -> Any:
        key = (source, epoch)
        if key not in self._orders:
            self._orders[key] = source_order(self.datasets[self.names[source]], epoch)
            if len(self._orders) > 2 * len(self.names):
                self._orders.popitem(last=False)
        return self._orders[key]

    def locate(self, index: int) -> tuple[int, int]:
        """(source number, row of that source) of the sampler's index `index`."""
        if self.exhausted == "restart":
            source, drawn = self.schedule.draw(index)
            epoch, position = divmod(drawn, self.lengths[source])
        else:
            epoch, draw = divmod(index, STRIDE)
            source, position = self.schedule.draw(draw)
        order = self._order(source, epoch)
        return source, position if order is None else int(order[position])

    def __getitem__(self, index: int) -> Any:
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ArgumentTypeError(f"{NAME}: an index must be an int >= 0, got {index!r}")
        source, row = self.locate(index)
        return self.datasets[self.names[source]][row]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        located = [self.locate(index) for index in indices]
        out: list[Any] = [None] * len(indices)
        for source, name in enumerate(self.names):
            where = [i for i, (s, _) in enumerate(located) if s == source]
            if not where:
                continue
            dataset = self.datasets[name]
            rows = [located[i][1] for i in where]
            many = getattr(dataset, "__getitems__", None)
            items = many(rows) if many is not None else [dataset[row] for row in rows]
            for i, item in zip(where, items, strict=True):
                out[i] = item
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_orders"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        sources = {name: length for name, length in zip(self.names, self.lengths, strict=True)}
        return (
            f"{NAME}(sources={sources}, weights={self.weights}, seed={self.seed}, "
            f"exhausted={self.exhausted!r}, period={self.period})"
        )


class _Draws:
    """Epoch `epoch`'s sampler indices: ``base + i``, sliced like a tensor."""

    def __init__(self, base: int) -> None:
        self.base = base

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return torch.arange(self.base + key.start, self.base + key.stop, key.step or 1)
        return self.base + int(key)


class MixtureSampler(ResumableDistributedSampler):
    """The sampler of a `Mixture` (its ``.sampler``); see there for the state."""

    _POSITION_KEYS = ("epoch", "schedule", "drawn", "progress", "position")

    def __init__(
        self, mixture: Mixture, num_replicas: int | None, rank: int | None, drop_last: bool
    ) -> None:
        self._mixture = mixture
        super().__init__(mixture, num_replicas, rank, False, mixture.seed, drop_last)
        self._resize()

    _PASS_ENDS_EPOCH = True  # the mixture is a stream

    def _permutation(self, epoch: int) -> Any:
        mixture = self._mixture
        return _Draws(epoch * (len(mixture) if mixture.exhausted == "restart" else STRIDE))

    def _draw(self, progress: int) -> int:
        """The schedule's draw number of the epoch's position `progress`."""
        mixture = self._mixture
        return self._epoch * len(mixture) + progress if mixture.exhausted == "restart" else progress

    def _resize(self) -> None:
        """Take the mixture's epoch length again (torch's num_samples and total_size too)."""
        n, replicas = self._mixture.epoch_draws(), self.num_replicas
        self._length = n
        if self.drop_last and n % replicas:
            self.num_samples = -(-(n - replicas) // replicas)
        else:
            self.num_samples = -(-n // replicas)
        self.total_size = self.num_samples * replicas

    def _config(self) -> dict[str, Any]:
        mixture = self._mixture
        return {
            "sources": dict(zip(mixture.names, mixture.lengths, strict=True)),
            "seed": mixture.seed,
            "exhausted": mixture.exhausted,
            "period": mixture.period,
            "drop_last": self.drop_last,
        }

    def _position_state(self) -> dict[str, Any]:
        mixture = self._mixture
        progress = self.progress
        drawn = mixture.schedule.counts_at(self._draw(progress))
        return {
            "schedule": mixture.schedule.entries(),
            "drawn": dict(zip(mixture.names, drawn, strict=True)),
            **super()._position_state(),
        }

    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        """Another mixture's sources: both are named (new weights apply from the state on)."""
        saved, mine = state["sources"], config["sources"]
        if saved == mine:
            return None
        return f"{NAME}: the state was saved by a mixture of the sources {saved}, this mixture has {mine}"

    def _load_position(self, state: dict[str, Any]) -> None:
        mixture = self._mixture
        before = mixture.schedule.entries()
        try:
            self._load_schedule(state)
        except Exception:  # a refused state leaves the mixture as it was
            mixture.set_schedule(before)
            self._resize()
            raise

    def _load_schedule(self, state: dict[str, Any]) -> None:
        mixture = self._mixture
        mixture.set_schedule(_checked_schedule(state["schedule"], mixture))
        self._resize()
        progress = state_int(NAME, state, "progress")
        if progress > self._length:
            raise IncompatibleStateError(
                f"{NAME}: the state's progress {progress} lies beyond the epoch's {self._length} draws"
            )
        draw = self._draw(progress)
        drawn = dict(zip(mixture.names, mixture.schedule.counts_at(draw), strict=True))
        if state["drawn"] != drawn:
            raise IncompatibleStateError(
                f"{NAME}: the state's drawn {state['drawn']!r:.80} does not follow from its "
                f"schedule ({drawn})"
            )
        entries = mixture.schedule.entries()
        if entries[-1]["weights"] != mixture.weights:  # new weights: from the position on
            if entries[-1]["start"] == draw:
                entries[-1] = {"start": draw, "weights": mixture.weights}
            else:
                entries.append({"start": draw, "weights": mixture.weights})
            mixture.set_schedule(entries)
            self._resize()
        super()._load_position(state)

    def _repr_args(self) -> dict[str, Any]:
        placement = {"num_replicas": self.num_replicas, "rank": self.rank}
        return {**placement, **self._config(), "batch_size": self._batch_size}


def _checked_schedule(value: Any, mixture: Mixture) -> list[dict[str, Any]]:
    """A state's schedule, checked: entries with rising int starts and quotas for every source."""
    if not isinstance(value, list) or not value:
        raise IncompatibleStateError(f"{NAME}: the state's schedule must be a non-empty list")
    previous = -1
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"start", "weights"}:
            raise IncompatibleStateError(f"{NAME}: a schedule entry must be {{start, weights}}")
        start, weights = entry["start"], entry["weights"]
        if type(start) is not int or start <= previous or (previous < 0 and start != 0):
            raise IncompatibleStateError(f"{NAME}: schedule starts must rise from 0, got {start!r}")
        previous = start
        if (
            not isinstance(weights, dict)
            or sorted(weights) != sorted(mixture.names)
            or any(type(q) is not int or q < 0 for q in weights.values())
            or sum(weights.values()) != mixture.period
        ):
            raise IncompatibleStateError(
                f"{NAME}: schedule weights must give each source of {mixture.names} a count of "
                f"draws summing to period={mixture.period}, got {weights!r:.80}"
            )
    return value
