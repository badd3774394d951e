"""torchdata's ``torchdata.stateful_dataloader.sampler``: torch's samplers with a resumable state.

``from torchdata.stateful_dataloader.sampler import RandomSampler`` becomes
``from checkpointable.dataloader.sampler import RandomSampler``. Each draws exactly torch's order
(torchdata's `RandomSampler` seeds its own generator once instead) and keeps a plain-data state.
"""

from .._loader.samplers import BatchSampler, RandomSampler, StatefulDistributedSampler

__all__ = ["BatchSampler", "RandomSampler", "StatefulDistributedSampler"]
