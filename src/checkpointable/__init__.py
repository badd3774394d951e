"""checkpointable: data loading that stops at any batch and resumes exactly.

Every public name is available here; the seed-shaped modules are ``checkpointable.iterators``
(infinibatch), ``checkpointable.samplers`` (helios), ``checkpointable.dataloader`` (torchdata),
``checkpointable.stream`` (zero), plus ``checkpointable.datasets`` and ``checkpointable.testing``.
"""

from ._errors import ArgumentTypeError, ArgumentValueError, IncompatibleStateError
from ._state import STATE_VERSION, Stateful
from .datasets import chunked_dataset_iterator, read_text_chunk
from .iterators import (
    BlockwiseShuffleIterator,
    BucketedReadaheadBatchIterator,
    BufferedShuffleIterator,
    CheckpointableIterator,
    ChunkedSourceIterator,
    FilterIterator,
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    MapIterator,
    MultiplexIterator,
    NativeCheckpointableIterator,
    ParallelMapIterator,
    PrefetchIterator,
    RandomAccessSourceIterator,
    RandomIterator,
    RecurrentIterator,
    SamplingRandomMapIterator,
    SelectManyIterator,
    WeightedMixIterator,
    WindowedIterator,
    ZipIterator,
    create_source_iterator,
)
from .samplers import (
    SAMPLER_REGISTRY,
    Registry,
    ResumableDistributedSampler,
    ResumableRandomSampler,
    ResumableSampler,
    ResumableSamplerType,
    ResumableSequentialSampler,
    create_sampler,
)
from .stream import Stream

__version__ = "0.1.0"

__all__ = [
    "SAMPLER_REGISTRY",
    "STATE_VERSION",
    "ArgumentTypeError",
    "ArgumentValueError",
    "BlockwiseShuffleIterator",
    "BucketedReadaheadBatchIterator",
    "BufferedShuffleIterator",
    "CheckpointableIterator",
    "ChunkedSourceIterator",
    "FilterIterator",
    "FixedBatchIterator",
    "IncompatibleStateError",
    "InfinitePermutationSourceIterator",
    "MapIterator",
    "MultiplexIterator",
    "NativeCheckpointableIterator",
    "ParallelMapIterator",
    "PrefetchIterator",
    "RandomAccessSourceIterator",
    "RandomIterator",
    "RecurrentIterator",
    "Registry",
    "ResumableDistributedSampler",
    "ResumableRandomSampler",
    "ResumableSampler",
    "ResumableSamplerType",
    "ResumableSequentialSampler",
    "SamplingRandomMapIterator",
    "SelectManyIterator",
    "Stateful",
    "Stream",
    "WeightedMixIterator",
    "WindowedIterator",
    "ZipIterator",
    "chunked_dataset_iterator",
    "create_sampler",
    "create_source_iterator",
    "read_text_chunk",
]
