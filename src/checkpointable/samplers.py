"""Resumable samplers (helios' API): stop at any batch, continue with the next one.

A sampler's state is a few plain ints (the epoch, the seed, the position), so restoring never
replays the data: the next iterator draws the epoch's order once and starts at the position.
`ResumableDistributedSampler` records the global progress through the epoch, so a state saved
on N ranks resumes on M ranks with every sample still seen exactly once.

>>> sampler = create_sampler("ResumableRandomSampler", range(8), seed=3, batch_size=2)
>>> sampler.set_epoch(1)
>>> it = iter(sampler)
>>> batch = [next(it), next(it)]
>>> state = sampler.state_dict()  # save it with the model's checkpoint
>>> restored = ResumableRandomSampler(range(8), seed=3, batch_size=2)
>>> restored.load_state_dict(state)
>>> restored.set_epoch(1)  # the same epoch: the position is kept
>>> restored.start_iter
1
>>> list(restored) == list(it)
True
"""

from __future__ import annotations

from typing import Any

from ._samplers.base import ResumableSampler
from ._samplers.distributed import ResumableDistributedSampler
from ._samplers.local import ResumableRandomSampler, ResumableSequentialSampler
from ._samplers.registry import SAMPLER_REGISTRY, Registry

__all__ = [
    "SAMPLER_REGISTRY",
    "Registry",
    "ResumableDistributedSampler",
    "ResumableRandomSampler",
    "ResumableSampler",
    "ResumableSamplerType",
    "ResumableSequentialSampler",
    "create_sampler",
]

#: A resumable sampler derives from `ResumableSampler` or `ResumableDistributedSampler`.
ResumableSamplerType = ResumableSampler | ResumableDistributedSampler

for _sampler in (ResumableRandomSampler, ResumableSequentialSampler, ResumableDistributedSampler):
    SAMPLER_REGISTRY.register(_sampler)


def create_sampler(type_name: str, *args: Any, **kwargs: Any) -> ResumableSamplerType:
    """Create a sampler of the registered type `type_name` with these arguments.

    Register your own samplers first (``@SAMPLER_REGISTRY.register``).

    Raises:
        KeyError: no sampler is registered under `type_name`; the message lists the names.

    >>> create_sampler("ResumableSequentialSampler", range(3))
    ResumableSequentialSampler(dataset_length=3, batch_size=1)
    """
    sampler: ResumableSamplerType = SAMPLER_REGISTRY.get(type_name)(*args, **kwargs)
    return sampler
