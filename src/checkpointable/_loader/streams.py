"""Producing batches, the same way in a worker process and in the main process.

`fetch_map` reads one task of a map-style dataset as torch's fetcher does. `Stream` is one source
of batches of an iterable-style dataset (a copy of a plain ``IterableDataset``, or one shard of a
`ShardedIterableDataset`): it batches and collates like torch, counts its batches, and attaches
the source's state to a batch when a snapshot is due.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

__all__ = ["Stream", "fetch_map"]


def fetch_map(dataset: Any, task: Any, auto_collation: bool, collate_fn: Callable[..., Any]) -> Any:
    """Read the items of one task (an index list, or one index) and collate them."""
    if auto_collation:
        getitems = getattr(dataset, "__getitems__", None)
        data = getitems(task) if getitems else [dataset[index] for index in task]
    else:
        data = dataset[task]
    return collate_fn(data)


class Stream:
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
        self.stateful = False
        self._iterator: Iterator[Any] = iter(())
        self._count = 0  # batches produced since the last snapshot (or the start)
        self.ended = True
        self._final_sent = False

    def start(self, source: Any, stateful: bool, state: Any, load: bool, replay: int) -> None:
        """Begin an epoch: load `state` when `load`, iterate `source`, skip `replay` batches.

        The skipped batches are read from the source again and discarded without collating
        them: the fast-forward of a source without state, or the batches delivered after the
        last snapshot.
        """
        self.source = source
        self.stateful = stateful
        if load and stateful:
            source.load_state_dict(state)
        self._iterator = iter(source)
        self.ended = False
        self._final_sent = False
        self._count = 0
        size = self._batch_size or 1
        for _ in range(replay):
            taken = sum(1 for _ in islice(self._iterator, size))
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
            data = list(islice(self._iterator, size))
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
            state = self.source.state_dict()
            self._count = 0
            self._final_sent = exhausted
        return batch, state, exhausted

    def final_state(self) -> Any:
        """The source's state once it is exhausted (once per epoch), or None."""
        if not self.stateful or self._final_sent:
            return None
        self._final_sent = True
        return self.source.state_dict()

    def capture(self) -> Any:
        """The source's state now (main process, no read-ahead), or None without state."""
        return self.source.state_dict() if self.stateful else None

    @property
    def unsnapshotted(self) -> int:
        """Batches produced since the last snapshot (all of them without state)."""
        return self._count
