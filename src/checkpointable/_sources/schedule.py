"""The draws of a `Mixture`: rounds of `period` draws, each source its quota, shuffled per round.

Draw ``k`` is computed, not replayed: a round holds each source ``s`` exactly ``quota[s]``
times, in an order permuted by ``randperm(period)`` seeded from ``(seed, start, round)``; so
draw ``k`` is source ``s = labels[k % period]``'s draw number ``counts[s] + round * quota[s] +
(occurrences of s earlier in the round)``, O(1) in ``k``. A weight change starts a new entry
``(start, quotas)``; the counts at its start come from the entries before it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Mapping
from math import isfinite
from typing import Any

import torch

from .._errors import ArgumentTypeError
from .order import hashed_seed

__all__ = ["Schedule", "quotas"]

NAME = "Mixture"


def quotas(weights: Mapping[str, Any], names: list[str], period: int) -> dict[str, int]:
    """Each source's draws per round of `period`: the weights rounded by largest remainder."""
    unknown = [name for name in weights if name not in names]
    if unknown:
        raise ValueError(f"{NAME}: weights name unknown source(s) {unknown}; sources: {names}")
    missing = [name for name in names if name not in weights]
    if missing:
        raise ValueError(f"{NAME}: weights lack the source(s) {missing}; give each a weight")
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ArgumentTypeError(
                f"{NAME}: the weight of {name!r} must be a number, got {weight!r}"
            )
        if not isfinite(weight) or weight < 0:
            raise ValueError(f"{NAME}: weights must be finite and >= 0, got {name!r}: {weight}")
    total = sum(weights[name] for name in names)
    if total <= 0:
        raise ValueError(f"{NAME}: the weights sum to {total}; at least one must be > 0")
    exact = [weights[name] * period / total for name in names]
    share = [int(x) for x in exact]
    by_remainder = sorted(range(len(names)), key=lambda i: (share[i] - exact[i], i))
    for i in by_remainder[: period - sum(share)]:
        share[i] += 1
    for name, count in zip(names, share, strict=True):
        if count == 0 and weights[name] > 0:
            raise ValueError(
                f"{NAME}: the weight of {name!r} ({weights[name]}) rounds to 0 draws in a round "
                f"of period={period}; raise period"
            )
    return dict(zip(names, share, strict=True))


class Schedule:
    """The entries ``(start, quotas)`` of a mixture and the draw arithmetic over them."""

    def __init__(self, names: list[str], seed: int, period: int, entries: list[Any]) -> None:
        self.names, self.seed, self.period = names, seed, period
        self.starts = [int(entry["start"]) for entry in entries]
        self.quotas = [[int(entry["weights"][name]) for name in names] for entry in entries]
        self._rounds: OrderedDict[tuple[int, int], tuple[list[int], list[int]]] = OrderedDict()
        self.counts: list[list[int]] = [[0] * len(names)]
        for k in range(1, len(entries)):
            self.counts.append(self._counts_in(k - 1, self.starts[k]))

    def entries(self) -> list[dict[str, Any]]:
        return [
            {"start": start, "weights": dict(zip(self.names, quota, strict=True))}
            for start, quota in zip(self.starts, self.quotas, strict=True)
        ]

    def _round(self, k: int, round_: int) -> tuple[list[int], list[int]]:
        """(source, rank among that source's draws) of each draw of round `round_` of entry k."""
        found = self._rounds.get((k, round_))
        if found is None:
            base = torch.repeat_interleave(
                torch.arange(len(self.names)), torch.tensor(self.quotas[k])
            )
            seeded = torch.Generator().manual_seed(
                hashed_seed("mixture", self.seed, self.starts[k], round_)
            )
            labels = base[torch.randperm(self.period, generator=seeded)].tolist()
            seen = [0] * len(self.names)
            ranks = []
            for label in labels:
                ranks.append(seen[label])
                seen[label] += 1
            found = (labels, ranks)
            self._rounds[(k, round_)] = found
            if len(self._rounds) > 8:
                self._rounds.popitem(last=False)
        return found

    def _counts_in(self, k: int, position: int) -> list[int]:
        """Draws of each source before `position`, inside entry k."""
        round_, offset = divmod(position - self.starts[k], self.period)
        labels = self._round(k, round_)[0][:offset]
        return [
            base + round_ * quota + labels.count(s)
            for s, (base, quota) in enumerate(zip(self.counts[k], self.quotas[k], strict=True))
        ]

    def counts_at(self, position: int) -> list[int]:
        return self._counts_in(bisect_right(self.starts, position) - 1, position)

    def draw(self, position: int) -> tuple[int, int]:
        """(source, that source's draw number) of draw `position`."""
        k = bisect_right(self.starts, position) - 1
        round_, offset = divmod(position - self.starts[k], self.period)
        labels, ranks = self._round(k, round_)
        s = labels[offset]
        return s, self.counts[k][s] + round_ * self.quotas[k][s] + ranks[offset]

    def first_exhausted(self, lengths: list[int]) -> int:
        """The first draw that would ask a source for its row ``len``: the end in "stop" mode."""
        for k, start in enumerate(self.starts):
            end = self.starts[k + 1] if k + 1 < len(self.starts) else None
            best = None
            for s, (length, quota) in enumerate(zip(lengths, self.quotas[k], strict=True)):
                if quota == 0:
                    continue
                round_, rank = divmod(length - self.counts[k][s], quota)
                labels, ranks = self._round(k, round_)
                offset = next(
                    o
                    for o, (a, b) in enumerate(zip(labels, ranks, strict=True))
                    if (a, b) == (s, rank)
                )
                at = start + round_ * self.period + offset
                best = at if best is None else min(best, at)
            if best is not None and (end is None or best < end):
                return best
        raise AssertionError("unreachable: the last entry ends")  # pragma: no cover
