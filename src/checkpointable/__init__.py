"""checkpointable: data loading that stops at any batch and resumes exactly.

Every public name is available here; the seed-shaped modules are ``checkpointable.iterators``
(infinibatch), ``checkpointable.samplers`` (helios), ``checkpointable.dataloader`` (torchdata),
``checkpointable.stream`` (zero), plus ``checkpointable.datasets``, ``checkpointable.sources``
(shard files) and ``checkpointable.testing``.
"""

# ruff: noqa: F401, F403 (the names are re-exported through the computed __all__)
import importlib
from typing import TYPE_CHECKING, Any

from ._errors import ArgumentTypeError, ArgumentValueError, IncompatibleStateError
from ._state import STATE_VERSION, Stateful
from .datasets import chunked_dataset_iterator, read_text_chunk
from .iterators import *
from .iterators import __all__ as _ITERATORS

if TYPE_CHECKING:  # imported on first use (below), so that the torch-free parts load fast
    from .dataloader import ShardedIterableDataset, StatefulDataLoader
    from .samplers import *
    from .sources import *
    from .stream import Stream

# Names whose modules import torch or tqdm: loaded on first access, so that
# `import checkpointable.iterators` (and every spawn worker of a pipeline) does not import torch.
_LAZY = {
    name: module
    for module, names in {
        "samplers": "SAMPLER_REGISTRY Registry ResumableDistributedSampler ResumableRandomSampler "
        "ResumableSampler ResumableSamplerType ResumableSequentialSampler create_sampler",
        "sources": "Mixture PackedSequences ShardedDataset TokenArrayDataset",
        "dataloader": "ShardedIterableDataset StatefulDataLoader",
        "stream": "Stream",
    }.items()
    for name in names.split()
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

# ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical
__all__ = sorted(
    [
        *_ITERATORS,
        *_LAZY,
        "STATE_VERSION",
        "ArgumentTypeError",
        "ArgumentValueError",
        "IncompatibleStateError",
        "Stateful",
        "chunked_dataset_iterator",
        "read_text_chunk",
    ],
    key=lambda name: (not name.isupper(), not name[0].isupper(), name),
)
