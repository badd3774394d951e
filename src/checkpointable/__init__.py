"""checkpointable: data loading that stops at any batch and resumes exactly.

Every public name is available here; the seed-shaped modules are ``checkpointable.iterators``
(infinibatch), ``checkpointable.samplers`` (helios), ``checkpointable.dataloader`` (torchdata),
``checkpointable.stream`` (zero), plus ``checkpointable.datasets`` and ``checkpointable.testing``.
"""

from ._errors import ArgumentTypeError, ArgumentValueError, IncompatibleStateError
from ._state import STATE_VERSION, Stateful
from .dataloader import ShardedIterableDataset, StatefulDataLoader
from .iterators import (
    CheckpointableIterator,
    ChunkedSourceIterator,
    FilterIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    MapIterator,
    NativeCheckpointableIterator,
    RandomAccessSourceIterator,
    RandomIterator,
    RecurrentIterator,
    SamplingRandomMapIterator,
    SelectManyIterator,
    WindowedIterator,
    create_source_iterator,
)

__version__ = "0.1.0"

__all__ = [
    "STATE_VERSION",
    "ArgumentTypeError",
    "ArgumentValueError",
    "CheckpointableIterator",
    "ChunkedSourceIterator",
    "FilterIterator",
    "FixedBatchIterator",
    "IncompatibleStateError",
    "InfinitePermutationSourceIterator",
    "MapIterator",
    "NativeCheckpointableIterator",
    "RandomAccessSourceIterator",
    "RandomIterator",
    "RecurrentIterator",
    "SamplingRandomMapIterator",
    "SelectManyIterator",
    "ShardedIterableDataset",
    "Stateful",
    "StatefulDataLoader",
    "WindowedIterator",
    "create_source_iterator",
]
