"""Map-style datasets: the index lists of an epoch, drawn as torch draws them, and found again.

`IndexPlan` looks at the loader's sampler once and picks how a position is saved and restored:

- torch's own `SequentialSampler` and `RandomSampler` (alone or under torch's own
  `BatchSampler`): the loader produces their index stream itself, drawing from the same generator
  at the same moments as torch (so an uninterrupted run equals torch's), and seeks to a position
  by regenerating the epoch's permutation from the recorded seed or generator state: one
  ``randperm`` per pass over the dataset, whatever the position;
- a sampler or batch sampler with ``state_dict`` / ``load_state_dict``: its own state, taken
  right after each batch's indices are drawn, is loaded back, and nothing is replayed (a replayed
  draw would be wrong for an elastic sampler resumed on another world size: there the next
  batch is another share of the remaining samples). Once the epoch's indices have run out (a
  draw came up short or found nothing, or a batch sampler with a length gave that many
  batches), the state kept is the one from *before* the draw that ran them out, marked
  ``exhausted``, and loading it runs the sampler to its end again, discarding the indices: the
  sampler is then exactly as the uninterrupted run left it, whether it resets itself when it
  runs out or starts its next pass at its next ``iter()``. A batch sampler without ``__len__``
  that resets itself after its last full batch is the one case left: a state saved right after
  that batch starts its next pass.
- any other sampler: iterated again from the start of the epoch and its indices discarded up to
  the position (a replay of indices, never of data, costing O(position)). When the sampler has a
  ``generator`` attribute holding a `torch.Generator`, that generator's state at the start of the
  epoch is recorded and set back first, so that a random sampler replays the same order. When
  that attribute is None (torch's `SubsetRandomSampler`, `WeightedRandomSampler`: they draw from
  the global torch RNG at their first index), the global RNG's state at that first draw is
  recorded, and the replay draws under it before giving the caller's global RNG back.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from itertools import islice
from typing import Any, cast

import torch
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler

from .._errors import IncompatibleStateError
from .._rng import draw_seed, encode_torch_generator, restore_torch_generator
from .._state import StateBase
from .index_orders import (
    FirstDrawUnderGlobalRng,
    IndexOrder,
    IteratorOrder,
    RandomOrder,
    RangeOrder,
)

__all__ = [
    "RANDOM",
    "REPLAY",
    "SEQUENTIAL",
    "STATEFUL",
    "EpochIndices",
    "IndexPlan",
    "SamplerKind",
    "has_state",
]


class SamplerKind(str, Enum):
    """How `IndexPlan` finds a sampler's position again (see the module docstring)."""

    SEQUENTIAL = "sequential"  # torch's SequentialSampler: regenerated
    RANDOM = "random"  # torch's RandomSampler: regenerated from its seed or generator state
    STATEFUL = "stateful"  # the sampler's own state
    REPLAY = "replay"  # replayed from the epoch's start


SEQUENTIAL, RANDOM, STATEFUL, REPLAY = SamplerKind
_UNSEEN = object()  # no generator attribute seen yet


def has_state(obj: Any) -> bool:
    """Whether `obj` follows the ``state_dict`` / ``load_state_dict`` protocol."""
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


class IndexPlan:
    """How the index lists of a map-style loader are drawn, saved and found again.

    Args:
        index_sampler: the loader's ``batch_sampler`` when it batches, else its ``sampler``.
        auto_collation: whether the loader batches (``batch_size`` or ``batch_sampler`` given).
    """

    def __init__(self, index_sampler: Any, auto_collation: bool) -> None:
        exact_batcher = auto_collation and type(index_sampler) is BatchSampler
        #: The object whose position is tracked: the sampler under torch's own BatchSampler
        #: (whose batching the loader reproduces), else the index sampler itself.
        self.sampler: Any = index_sampler.sampler if exact_batcher else index_sampler
        #: The loader's own batch size, or None when `sampler` yields whole tasks.
        self.batch_size: int | None = index_sampler.batch_size if exact_batcher else None
        self.drop_last: bool = bool(index_sampler.drop_last) if exact_batcher else False
        self.user_batches = auto_collation and not exact_batcher
        kind = type(self.sampler)
        self.kind: SamplerKind
        if not self.user_batches and kind is SequentialSampler:
            self.kind = SEQUENTIAL
        elif not self.user_batches and kind is RandomSampler:
            self.kind = RANDOM
        elif has_state(self.sampler):
            self.kind = STATEFUL
        else:
            self.kind = REPLAY
        #: A replayed sampler that draws from the global torch RNG (its generator is None).
        # the sampler's generator attribute last seen, and whether it is a torch.Generator (an
        # isinstance through torch's metaclass costs ~1 us: done again only when it changes)
        self._seen: Any = _UNSEEN
        self._seen_generator: torch.Generator | None = None
        self.global_rng = self.kind == REPLAY and (
            hasattr(self.sampler, "generator") and self.sampler.generator is None
        )
        # torch calls iter() on the loader's index sampler when an epoch starts (before drawing the
        # workers' base seed); only its own BatchSampler, a generator, defers its sampler's iter()
        # to the first batch.
        self.iter_at_start = not exact_batcher

    def describe(self) -> str:
        """The sampler's kind and configuration, stored in the state and compared on load."""
        if self.kind == SEQUENTIAL:
            return "SequentialSampler"
        if self.kind == RANDOM:
            sampler = self.sampler
            return (
                f"RandomSampler(replacement={sampler.replacement}, "
                f"num_samples={sampler.num_samples})"
            )
        role = "batch sampler" if self.user_batches else "sampler"
        how = "stateful" if self.kind == STATEFUL else "replayed"
        return f"{type(self.sampler).__name__} ({how} {role})"

    @property
    def generator(self) -> torch.Generator | None:
        """The generator the index stream draws from (None: none, or the global RNG)."""
        if self.kind not in (RANDOM, REPLAY):
            return None
        generator = getattr(self.sampler, "generator", None)
        if generator is not self._seen:
            self._seen = generator
            self._seen_generator = generator if isinstance(generator, torch.Generator) else None
        return self._seen_generator

    def capture(self) -> Any:
        """The stateful sampler's state (`StateBase.nested_state`: the package's without its
        "version", another's as it gives it)."""
        return StateBase.nested_state(self.sampler)

    def restore(self, sampler_state: Any, exhausted: bool) -> None:
        """Load a stateful sampler's state; an `exhausted` one is run to its end again."""
        StateBase.load_nested(self.sampler, sampler_state)
        if exhausted:
            for _ in self.sampler:
                pass


class EpochIndices(Iterator[Any]):
    """The index lists (or single indices) of one epoch, from a position on, drawn lazily.

    Args:
        plan: the loader's `IndexPlan`.
        seed: the seed of this epoch's permutation when resuming it (torch's `RandomSampler`
            without a generator), else None: drawn from the global RNG at the first draw.
        generator_state: the state of the sampler's generator at this epoch's first draw when
            resuming it, else None: recorded at the first draw.
        start: the number of tasks (index lists) to draw and discard at the first draw: those
            already delivered in the epoch; 0 for a stateful sampler, whose loaded state is the
            one from after the last delivered task was drawn.
        record: an object whose ``seed`` and ``generator_state`` attributes are set when they
            are recorded (the loader's state), or None.
        exhausted: the epoch's index lists already ran out (a resumed stateful sampler): the
            epoch has no task left, whatever the sampler would now give.
        drawn: tasks of the epoch drawn before this object (a resumed stateful sampler).

    Attributes:
        exhausted: whether the index lists have run out: a draw came up short or found nothing,
            or a batch sampler with a length gave that many batches.
    """

    def __init__(
        self,
        plan: IndexPlan,
        seed: int | None,
        generator_state: dict[str, Any] | str | None,
        start: int,
        record: Any = None,
        exhausted: bool = False,
        drawn: int = 0,
    ) -> None:
        self.plan = plan
        self.exhausted = exhausted
        self._ended = exhausted
        self._drawn = drawn
        self._length: int | None = None
        if plan.batch_size is None and hasattr(plan.sampler, "__len__"):
            self._length = len(plan.sampler)
        self.seed = seed
        self.generator_state = generator_state
        self._start = start
        self._record = record
        self._stream: IndexOrder | None = None
        self._tasks: Iterator[Any] | None = None
        self._opened = False
        # A resumed user sampler is positioned now, so that the next draw is the next task's; a
        # stateful sampler's iterator is taken now, so that the state the loader takes at the
        # epoch's start is the new pass's (a sampler may start over only at its next iter()).
        if (plan.kind == STATEFUL and not exhausted) or (
            plan.kind == REPLAY and (plan.iter_at_start or start > 0)
        ):
            self._open()

    def __next__(self) -> Any:
        if self._ended:
            raise StopIteration
        if not self._opened:
            self._open()
        if self._tasks is not None:
            try:
                task = next(self._tasks)
            except StopIteration:
                self.exhausted = True
                raise
            self._drawn += 1
            if self._length is not None and self._drawn >= self._length:
                self.exhausted = True
            return task
        stream = cast(IndexOrder, self._stream)  # set by _open when there are no tasks
        size = self.plan.batch_size or 1
        items = stream.take(size)
        if len(items) < size:
            self.exhausted = True
            if not items or self.plan.drop_last:
                raise StopIteration
        return items if self.plan.batch_size is not None else items[0]

    def open(self) -> None:
        """Draw the epoch's order now (seed, generator state) instead of at the first batch."""
        if not self._opened and not self._ended:
            self._open()

    def _open(self) -> None:
        self._opened = True
        plan, sampler = self.plan, self.plan.sampler
        if plan.kind == SEQUENTIAL:
            self._stream = RangeOrder(len(sampler.data_source))
        elif plan.kind == RANDOM:
            self._stream = self._random_stream(sampler)
            if self._record is not None:
                self._record.seed = self.seed
        else:
            generator = getattr(sampler, "generator", None) if plan.kind == REPLAY else None
            if isinstance(generator, torch.Generator):
                self._sync(generator)
            iterator = iter(sampler)
            if plan.global_rng:
                iterator = FirstDrawUnderGlobalRng(iterator, self)
            if plan.batch_size is None:
                self._tasks = iterator
            else:
                self._stream = IteratorOrder(iterator)
        self._skip(self._start)

    def _random_stream(self, sampler: RandomSampler) -> RandomOrder:
        generator = sampler.generator
        private = generator is None
        if generator is None:
            if self.seed is None:  # as torch's RandomSampler.__iter__ does, at its first draw
                self.seed = draw_seed()
            generator = torch.Generator()
            generator.manual_seed(self.seed)
        else:
            self._sync(generator)
        n = len(sampler.data_source)
        return RandomOrder(n, sampler.num_samples, sampler.replacement, generator, private)

    def record_generator_state(self, text: dict[str, Any]) -> None:
        self.generator_state = text
        if self._record is not None:
            self._record.generator_state = text

    def _sync(self, generator: torch.Generator) -> None:
        """Record the generator's state at the epoch's first draw, or set the recorded one."""
        if self.generator_state is None:
            self.record_generator_state(encode_torch_generator(generator))
        else:
            restore_torch_generator(generator, self.generator_state, "StatefulDataLoader")

    def _skip(self, tasks: int) -> None:
        if tasks <= 0:
            return
        size = self.plan.batch_size
        if self._tasks is not None:
            done = sum(1 for _ in islice(self._tasks, tasks))
            self._drawn += done
            ok = done == tasks
        else:
            wanted = tasks * (size or 1)
            done = cast(IndexOrder, self._stream).skip(wanted)
            # A short skip is fine only when the last delivered batch was a partial one.
            ok = done == wanted or (
                size is not None and not self.plan.drop_last and done > wanted - size
            )
            done = -(-done // (size or 1))
        if not ok:
            raise IncompatibleStateError(
                f"StatefulDataLoader: the state is at batch {tasks} of its epoch, but the sampler "
                f"{self.plan.describe()} gives only {done} batches; it was saved over other data"
            )
