"""Endless sources: every pass over the items a new permutation, resumable in one step."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from random import Random
from typing import Any

from .._checks import check_sharding, require_int, require_optional_int, short_repr
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._rng import decode_python_state
from .._state import state_int
from ._bijection import KeyedPermutation, mix64
from .base import CheckpointableIterator, Node, RandomState, require_items
from .sources import ChunkedSourceIterator

_END = object()

__all__ = [
    "InfinitePermutationSourceIterator",
    "RandomAccessSourceIterator",
    "create_source_iterator",
]


class _Passes(Node):
    """What the endless sources share: their configuration (the items, the order, the shard)."""

    def _configure(
        self, items: Sequence[Any], seed: Any, shuffle: bool, num_instances: int, rank: int
    ) -> None:
        self._num_items, self._seed, self._shuffle = len(items), seed, bool(shuffle)
        self._num_instances, self._instance_rank = num_instances, rank

    def _config(self) -> dict[str, Any]:
        return {
            "num_items": self._num_items,
            "seed": self._seed,
            "shuffle": self._shuffle,
            "num_instances": self._num_instances,
            "instance_rank": self._instance_rank,
        }


class InfinitePermutationSourceIterator(_Passes):
    """Endless passes over `source_items`, each pass a fresh random permutation.

    The order is infinibatch's: one ``random.Random(seed)`` is carried across passes and shuffles a
    fresh copy of the items at the start of each pass; instance `r` of `num_instances` takes the
    items ``r, r + num_instances, r + 2 * num_instances, ...`` of the concatenated passes. With
    ``shuffle=False`` this is a checkpointable ``itertools.cycle``.

    Args:
        source_items: the items, a non-empty list (held in memory).
        seed: seed of the shuffling RNG; None draws one at construction (the state still records
            the RNG, so a resume continues the same order).
        shuffle: False to serve the items in their order, pass after pass.
        num_instances: number of instances sharing the stream, e.g. processes.
        instance_rank: this instance, in ``range(num_instances)``.

    State: ``{"num_items", "seed", "shuffle", "num_instances", "instance_rank", "index",
    "random_state"}`` where ``random_state`` is the RNG state (plain lists, ~7 KB in JSON) before
    the current pass's shuffle. Restoring costs one shuffle of the items (O(len(source_items))),
    independent of the position.

    >>> it = InfinitePermutationSourceIterator([1, 2, 3], seed=0)
    >>> [next(it) for _ in range(6)]
    [1, 3, 2, 3, 2, 1]
    """

    _POSITION_KEYS = ("index", "random_state")
    _index: int
    _pass_random_wrapper: RandomState
    _pass: Any  # a list iterator over this rank's items of the pass; it counts them
    _pass_start: int  # the index of the pass's first item for this rank
    _pass_length: int  # how many items `_pass` serves in all

    def __init__(
        self,
        source_items: Sequence[Any],
        seed: int | None = 0,
        shuffle: bool = True,
        num_instances: int = 1,
        instance_rank: int = 0,
    ) -> None:
        name = type(self).__name__
        check_sharding(name, num_instances, instance_rank)
        require_items(name, source_items)
        require_optional_int(seed, name, "seed")
        self._items = list(source_items)
        self._configure(self._items, seed, shuffle, num_instances, instance_rank)
        self._random = Random(seed)
        self._initial_random_state = self._random.getstate()
        self._permutation: list[Any] | None = None
        self._pass_random_state = self._initial_random_state
        self._restore(None)

    _transient = ("_permutation", "_pass")

    def __next__(self) -> Any:
        item = next(self._pass, _END)
        if item is _END:  # the pass's end, or the first item after a restore
            self._turn()
            item = next(self._pass)
        return item

    def _stream(self) -> Iterator[Any]:
        if type(self).__next__ is not InfinitePermutationSourceIterator.__next__:
            return self  # a subclass that does more per item keeps its __next__
        iterator: Iterator[Any] = self._pass  # stops at the pass's end: the reader then calls
        return iterator  # next()

    def _turn(self) -> None:
        """Start serving: the restored pass, or the next pass once this one is served."""
        if self._permutation is None:
            self._start()
        else:
            self._index = self._pass_start + self._num_instances * self._pass_length
            self._next_passes()
        self._open_pass()

    def _open_pass(self) -> None:
        """`_pass` serves this rank's items of the permutation from `_index` on; it counts them
        (``__length_hint__``), so serving an item updates no index."""
        permutation, index, step = self._permutation, self._index, self._num_instances
        assert permutation is not None
        if step == 1:
            self._pass = iter(permutation)
            self._pass.__setstate__(index)
        else:
            self._pass = iter(permutation[index::step])
        self._pass_start = index
        self._pass_length = self._pass.__length_hint__()

    def _start(self) -> list[Any]:
        """Build the current pass's permutation from the RNG state recorded for it."""
        if self._shuffle:
            self._random.setstate(self._pass_random_state)
            permutation = self._items.copy()
            self._random.shuffle(permutation)
        else:
            permutation = self._items
        self._permutation = permutation
        return permutation

    def _next_passes(self) -> None:
        """Move to the pass holding `_index`; skipped passes still draw from the RNG."""
        n = len(self._items)
        while self._index >= n:
            self._index -= n
            if self._shuffle:
                self._pass_random_state = self._random.getstate()
                permutation = self._items.copy()
                self._random.shuffle(permutation)
                self._permutation = permutation

    def _position(self) -> dict[str, Any]:
        if self._permutation is not None:  # serving: read the index from the pass's iterator
            left = self._pass.__length_hint__()
            if not left:  # the pass is served: the position is the next pass's start
                self._turn()
                left = self._pass_length
            self._index = self._pass_start + self._num_instances * (self._pass_length - left)
        random_state = self._pass_random_wrapper if self._shuffle else None
        return {"index": self._index, "random_state": random_state}

    @property
    def _pass_random_state(self) -> tuple[Any, ...]:
        """The RNG state before the current pass's shuffle."""
        return self._pass_random_wrapper.value

    @_pass_random_state.setter
    def _pass_random_state(self, value: tuple[Any, ...]) -> None:
        self._pass_random_wrapper = RandomState(value)

    def _restore(self, state: dict[str, Any] | None) -> None:
        name = type(self).__name__
        if state is None:
            index, random_state = self._instance_rank, self._initial_random_state
        else:
            index = state_int(name, state, "index")
            if index >= len(self._items):
                raise IncompatibleStateError(
                    f"{name}: the state's index {index} is outside the {len(self._items)} items"
                )
            random_state = (
                decode_python_state(state["random_state"], name)
                if self._shuffle
                else self._initial_random_state
            )
        self._index = index
        self._pass_random_state = random_state
        self._permutation = None  # rebuilt lazily on the next item
        self._pass = iter(())
        self._pass_start, self._pass_length = index, 0
        if index >= len(self._items):  # more instances than items: skip to this rank's pass
            self._start()
            self._next_passes()
            self._open_pass()


class RandomAccessSourceIterator(_Passes):
    """Endless passes over a sequence, each pass a permutation computed index by index.

    For large random-access datasets: the permutation of pass ``p`` is a keyed bijection of
    ``range(len(data))`` chosen by ``(seed, p)`` and evaluated per index, so no list of indices is
    held in memory, and any position of any pass is reached in O(1). Instance `r` of
    `num_instances` takes the items ``r, r + num_instances, ...`` of the concatenated passes.

    Args:
        data: a non-empty sequence (``__len__`` and ``__getitem__``), e.g. a map-style dataset.
        seed: an int choosing the permutations.
        shuffle: False to serve ``data`` in its order, pass after pass.
        num_instances: number of instances sharing the stream, e.g. processes.
        instance_rank: this instance, in ``range(num_instances)``.

    State: ``{"num_items", "seed", "shuffle", "num_instances", "instance_rank",
    "num_items_yielded"}``; restoring is O(1) at any position.

    >>> it = RandomAccessSourceIterator(range(5), seed=3)
    >>> first_pass = [next(it) for _ in range(5)]
    >>> sorted(first_pass)
    [0, 1, 2, 3, 4]
    """

    _POSITION_KEYS = ("num_items_yielded",)

    def __init__(
        self,
        data: Sequence[Any],
        seed: int = 0,
        shuffle: bool = True,
        num_instances: int = 1,
        instance_rank: int = 0,
    ) -> None:
        name = type(self).__name__
        check_sharding(name, num_instances, instance_rank)
        if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
            raise ArgumentTypeError(
                f"{name}: data must be a sequence with __len__ and __getitem__, "
                f"got {type(data).__name__}"
            )
        require_items(name, data)
        require_int(seed, name, "seed")
        self._data = data
        self._configure(data, seed, shuffle, num_instances, instance_rank)
        self._pass = -1
        self._permutation: KeyedPermutation | None = None
        self._restore(None)

    def __next__(self) -> Any:
        position = self._instance_rank + self._num_items_yielded * self._num_instances
        pass_, index = divmod(position, len(self._data))
        if self._shuffle:
            permutation = self._permutation
            if permutation is None or pass_ != self._pass:
                permutation = KeyedPermutation(len(self._data), mix64(self._seed, pass_))
                self._permutation, self._pass = permutation, pass_
            index = permutation(index)
        item = self._data[index]
        self._num_items_yielded += 1
        return item

    def _position(self) -> dict[str, Any]:
        return {"num_items_yielded": self._num_items_yielded}

    def _restore(self, state: dict[str, Any] | None) -> None:
        name = type(self).__name__
        self._num_items_yielded = (
            0 if state is None else state_int(name, state, "num_items_yielded")
        )
        self._pass = -1
        self._permutation = None

    def _repr_args(self) -> dict[str, Any]:
        return {"data": short_repr(self._data), **self._config()}


def create_source_iterator(
    source_items: Sequence[Any],
    train: bool = True,
    seed: int | None = None,
    shuffle: bool = True,
    num_instances: int = 1,
    instance_rank: int = 0,
) -> CheckpointableIterator:
    """The source of a training (endless, shuffled) or an evaluation (one pass) pipeline.

    Returns an `InfinitePermutationSourceIterator` when `train`, else a `ChunkedSourceIterator`.

    Raises:
        ValueError: ``train=False`` with ``shuffle=True``: evaluation data is not shuffled.
    """
    check_evaluation("create_source_iterator", train, shuffle)
    if train:
        return InfinitePermutationSourceIterator(
            source_items, seed, shuffle, num_instances, instance_rank
        )
    return ChunkedSourceIterator(
        source_items, num_instances=num_instances, instance_rank=instance_rank
    )


def check_evaluation(owner: str, train: bool, shuffle: bool) -> None:
    """Refuse ``train=False`` with ``shuffle=True``: evaluation data is read in order."""
    if not train and shuffle:
        raise ValueError(
            f"{owner}: shuffling is not supported when train=False; "
            "pass shuffle=False for evaluation data"
        )
