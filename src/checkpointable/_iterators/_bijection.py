"""Keyed pseudo-random bijections of ``range(n)`` and a 64-bit mixing hash.

`KeyedPermutation(n, key)(i)` maps each index to a distinct index of ``range(n)``, computed per
index without a list of n indices in memory: a 4-round Feistel network on the smallest even
number of bits covering n, with cycle walking to stay inside ``range(n)`` (at most 4 walks on
average, since the network's domain is less than 4n). A Feistel network on a few bits is far from
uniform, so up to `TABLE_LIMIT` indices the permutation is an explicit shuffled table instead.
"""

from __future__ import annotations

from random import Random

#: Up to this many indices, a permutation is a shuffled list (a few KB) rather than a network.
TABLE_LIMIT = 4096

_MASK64 = (1 << 64) - 1
_MASK32 = (1 << 32) - 1


def mix64(*values: int) -> int:
    """Hash integers to a 64-bit integer (splitmix64 finaliser applied to each value in turn).

    >>> mix64(0) != mix64(1)
    True
    >>> 0 <= mix64(2**80, -5) < 2**64
    True
    """
    h = 0x9E3779B97F4A7C15
    for value in values:
        h = (h ^ (value & _MASK64) ^ (value >> 64 & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h


def unit_float(*values: int) -> float:
    """A float in [0, 1) that is a pure function of `values` (53 random bits)."""
    return (mix64(*values) >> 11) * (1.0 / (1 << 53))


class KeyedPermutation:
    """A bijection of ``range(n)`` chosen by `key`, evaluated index by index.

    >>> p = KeyedPermutation(10, key=7)
    >>> sorted(p(i) for i in range(10)) == list(range(10))
    True
    >>> [p(i) for i in range(10)] != list(range(10))
    True
    """

    __slots__ = ("_half", "_keys", "_mask", "_n", "_table")

    def __init__(self, n: int, key: int) -> None:
        if n <= 0:
            raise ValueError(f"KeyedPermutation: n must be positive, got n={n}")
        bits = max((n - 1).bit_length(), 2)
        bits += bits % 2
        if bits > 64:
            raise ValueError(f"KeyedPermutation: n must be at most 2**64, got n={n}")
        self._n = n
        self._table: list[int] | None = None
        if n <= TABLE_LIMIT:
            self._table = list(range(n))
            Random(key).shuffle(self._table)
        self._half = bits // 2
        self._mask = (1 << self._half) - 1
        self._keys = tuple(mix64(key, round_) & _MASK32 for round_ in range(4))

    def __call__(self, index: int) -> int:
        if self._table is not None:
            return self._table[index]
        half, mask, n = self._half, self._mask, self._n
        while True:
            left, right = index >> half, index & mask
            for key in self._keys:
                x = ((right ^ key) * 0x85EBCA6B) & _MASK32
                x ^= x >> 13
                x = (x * 0xC2B2AE35) & _MASK32
                x ^= x >> 16
                left, right = right, left ^ (x & mask)
            index = (left << half) | right
            if index < n:
                return index
