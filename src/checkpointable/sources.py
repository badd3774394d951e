"""Datasets over the files users already have: Parquet, JSONL and WebDataset tar shards,
flat token arrays, and the pretraining pieces that combine them (a weighted mixture, packing).

`ShardedDataset` reads local files or ``fsspec`` URLs (``s3://`` with the
``checkpointable[s3]`` extra), shuffles them without a buffer in the state, and resumes exactly
on any number of ranks and loader workers through its ``sampler``.
"""

from ._sources.dataset import ShardedDataset
from ._sources.mixture import Mixture
from ._sources.packing import PackedSequences
from ._sources.tokens import TokenArrayDataset

__all__ = ["Mixture", "PackedSequences", "ShardedDataset", "TokenArrayDataset"]
