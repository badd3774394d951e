"""The distributed sampler: torch's partition of an epoch, resumable on another world size.

The epoch's canonical order is ``perm`` (``randperm(n)`` seeded ``seed + epoch``, or
``range(n)``), extended cyclically: canonical position ``c >= n`` holds ``perm[c % n]``, which
is exactly torch's padding. Torch gives rank ``r`` of ``R`` the positions ``r, r + R, r + 2R,
...``; once every rank has yielded ``k`` samples, the positions ``[0, k * R)`` are consumed, a
prefix. So the state records that prefix's length, ``progress`` (capped at ``n``), and a
restart on ``M`` ranks deals out the positions from ``progress`` on the same way: rank ``r``
takes ``progress + r + j * M`` for ``j < ceil((n - progress) / M)`` (``floor`` with
``drop_last``). With ``progress == 0`` that is torch's epoch, bit for bit; with ``M == R`` it is
the rest of the uninterrupted epoch; with any ``M`` every position ``< n`` is dealt exactly once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from functools import partial
from typing import Any, ClassVar, cast

import torch
import torch.distributed as dist
import torch.utils.data

from .._checks import require_bool, require_int, require_seed
from .._state import state_int
from .base import CHUNK, Cursor, ResumableMixin, dataset_length, generator, raise_beyond

__all__ = ["ResumableDistributedSampler"]


class ResumableDistributedSampler(ResumableMixin, torch.utils.data.DistributedSampler[int]):
    """Distributed sampler with resumable state, elastic across world sizes.

    An epoch that is not interrupted is the one of ``torch.utils.data.DistributedSampler``
    with the same arguments, bit for bit: the same shuffle (``randperm(n)`` seeded
    ``seed + epoch``), the same padding (repeating the head of the order) or ``drop_last``
    truncation, and rank ``r`` takes every ``num_replicas``-th index from ``r``.

    The state records the global progress through the epoch's order, not a per-rank offset, so
    it is the same on every rank (all ranks save at the same step) and loads on any number of
    ranks: the rest of the epoch is dealt out over the new ranks so that, over all ranks, every
    sample of the epoch is yielded exactly once counting before and after the resume (with
    ``drop_last=False`` only torch's padding repeats fewer than ``num_replicas`` samples; with
    ``drop_last=True`` fewer than ``num_replicas`` samples are left out). Every rank yields the
    same number of samples, so DDP stays in lockstep. ``batch_size`` may change too.

    Call ``set_epoch(e)`` before each epoch. ``len()`` is the per-rank length of a whole epoch
    (torch's ``num_samples``), also after a resume, because schedules are computed from it;
    after a resume on another world size the resumed epoch may be a little shorter or longer.
    Setting `start_iter` (helios' way) means: the epoch ran on this world size from its start
    and every rank has drawn `start_iter` batches.

    Args:
        dataset: the dataset to sample from (anything with ``__len__``).
        num_replicas: number of processes; default: the world size of the initialised
            ``torch.distributed`` process group.
        rank: this process's rank in ``range(num_replicas)``; default: its rank in the group.
        shuffle: shuffle the indices (else ``0, 1, ..., n - 1``).
        seed: the seed of the shuffle, the same on every rank.
        drop_last: drop the tail of the order so it divides evenly over the ranks, instead of
            padding it by repeating its head.
        batch_size: the number of samples per batch (only `start_iter` depends on it).

    Raises:
        TypeError, ValueError: an argument has the wrong type or value, or `num_replicas` /
            `rank` is left out without an initialised process group.

    State: ``{"version", "type", "epoch", "dataset_length", "seed", "shuffle", "drop_last",
    "progress", "position"}``: ``progress`` counts the positions of the epoch's order consumed
    over all ranks, ``position`` the samples this rank yielded in the epoch (the same on every
    rank). Restoring costs one ``randperm(n)`` at the first index, whatever the position.
    Loading a state saved with another dataset length, seed, shuffle or drop_last raises
    `IncompatibleStateError`.

    >>> ranks = [ResumableDistributedSampler(range(10), 2, r, seed=1) for r in range(2)]
    >>> iterators = [iter(s) for s in ranks]
    >>> seen = [next(it) for it in iterators for _ in range(2)]  # 2 samples on each rank
    >>> state = ranks[0].state_dict()
    >>> state == ranks[1].state_dict(), state["progress"]
    (True, 4)
    >>> resumed = [ResumableDistributedSampler(range(10), 3, r, seed=1) for r in range(3)]
    >>> for sampler in resumed:
    ...     sampler.load_state_dict(state)
    >>> rest = [list(sampler) for sampler in resumed]
    >>> [len(part) for part in rest]  # the remaining 6 samples over 3 ranks
    [2, 2, 2]
    >>> sorted(seen + sum(rest, []))
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    """

    _POSITION_KEYS: ClassVar[tuple[str, ...]] = ("epoch", "progress", "position")

    def __init__(
        self,
        dataset: Sized,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        batch_size: int = 1,
    ) -> None:
        name = type(self).__name__
        self._init_resumable(batch_size)
        self._segment_start = 0  # canonical position where the current segment starts
        self._base = 0  # samples this rank yielded in the epoch before the segment
        self._length = dataset_length(dataset, name, "dataset")
        require_bool(shuffle, name, "shuffle")
        require_bool(drop_last, name, "drop_last")
        require_seed(seed, name)
        if num_replicas is not None:
            require_int(num_replicas, name, "num_replicas", minimum=1)
        if rank is not None:
            require_int(rank, name, "rank", minimum=0)
        if num_replicas is None or rank is None:
            _require_process_group(name, num_replicas, rank)
        if num_replicas is not None and rank is not None and rank >= num_replicas:
            raise ValueError(f"{name}: rank must be < num_replicas, got {rank=}, {num_replicas=}")
        # torch's constructor fills in the defaults from the process group and sets the
        # attributes torch code reads (num_replicas, rank, num_samples, total_size...).
        # torch's constructor only takes len(dataset): any sized object will do, as documented
        torch_dataset = cast("torch.utils.data.Dataset[Any]", dataset)
        super().__init__(torch_dataset, num_replicas, rank, shuffle, seed, drop_last)

    def _chunks(self, cursor: Cursor, start: int) -> Iterator[Iterator[int]]:
        n, replicas, first = self._length, self.num_replicas, self._segment_start
        total = _segment_length(n - first, replicas, self.drop_last)
        own = first + self.rank  # canonical position of this rank's first sample
        real = min(total, max(0, -(-(n - own) // replicas)))  # those before the padding
        permutation = partial(self._permutation, self._epoch)
        return _rank_chunks(cursor, n, permutation, own, replicas, start, real, total)

    def _permutation(self, epoch: int) -> Any:
        """The epoch's order: ``None`` for ``range(n)``, else a 1-D integer tensor (or an object
        that slices like one, ``order[begin:end:step].tolist()`` and ``int(order[i])``)."""
        if not self.shuffle:
            return None
        shuffle = generator(self.seed, epoch, "ResumableDistributedSampler")
        return torch.randperm(self._length, generator=shuffle)

    @property
    def position(self) -> int:
        """Samples this rank yielded in the current epoch (the same on every rank)."""
        return self._base + self._offset()

    @property
    def progress(self) -> int:
        """Positions of the epoch's order consumed over all ranks."""
        first = self._segment_start
        return first + min(self._offset() * self.num_replicas, self._length - first)

    def _pass_length(self) -> int:
        """This rank's samples in the current segment (the position counts from its start)."""
        return _segment_length(
            self._length - self._segment_start, self.num_replicas, self.drop_last
        )

    def _rewind(self) -> None:
        self._segment_start = 0
        self._base = 0

    def _config(self) -> dict[str, Any]:
        return {
            "dataset_length": self._length,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def _position_state(self) -> dict[str, Any]:
        return {"progress": self.progress, "position": self.position}

    def _load_position(self, state: dict[str, Any]) -> None:
        name = type(self).__name__
        progress = state_int(name, state, "progress")
        if progress > self._length:
            raise_beyond(name, "progress", progress, self._length)
        self._segment_start = progress
        self._base = state_int(name, state, "position")

    def _repr_args(self) -> dict[str, Any]:
        config = self._config()
        length = config.pop("dataset_length")
        placement = {"num_replicas": self.num_replicas, "rank": self.rank}
        return {"dataset_length": length, **placement, **config, "batch_size": self._batch_size}


def _segment_length(remaining: int, replicas: int, drop_last: bool) -> int:
    """Samples per rank when `remaining` positions are dealt out over `replicas` ranks."""
    return remaining // replicas if drop_last else -(-remaining // replicas)


def _rank_chunks(
    cursor: Cursor,
    n: int,
    permutation: Callable[[], Any],
    own: int,
    replicas: int,
    start: int,
    real: int,
    total: int,
) -> Iterator[Iterator[int]]:
    """This rank's samples ``j`` in ``[start, total)``: canonical positions ``own + j * replicas``.

    The first `real` lie inside the order; the rest (at most one) are padding, ``perm[c % n]``.
    ``permutation()`` makes the order (see `ResumableDistributedSampler._permutation`) at the
    first ``next``.
    """
    if start >= total:
        return
    perm = permutation()
    for low in range(start, real, CHUNK):
        high = min(low + CHUNK, real)
        begin, end = own + low * replicas, own + (high - 1) * replicas + 1
        if perm is None:
            chunk: Iterator[int] = iter(range(begin, end, replicas))
        else:
            chunk = iter(perm[begin:end:replicas].tolist())
        cursor.chunk, cursor.end = chunk, high
        yield chunk
    for j in range(max(start, real), total):
        index = (own + j * replicas) % n
        chunk = iter([index if perm is None else int(perm[index])])
        cursor.chunk, cursor.end = chunk, j + 1
        yield chunk


def _require_process_group(name: str, num_replicas: int | None, rank: int | None) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        missing = "num_replicas" if num_replicas is None else "rank"
        raise ValueError(
            f"{name}: {missing}=None needs an initialised torch.distributed process group; "
            "call torch.distributed.init_process_group() first or pass num_replicas and rank"
        )
