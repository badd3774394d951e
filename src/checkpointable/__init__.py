"""checkpointable: data loading that stops at any batch and resumes exactly.

Every public name is available here; the seed-shaped modules are ``checkpointable.iterators``
(infinibatch), ``checkpointable.samplers`` (helios), ``checkpointable.dataloader`` (torchdata),
``checkpointable.stream`` (zero), plus ``checkpointable.datasets``, ``checkpointable.sources``
(shard files) and ``checkpointable.testing``.
"""

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # imported on first use (below), so that the torch-free parts load fast
    from .dataloader import ShardedIterableDataset, StatefulDataLoader
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
    from .sources import Mixture, PackedSequences, ShardedDataset, TokenArrayDataset
    from .stream import Stream

# Names whose modules import torch or tqdm: loaded on first access, so that
# `import checkpointable.iterators` (and every spawn worker of a pipeline) does not import torch.
_LAZY = {
    **dict.fromkeys(
        [
            "SAMPLER_REGISTRY",
            "Registry",
            "ResumableDistributedSampler",
            "ResumableRandomSampler",
            "ResumableSampler",
            "ResumableSamplerType",
            "ResumableSequentialSampler",
            "create_sampler",
        ],
        "samplers",
    ),
    "Mixture": "sources",
    "PackedSequences": "sources",
    "ShardedDataset": "sources",
    "TokenArrayDataset": "sources",
    "ShardedIterableDataset": "dataloader",
    "StatefulDataLoader": "dataloader",
    "Stream": "stream",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'checkpointable' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "Mixture",
    "MultiplexIterator",
    "NativeCheckpointableIterator",
    "PackedSequences",
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
    "ShardedDataset",
    "ShardedIterableDataset",
    "Stateful",
    "StatefulDataLoader",
    "Stream",
    "TokenArrayDataset",
    "WeightedMixIterator",
    "WindowedIterator",
    "ZipIterator",
    "chunked_dataset_iterator",
    "create_sampler",
    "create_source_iterator",
    "read_text_chunk",
]
