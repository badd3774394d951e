"""Ready-made pipelines: infinibatch's ``chunked_dataset_iterator`` and a chunk reader for text.

A corpus too large for memory is cut into chunk files (e.g. gzipped text, a few MB each). The
pipeline shuffles the list of chunks, reads chunks one at a time and shuffles their items with a
bounded buffer, so it needs the memory of one buffer, starts at once, and its state is a few
positions and RNG states however far it has run.
"""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ._checks import require_callable, require_positive
from ._iterators.base import CheckpointableIterator
from ._iterators.permutations import check_evaluation, create_source_iterator
from ._iterators.shuffle import BlockwiseShuffleIterator, BufferedShuffleIterator
from ._iterators.transforms import MapIterator, SelectManyIterator

__all__ = ["chunked_dataset_iterator", "read_text_chunk"]


def chunked_dataset_iterator(
    chunk_refs: Sequence[Any],
    read_chunk_fn: Callable[[Any], Iterator[Any]],
    buffer_size: int,
    train: bool = True,
    seed: int | None = None,
    shuffle: bool = True,
    use_windowed: bool = False,
    transform: Callable[[Any], Any] | None = None,
    prefetch: bool = False,
    num_instances: int = 1,
    instance_rank: int = 0,
) -> CheckpointableIterator:
    """Items of chunk files, shuffled at two levels, as infinibatch builds them.

    For training (``train=True``) the chunks are dealt to the instances in strides and repeated
    endlessly, each pass in a new random order. For evaluation (``train=False``, which requires
    ``shuffle=False``) each instance reads a contiguous part of the chunks once, so the outputs of
    the instances, concatenated in rank order, follow the original order of the items.

    The pipeline: `create_source_iterator` over `chunk_refs` -> `SelectManyIterator` reading each
    chunk with `read_chunk_fn` -> `PrefetchIterator` (if `prefetch`) -> `BlockwiseShuffleIterator`
    (or `BufferedShuffleIterator` if `use_windowed`) with seed ``seed + 1`` (if `shuffle`) ->
    `MapIterator` (if `transform`).

    Args:
        chunk_refs: references to the chunks (e.g. paths), a non-empty list.
        read_chunk_fn: maps a chunk reference to an iterator over its items, e.g.
            `read_text_chunk`. Under a ``spawn`` prefetcher it must be picklable.
        buffer_size: items buffered for shuffling (and prefetched, with `prefetch`).
        train: endless shuffled passes (True) or one ordered pass (False).
        seed: seed of the shuffles; None draws one (a resume still continues the same order).
        shuffle: shuffle the chunks and the items.
        use_windowed: shuffle items with `BufferedShuffleIterator` instead of blocks.
        transform: applied to each item.
        prefetch: read chunks ahead in a separate process.
        num_instances: number of instances (processes, ranks) sharing the data.
        instance_rank: this instance, in ``range(num_instances)``.

    Raises:
        ValueError: ``train=False`` with ``shuffle=True``, a bad `buffer_size`, an empty
            `chunk_refs`, or `instance_rank` outside ``range(num_instances)``.

    State: that of the last iterator of the pipeline; restoring re-reads at most one chunk and
    one shuffle buffer.

    >>> chunks = [["a", "b"], ["c"], ["d", "e"]]
    >>> it = chunked_dataset_iterator(chunks, iter, buffer_size=4, train=False, shuffle=False)
    >>> list(it)
    ['a', 'b', 'c', 'd', 'e']
    """
    require_positive(buffer_size, "chunked_dataset_iterator", "buffer_size")
    require_callable(read_chunk_fn, "chunked_dataset_iterator", "read_chunk_fn")
    check_evaluation("chunked_dataset_iterator", train, shuffle)
    chunks = create_source_iterator(chunk_refs, train, seed, shuffle, num_instances, instance_rank)
    samples: CheckpointableIterator = SelectManyIterator(chunks, collection_selector=read_chunk_fn)
    if prefetch:
        from .iterators import PrefetchIterator

        samples = PrefetchIterator(samples, buffer_size)
    if shuffle:
        item_seed = None if seed is None else seed + 1
        if use_windowed:
            samples = BufferedShuffleIterator(samples, buffer_size, item_seed)
        else:
            samples = BlockwiseShuffleIterator(samples, buffer_size, item_seed)
    if transform is not None:
        samples = MapIterator(samples, transform)
    return samples


def read_text_chunk(chunk_ref: str | Path, encoding: str = "utf-8") -> Iterator[str]:
    """Read a text chunk file, gzipped or not, and iterate over its lines (without newlines).

    The whole chunk is read at once: chunks are meant to be small (a few MB). Gzip is recognised
    by its magic bytes, whatever the file name.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "chunk.gz")
    >>> with gzip.open(path, "wt", encoding="utf-8") as f:
    ...     _ = f.write("one\\ntwo\\n")
    >>> list(read_text_chunk(path))
    ['one', 'two']
    """
    data = Path(chunk_ref).read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return iter(data.decode(encoding).splitlines())
