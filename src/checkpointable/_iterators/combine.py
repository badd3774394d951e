"""Iterators reading from several sources: zip, multiplex, weighted mixing."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate
from typing import Any, ClassVar

from .._checks import require_int
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._state import state_int
from ._bijection import unit_float
from .base import CheckpointableIterator, Node, require_iterator, snapshot

__all__ = ["MultiplexIterator", "WeightedMixIterator", "ZipIterator"]


class _Combine(Node):
    """A `Node` over a list of sources, whose states nest in order under ``"sources"``."""

    _POSITION_KEYS: ClassVar[tuple[str, ...]] = ("sources",)

    def __init__(self, source_iterators: Sequence[CheckpointableIterator], name: str) -> None:
        owner = type(self).__name__
        if isinstance(source_iterators, CheckpointableIterator) or not isinstance(
            source_iterators, Sequence
        ):
            raise ArgumentTypeError(
                f"{owner}: {name} must be a list of CheckpointableIterators, "
                f"got {type(source_iterators).__name__}"
            )
        self._sources = [
            require_iterator(it, owner, f"{name}[{i}]") for i, it in enumerate(source_iterators)
        ]

    def _config(self) -> dict[str, Any]:
        return {"num_sources": len(self._sources)}

    def _position(self) -> dict[str, Any]:
        return {"sources": [snapshot(source) for source in self._sources]}

    def _restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            for source in self._sources:
                source.setstate(None)
            return
        states = state["sources"]
        if not isinstance(states, list) or len(states) != len(self._sources):
            raise IncompatibleStateError(
                f"{type(self).__name__}: the state's 'sources' must be a list of "
                f"{len(self._sources)} states, got {states!r:.80}"
            )
        for source, source_state in zip(self._sources, states, strict=True):
            source.setstate(source_state)

    def close(self) -> None:
        for source in self._sources:
            source.close()

    def _repr_args(self) -> dict[str, Any]:
        return {"sources": self._sources}


class ZipIterator(_Combine):
    """Yields tuples of one item from each source; stops with the shortest, like ``zip``.

    State: ``{"num_sources", "sources"}``; restoring is as cheap as restoring the sources.

    >>> from checkpointable.iterators import NativeCheckpointableIterator as N
    >>> list(ZipIterator(N([1, 2, 3]), N("ab")))
    [(1, 'a'), (2, 'b')]
    """

    def __init__(self, *source_iterators: CheckpointableIterator) -> None:
        super().__init__(source_iterators, "source_iterators")
        if not self._sources:
            raise ValueError("ZipIterator: give at least one source iterator")

    def __next__(self) -> tuple[Any, ...]:
        return tuple([next(source) for source in self._sources])


class MultiplexIterator(_Combine):
    """Yields the next item of the source whose index `control_iterator` yields.

    Args:
        control_iterator: yields indices into `source_iterators`.
        source_iterators: the sources.

    State: ``{"num_sources", "control", "sources"}``; restoring is as cheap as restoring the
    control and the sources.

    >>> from checkpointable.iterators import NativeCheckpointableIterator as N
    >>> list(MultiplexIterator(N([0, 1, 1, 0]), [N("ab"), N("xy")]))
    ['a', 'x', 'y', 'b']
    """

    _POSITION_KEYS = ("control", "sources")

    def __init__(
        self,
        control_iterator: CheckpointableIterator,
        source_iterators: Sequence[CheckpointableIterator],
    ) -> None:
        super().__init__(source_iterators, "source_iterators")
        self._control = require_iterator(control_iterator, type(self).__name__, "control_iterator")

    def __next__(self) -> Any:
        index = next(self._control)
        try:
            source = self._sources[index]
        except (IndexError, TypeError):
            raise ValueError(
                f"{type(self).__name__}: control_iterator yielded {index!r}, which is not an "
                f"index of the {len(self._sources)} source_iterators"
            ) from None
        return next(source)

    def _position(self) -> dict[str, Any]:
        return {"control": snapshot(self._control), **super()._position()}

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._control.setstate(None if state is None else state["control"])
        super()._restore(state)

    def close(self) -> None:
        self._control.close()
        super().close()


class WeightedMixIterator(_Combine):
    """Mixes sources at random in proportion to `weights`, exactly resumable.

    Each draw picks source ``i`` with probability ``weights[i] / sum(weights)`` among the sources
    not yet exhausted; the choice of draw ``k`` is a pure function of ``(seed, k)`` and the set of
    exhausted sources, so the state is a counter, not an RNG. An exhausted source drops out and
    the others keep their relative weights; the mix ends when every source with a positive
    weight is exhausted.

    Args:
        source_iterators: the sources.
        weights: one non-negative finite weight per source, not all zero.
        seed: chooses the sequence of draws.

    State: ``{"num_sources", "weights", "seed", "draws", "exhausted", "sources"}``; restoring is as
    cheap as restoring the sources.

    >>> from checkpointable.iterators import NativeCheckpointableIterator as N
    >>> mixed = list(WeightedMixIterator([N([0] * 5), N([1] * 5)], weights=[1, 3], seed=0))
    >>> sorted(mixed)
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    """

    _POSITION_KEYS = ("draws", "exhausted", "sources")

    def __init__(
        self,
        source_iterators: Sequence[CheckpointableIterator],
        weights: Sequence[float],
        seed: int = 0,
    ) -> None:
        super().__init__(source_iterators, "source_iterators")
        name = type(self).__name__
        if not self._sources:
            raise ValueError(f"{name}: source_iterators must not be empty")
        self._weights = _check_weights(name, weights, len(self._sources))
        self._seed = require_int(seed, name, "seed")
        self._restore(None)

    def __next__(self) -> Any:
        while self._bounds:
            u = unit_float(self._seed, self._draws) * self._bounds[-1]
            index = self._live[min(bisect_right(self._bounds, u), len(self._live) - 1)]
            try:
                item = next(self._sources[index])
            except StopIteration:
                self._exhausted[index] = True
                self._update_live()
                continue
            self._draws += 1
            return item
        raise StopIteration

    def _update_live(self) -> None:
        """Recompute the cumulative weights of the sources still able to yield."""
        self._live = [
            i for i, weight in enumerate(self._weights) if weight > 0 and not self._exhausted[i]
        ]
        self._bounds = list(accumulate(self._weights[i] for i in self._live))

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "weights": list(self._weights), "seed": self._seed}

    def _position(self) -> dict[str, Any]:
        return {"draws": self._draws, "exhausted": list(self._exhausted), **super()._position()}

    def _restore(self, state: dict[str, Any] | None) -> None:
        super()._restore(state)
        if state is None:
            self._draws = 0
            self._exhausted = [False] * len(self._sources)
        else:
            name = type(self).__name__
            self._draws = state_int(name, state, "draws")
            exhausted = state["exhausted"]
            if not (
                isinstance(exhausted, list)
                and len(exhausted) == len(self._sources)
                and all(isinstance(flag, bool) for flag in exhausted)
            ):
                raise IncompatibleStateError(
                    f"{name}: the state's 'exhausted' must be {len(self._sources)} bools, "
                    f"got {exhausted!r:.80}"
                )
            self._exhausted = list(exhausted)
        self._update_live()


def _check_weights(owner: str, weights: Any, count: int) -> list[float]:
    if isinstance(weights, str) or not isinstance(weights, Sequence):
        raise ArgumentTypeError(f"{owner}: weights must be a list of numbers, got {weights!r}")
    if len(weights) != count:
        raise ValueError(
            f"{owner}: weights must have one weight per source, got {len(weights)} weights "
            f"for {count} sources"
        )
    checked = []
    for i, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ArgumentTypeError(f"{owner}: weights[{i}] must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(
                f"{owner}: weights[{i}] must be finite and >= 0, got weights[{i}]={weight}"
            )
        checked.append(weight)
    if not any(checked):
        raise ValueError(f"{owner}: at least one weight must be positive, got weights={checked}")
    return checked
