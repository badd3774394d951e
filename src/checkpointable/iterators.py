"""Checkpointable iterator pipelines: infinibatch's API, restored without replaying the data.

Build a pipeline from small iterators; ``getstate()`` (or ``state_dict()``) on the last one
returns the state of the whole pipeline as plain data, and ``setstate(state)`` (or
``load_state_dict``) on a freshly built pipeline continues exactly where it stopped.

>>> dataset = list(range(6))  # 0, 1, 2, 3, 4, 5
>>> it = NativeCheckpointableIterator(dataset)  # 0, 1, 2, 3, 4, 5
>>> it = MapIterator(it, lambda n: 2 * n)  # 0, 2, 4, 6, 8, 10
>>> it = FixedBatchIterator(it, batch_size=2)  # [0, 2], [4, 6], [8, 10]
>>> it = MapIterator(it, lambda l: l[1])  # 2, 6, 10
>>> for item in it:
...     print(item)
2
6
10

The seed's checkpointing example:

>>> dataset = list(range(6))  # 0, 1, 2, 3, 4, 5
>>> it = NativeCheckpointableIterator(dataset)  # 0, 1, 2, 3, 4, 5
>>> it = MapIterator(it, lambda n: 2 * n)  # 0, 2, 4, 6, 8, 10
>>> it = FixedBatchIterator(it, batch_size=2)  # [0, 2], [4, 6], [8, 10]
>>> it = MapIterator(it, lambda l: l[1])  # 2, 6, 10
>>> next(it)
2
>>> checkpoint = it.getstate()
>>> list(it)
[6, 10]
>>> next(it)
Traceback (most recent call last):
...
StopIteration
>>> it.setstate(checkpoint)
>>> next(it)
6
"""

from ._iterators.base import CheckpointableIterator
from ._iterators.bucketing import BucketedReadaheadBatchIterator
from ._iterators.combine import MultiplexIterator, WeightedMixIterator, ZipIterator
from ._iterators.parallel_map import ParallelMapIterator
from ._iterators.permutations import (
    InfinitePermutationSourceIterator,
    RandomAccessSourceIterator,
    create_source_iterator,
)
from ._iterators.prefetch import PrefetchIterator
from ._iterators.shuffle import BlockwiseShuffleIterator, BufferedShuffleIterator
from ._iterators.sources import ChunkedSourceIterator, NativeCheckpointableIterator, RandomIterator
from ._iterators.transforms import (
    FilterIterator,
    FixedBatchIterator,
    MapIterator,
    RecurrentIterator,
    SamplingRandomMapIterator,
    SelectManyIterator,
    WindowedIterator,
)

__all__ = [
    "BlockwiseShuffleIterator",
    "BucketedReadaheadBatchIterator",
    "BufferedShuffleIterator",
    "CheckpointableIterator",
    "ChunkedSourceIterator",
    "FilterIterator",
    "FixedBatchIterator",
    "InfinitePermutationSourceIterator",
    "MapIterator",
    "MultiplexIterator",
    "NativeCheckpointableIterator",
    "ParallelMapIterator",
    "PrefetchIterator",
    "RandomAccessSourceIterator",
    "RandomIterator",
    "RecurrentIterator",
    "SamplingRandomMapIterator",
    "SelectManyIterator",
    "WeightedMixIterator",
    "WindowedIterator",
    "ZipIterator",
    "create_source_iterator",
]
