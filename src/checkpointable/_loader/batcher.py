"""Producing batches, the same way in a worker process and in the main process.

`fetch_map` reads one task of a map-style dataset as torch's fetcher does. `Batcher` is one source
of batches of an iterable-style dataset (a copy of a plain ``IterableDataset``, or one shard of a
`ShardedIterableDataset`): it batches and collates like torch, counts its batches, and attaches
a snapshot to a batch when one is due.

A snapshot is ``{"state": ..., "iterator_state": ...}``: the source's own ``state_dict()``
(None when it has none) and, as torchdata saves it, the ``state_dict()`` of the iterator that
``iter(source)`` returned when that iterator is another object with a state (None otherwise).
What a stream starts from is a snapshot, plus ``"shared_seed"`` for an ``IterDataPipe``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import IterDataPipe, get_worker_info
from torch.utils.data.graph_settings import apply_random_seed, apply_sharding

from .._state import StateBase
from .indices import has_state

__all__ = ["Batcher", "fetch_map", "prepare_datapipe"]


def prepare_datapipe(datapipe: Any, shared_seed: int | None) -> None:
    """What torch's DataLoader does to an ``IterDataPipe`` before iterating it: shard it over the
    workers (and ranks), and seed its random pipes (shuffles) from the epoch's shared seed, so
    that every worker shuffles alike and each epoch differently, as with torch."""
    info = get_worker_info()
    world, rank = (
        (dist.get_world_size(), dist.get_rank())
        if dist.is_available() and dist.is_initialized()
        else (1, 0)
    )
    if info is None:
        apply_sharding(datapipe, world, rank)
    else:
        apply_sharding(datapipe, info.num_workers * world, info.id * world + rank)
    if shared_seed is not None:
        rng = torch.Generator()
        rng.manual_seed(shared_seed)
        apply_random_seed(datapipe, rng)


def fetch_map(dataset: Any, task: Any, auto_collation: bool, collate_fn: Callable[..., Any]) -> Any:
    """Read the items of one task (an index list, or one index) and collate them."""
    if auto_collation:
        getitems = getattr(dataset, "__getitems__", None)
        data = getitems(task) if getitems else [dataset[index] for index in task]
    else:
        data = dataset[task]
    return collate_fn(data)


class Batcher:
    """Batches from one iterable source, with the source's state attached when a snapshot is due.

    Args:
        batch_size: items per batch, or None to yield items one by one (no auto-collation).
        drop_last: drop a last batch shorter than `batch_size`.
        collate_fn: the loader's ``collate_fn``.
        snapshot_every: attach the source's state to every n-th batch (and to the last one);
            0 or None: to the last one only.
    """

    def __init__(
        self,
        batch_size: int | None,
        drop_last: bool,
        collate_fn: Callable[..., Any],
        snapshot_every: int | None,
    ) -> None:
        self._batch_size = batch_size
        self._drop_last = drop_last
        self._collate_fn = collate_fn
        self._snapshot_every = snapshot_every or 0
        self.source: Any = None
        self.stateful = False  # the source or its iterator has a state: snapshots are taken
        self._source_stateful = False
        self._iterator_stateful = False
        self._iterator: Iterator[Any] = iter(())
        self._count = 0  # batches produced since the last snapshot (or the start)
        self.ended = True
        self._final_sent = False

    def start(self, source: Any, stateful: bool, snapshot: Any, load: bool, replay: int) -> None:
        """Begin an epoch: iterate `source`, load `snapshot` when `load`, skip `replay` batches.

        The source's state is loaded before ``iter(source)`` (an ``__iter__`` that reads it sees
        it, as in torchdata) and again after it (a source that is its own iterator, or whose
        ``__iter__`` resets its fields, keeps it); the iterator's state is loaded into the new
        iterator. The skipped batches are read again and discarded without collating them: the
        fast-forward of a source without state, or the batches delivered after the last
        snapshot.

        Args:
            source: the dataset copy or shard.
            stateful: whether `source` has ``state_dict`` / ``load_state_dict``.
            snapshot: a snapshot (see the module's docstring) or None.
            load: load `snapshot`.
            replay: batches to read again and discard.
        """
        self.source = source
        saved = snapshot if isinstance(snapshot, dict) else {}
        if isinstance(source, IterDataPipe):
            prepare_datapipe(source, saved.get("shared_seed"))
        load_source = load and stateful and "state" in saved
        if load_source:
            StateBase.load_nested(source, saved["state"])
        self._iterator = iterator = iter(source)
        if load_source:
            StateBase.load_nested(source, saved["state"])
        own = iterator is not source and has_state(iterator)
        if load and own and saved.get("iterator_state") is not None:
            StateBase.load_nested(iterator, saved["iterator_state"])
        self._source_stateful, self._iterator_stateful = stateful, own
        self.stateful = stateful or own
        self.ended = False
        self._final_sent = False
        self._count = 0
        size = self._batch_size or 1
        for _ in range(replay):
            taken = len(self._take(size))
            self._count += 1
            if taken < size:
                self.ended = True
                break

    def next(self) -> tuple[Any, Any, bool]:
        """Return the next batch, the state to attach (or None) and whether the stream ended.

        Raises:
            StopIteration: the source is exhausted (nothing left, or only a short batch with
                ``drop_last``).
        """
        if self.ended:
            raise StopIteration
        size = self._batch_size
        if size is None:
            try:
                data = next(self._iterator)
            except StopIteration:
                self.ended = True
                raise
            exhausted = False
        else:
            data = self._take(size)
            exhausted = len(data) < size
            if exhausted:
                self.ended = True
                if not data or self._drop_last:
                    raise StopIteration
        batch = self._collate_fn(data)
        self._count += 1
        state = None
        every = self._snapshot_every
        if self.stateful and (exhausted or (every and self._count % every == 0)):
            state = self.capture()
            self._count = 0
            self._final_sent = exhausted
        return batch, state, exhausted

    def _take(self, size: int) -> list[Any]:
        """Up to `size` next items, by ``next()`` only: `itertools.islice` would call ``iter()``
        on the iterator, which restarts a dataset that is its own iterator."""
        items: list[Any] = []
        iterator = self._iterator
        try:
            for _ in range(size):
                items.append(next(iterator))
        except StopIteration:
            pass
        return items

    def final_state(self) -> Any:
        """The snapshot once the source is exhausted (once per epoch), or None."""
        if not self.stateful or self._final_sent:
            return None
        self._final_sent = True
        return self.capture()

    def capture(self) -> dict[str, Any] | None:
        """A snapshot now (see the module's docstring), or None when nothing has a state."""
        if not self.stateful:
            return None
        iterator: Any = self._iterator
        return {
            "state": StateBase.nested_state(self.source) if self._source_stateful else None,
            "iterator_state": StateBase.nested_state(iterator) if self._iterator_stateful else None,
        }
