"""`ShardedIterableDataset`: an iterable dataset made of independent, checkpointable shards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from .._checks import close, require_positive
from .._errors import ArgumentTypeError, IncompatibleStateError
from .indices import has_state

__all__ = ["ShardedIterableDataset"]


class ShardedIterableDataset(IterableDataset[Any]):
    """An iterable dataset made of `num_shards` independent streams, each with its own state.

    ``make_shard(shard_index, num_shards)`` returns the iterator of one shard, an iterator with
    ``state_dict`` / ``load_state_dict``: typically one of the ``checkpointable.iterators``
    pipelines started with ``num_instances=num_shards, instance_rank=shard_index``. It is called
    once per shard and epoch, in the process that reads the shard, so it must pickle under
    ``spawn`` (a module-level function or a ``functools.partial`` of one).

    In a `StatefulDataLoader` the loader, not the workers, decides the order: batch ``k`` comes
    from the next shard in round-robin order that is not exhausted (shard ``k % num_shards`` while
    all last), every batch from a single shard; worker ``w`` of ``num_workers`` reads the shards
    ``s`` with ``s % num_workers == w`` (the main process reads them all with ``num_workers=0``).
    So the batches do not depend on the number of workers, and the loader's state (each shard's
    state after its last delivered batch, and the round-robin position) loads into a loader with
    any ``num_workers`` and continues exactly.

    Iterated without that loader (``for item in dataset`` or a plain torch ``DataLoader``), each
    worker (or the main process) interleaves its shards item by item, skipping exhausted ones.

    Args:
        make_shard: ``make_shard(shard_index, num_shards)`` returns a shard's stateful iterator.
        num_shards: the number of shards, an int >= 1; more shards than workers keeps every
            worker busy.

    Raises:
        TypeError: `make_shard` is not callable, `num_shards` is not an int, or a shard has no
            ``state_dict`` / ``load_state_dict`` (raised when the shard is made).
        ValueError: `num_shards` < 1.

    >>> from functools import partial
    >>> from checkpointable.iterators import ChunkedSourceIterator
    >>> def shard(items, index, count):
    ...     return ChunkedSourceIterator(items, num_instances=count, instance_rank=index)
    >>> dataset = ShardedIterableDataset(partial(shard, list(range(6))), num_shards=2)
    >>> list(dataset)
    [0, 3, 1, 4, 2, 5]
    """

    def __init__(self, make_shard: Callable[[int, int], Iterator[Any]], num_shards: int) -> None:
        if not callable(make_shard):
            raise ArgumentTypeError(
                f"ShardedIterableDataset: make_shard must be callable as make_shard(shard_index, "
                f"num_shards), got {type(make_shard).__name__}"
            )
        require_positive(num_shards, "ShardedIterableDataset", "num_shards")
        self.make_shard = make_shard
        self.num_shards = num_shards

    def open_shard(self, shard_index: int) -> Any:
        """Make shard `shard_index`'s iterator and check that it is stateful."""
        shard = self.make_shard(shard_index, self.num_shards)
        if not has_state(shard) or not hasattr(shard, "__next__"):
            raise ArgumentTypeError(
                f"ShardedIterableDataset: make_shard({shard_index}, {self.num_shards}) returned a "
                f"{type(shard).__name__}; a shard must be an iterator with state_dict() and "
                "load_state_dict(), e.g. a checkpointable.iterators pipeline"
            )
        return shard

    def check_shard_state(self, shard_index: int, state: Any) -> None:
        """Load `state` into a fresh shard `shard_index`: a state the shard refuses is refused
        when the loader's state is loaded, not when the shard is read.

        Raises:
            IncompatibleStateError: the shard refused it (naming the shard and the reason).
        """
        if not isinstance(state, dict):  # None would restart the shard silently
            raise IncompatibleStateError(
                f"ShardedIterableDataset: the state of shard {shard_index} must be the dict its "
                f"state_dict() wrote, got {state!r:.60}"
            )
        shard = self.open_shard(shard_index)
        try:
            shard.load_state_dict(state)
        except (TypeError, ValueError) as error:
            raise IncompatibleStateError(
                f"ShardedIterableDataset: the state of shard {shard_index} does not load: {error}"
            ) from error
        finally:
            close(shard)

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        first, step = (0, 1) if info is None else (info.id, info.num_workers)
        live = [self.open_shard(index) for index in range(first, self.num_shards, step)]
        while live:
            still = []
            for shard in live:
                try:
                    item = next(shard)
                except StopIteration:
                    continue
                still.append(shard)
                yield item
            live = still

    def __repr__(self) -> str:
        return (
            f"ShardedIterableDataset(make_shard={self.make_shard!r}, num_shards={self.num_shards})"
        )
