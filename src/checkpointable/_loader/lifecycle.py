"""The loader's run-time machine: where it is (`Phase`) and what each ``iter()`` does from there.

`Lifecycle` owns what changes while the loader runs: the epoch iterator (held weakly: an
iterator the script drops is an abandoned epoch), the persistent workers, and a loaded state
waiting for the next ``iter()``. `StatefulDataLoader` checks its arguments and delegates; the
epoch modules get the typed `LoaderParts` and `EpochOptions`, never the loader.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from enum import Enum
from typing import Any

from torch.utils.data import IterDataPipe

from .._errors import IncompatibleStateError
from .._rng import draw_seed
from .epochs import (
    Reader,
    load_main_process_states,
    main_epoch,
    restart_main_process_iterable,
    worker_epoch,
)
from .indices import RANDOM, STATEFUL, EpochIndices
from .main_epochs import MainMapEpoch, MainSourceEpoch
from .parts import DatasetKind, EpochOptions, LoaderParts
from .pool import WorkerPool
from .skipping import cut_epoch, cut_shards
from .worker_epochs import WorkerEpoch

__all__ = ["Lifecycle", "Phase"]

Epoch = MainMapEpoch | MainSourceEpoch | WorkerEpoch


class Phase(Enum):
    """Where the loader is, as its next ``iter()`` sees it."""

    BETWEEN_EPOCHS = "between epochs"  # fresh, or an epoch ended: iter() starts the next one
    IN_EPOCH = "in epoch"  # an epoch began and did not end: iter() abandons it, starts the next
    LOADED = "loaded"  # a state loaded at an epoch boundary: iter() starts the epoch it fixes
    LOADED_IN_EPOCH = "loaded in epoch"  # a state loaded inside an epoch: iter() continues it


class Lifecycle:
    """The loader's epoch iterator, persistent workers and loaded state, and the transitions
    between its phases: `iterate` (``iter(loader)``), `load`, `skip`, `close`."""

    def __init__(self, parts: LoaderParts, reader: Reader) -> None:
        self.parts, self.reader = parts, reader
        self.pool: WorkerPool | None = None  # persistent workers
        self._epoch: weakref.ref[Epoch] | None = None

    @property
    def phase(self) -> Phase:
        in_epoch = self.parts.state.in_epoch
        if self.reader.pending:  # a loaded state waits for the next iter()
            return Phase.LOADED_IN_EPOCH if in_epoch else Phase.LOADED
        return Phase.IN_EPOCH if in_epoch else Phase.BETWEEN_EPOCHS

    def iterate(self, options: EpochOptions) -> Iterator[Any]:
        """``iter(loader)``: continue a loaded epoch, or start the next one."""
        self._stop_epoch()
        phase, self.reader.pending = self.phase, False
        plan = self.parts.plan
        self.reader.epoch_batches = self.parts.epoch_length() if plan is not None else None
        if phase in (Phase.LOADED, Phase.LOADED_IN_EPOCH):
            load_main_process_states(self.parts, self.reader, options.num_workers)
        pool = self.pool if self.pool is not None and self.pool.alive else None
        pool = pool if options.persistent_workers else None  # persistent workers kept alive
        continuing = phase is Phase.LOADED_IN_EPOCH
        if continuing:
            indices = self._continue_loaded_epoch()
        else:
            indices = self._start_epoch(options, phase, reuse_pool=pool is not None)
        return self._open_epoch(options, indices, continuing, pool)

    def _continue_loaded_epoch(self) -> EpochIndices | None:
        """A state loaded inside an epoch: its position, its seeds (a base seed drawn now if the
        state has none)."""
        indices = self._indices(continuing=True)
        if self.parts.state.base_seed is None:
            self.parts.state.base_seed = draw_seed(None)
        return indices

    def _start_epoch(
        self, options: EpochOptions, phase: Phase, reuse_pool: bool
    ) -> EpochIndices | None:
        """Begin the next epoch (ending an abandoned one), cut a skip carried over, take its
        index lists, and draw its seeds."""
        seeds = self._begin_epoch(options, phase)
        cut = self._cut(record=False) if self.parts.state.skip_pending else 0
        indices = self._indices(continuing=False)
        self._draw_seeds(options, seeds, phase, reuse_pool)
        if cut and indices is not None and indices.plan.kind == RANDOM:
            indices.open()  # the skipped epoch's order is drawn now, as its first batch would
        return indices

    def _begin_epoch(self, options: EpochOptions, phase: Phase) -> dict[str, int | None]:
        """End an abandoned epoch, begin the next; the seeds the last boundary's state fixed."""
        state = self.parts.state
        if options.num_workers == 0:
            restart_main_process_iterable(self.parts, self.reader)
        if phase is Phase.IN_EPOCH:  # the previous epoch was abandoned
            state.end_epoch()
        state.start_epoch(carry=options.persistent_workers and options.num_workers > 0)
        seeds, state.next_seeds = state.next_seeds or {}, None
        state.seed = seeds.get("sampler_seed")
        return seeds

    def _draw_seeds(
        self, options: EpochOptions, seeds: dict[str, int | None], phase: Phase, reuse_pool: bool
    ) -> None:
        """Draw a new epoch's seeds as torch does, after its index sampler's iter(): an
        ``IterDataPipe``'s shared seed, then the workers' base seed (unless `seeds` fixed it or
        persistent workers keep theirs)."""
        state, generator = self.parts.state, options.generator
        pipe = isinstance(self.parts.dataset, IterDataPipe)  # no index lists: nothing between
        if pipe:  # torch's shared seed for the pipe's shuffles: drawn first, at every iter()
            state.shared_seed = draw_seed(generator)
        reused = options.persistent_workers and reuse_pool
        kept = options.persistent_workers and phase is Phase.LOADED and state.base_seed is not None
        if not (reused or kept):
            base_seed = seeds.get("base_seed")
            state.base_seed = draw_seed(generator) if base_seed is None else base_seed
        if pipe and options.num_workers > 0 and not reused:
            # torch's new worker iterator draws a second shared seed (its first _reset) that
            # its workers never use: drawn too, so that the RNG moves as with torch
            draw_seed(generator)

    def _indices(self, continuing: bool) -> EpochIndices | None:
        """A map-style epoch's index lists from the state's position (before the base seed:
        torch calls iter(index sampler) first)."""
        state, plan = self.parts.state, self.parts.plan
        if plan is None:
            return None
        # A stateful sampler's state is the one from after the last delivered task's draw.
        stateful = plan.kind == STATEFUL
        start = 0 if stateful else state.batches
        exhausted = stateful and state.sampler_exhausted
        drawn = state.batches if stateful else 0
        indices = EpochIndices(
            plan, state.seed, state.generator_state, start, state, exhausted, drawn
        )
        if stateful and not continuing:  # the new pass's state, its iterator taken
            state.sampler_state = plan.capture()
        return indices

    def _open_epoch(
        self,
        options: EpochOptions,
        indices: EpochIndices | None,
        continuing: bool,
        pool: WorkerPool | None,
    ) -> Iterator[Any]:
        """The epoch's iterator: in the main process, or over (persistent or new) workers."""
        epoch: Epoch
        if options.num_workers == 0:
            epoch = main_epoch(self.parts, self.reader, options, indices, continuing)
        else:
            if pool is None:
                self._stop_pool()
            epoch, pool = worker_epoch(self.parts, options, indices, continuing, pool)
            self.pool = pool if options.persistent_workers else None
        self._epoch = weakref.ref(epoch)
        return epoch

    def load(self, state_dict: dict[str, Any]) -> None:
        """``load_state_dict``: take the state (a refused one leaves the loader as it was); the
        next ``iter()`` continues from it."""
        state, plan = self.parts.state, self.parts.plan
        previous = state.state_dict()
        state.load_state_dict(state_dict)
        try:
            self._check_loaded()
        except BaseException:
            state.load_state_dict(previous)
            raise
        self._stop_epoch()
        if plan is not None and plan.kind == STATEFUL:
            # now, so that a set_epoch() the script calls before iter(loader) applies after it
            plan.restore(state.sampler_state, state.sampler_exhausted)
        self._stop_pool()  # persistent workers hold the old position: start afresh
        self.reader.pending = True  # Phase.LOADED or LOADED_IN_EPOCH

    def _check_loaded(self) -> None:
        """Refuse now what the next ``iter()`` would refuse: a shard state that its shard does
        not take, a batch position beyond an epoch whose batches the position counts."""
        state, plan = self.parts.state, self.parts.plan
        if self.parts.kind is DatasetKind.SHARDED:
            for index, entry in enumerate(state.streams):
                if not entry["fresh"]:
                    self.parts.dataset.check_shard_state(index, entry["state"])
        for index, entry in enumerate(state.streams):
            if entry["replay"] > state.batches:  # batches delivered since the stream's snapshot
                raise IncompatibleStateError(
                    f"StatefulDataLoader: the state's stream {index} re-reads {entry['replay']} "
                    f"batches, more than the {state.batches} delivered in the epoch"
                )
        if plan is not None and plan.kind == RANDOM:  # what the epoch's order is drawn from
            if plan.generator is not None and state.generator_state is None:
                raise IncompatibleStateError(
                    "StatefulDataLoader: the state has no 'generator_state', but this loader's "
                    "sampler draws from a generator"
                )
            if plan.generator is None and state.in_epoch and state.batches and state.seed is None:
                raise IncompatibleStateError(
                    "StatefulDataLoader: the state is in an epoch but has no sampler 'seed'"
                )
        if plan is not None and plan.kind != STATEFUL:
            total = self.parts.epoch_length()
            if total is not None and state.batches > total:
                raise IncompatibleStateError(
                    f"StatefulDataLoader: the state is at batch {state.batches} of its epoch, but "
                    f"an epoch of this loader has {total} batches"
                )

    def skip(self, count: int) -> None:
        """``skip(count)`` (checked): recorded in the state, cut from the loaded epoch now or
        from the next epochs at their ``iter()``."""
        state = self.parts.state
        epoch = self._epoch() if self._epoch is not None else None
        if epoch is not None and not epoch.done:
            raise RuntimeError(
                f"StatefulDataLoader.skip: an iterator of this loader is inside epoch "
                f"{state.epoch} (batch {state.batches}); skip applies to the batches the next "
                "iter(loader) delivers: finish or drop that iterator first (e.g. break out of "
                "the loop, or save and load the state), then skip and iterate again"
            )
        if count == 0:
            return
        continuing = self.phase is Phase.LOADED_IN_EPOCH
        if continuing:
            state.record_skip(state.epoch, state.batches, count)
        else:  # an abandoned epoch ends at the next iter(): the skip begins the one after
            state.record_skip(state.epoch + int(state.in_epoch), 0, count)
        state.skip_pending += count
        if continuing:
            self._cut(record=True)

    def _cut(self, record: bool) -> int:
        """Cut the pending skip from the rest of the current epoch; return the batches cut."""
        parts, state = self.parts, self.parts.state
        if parts.plan is not None:
            length = parts.epoch_length()
            cut = cut_epoch(state, parts.plan, length, state.skip_pending, record)
        elif parts.kind is DatasetKind.SHARDED:
            pending = state.skip_pending
            cut = cut_shards(state, parts.dataset, parts.batch_size, parts.drop_last, pending)
        else:
            cut = 0
        state.skip_pending -= cut
        return cut

    def close(self) -> None:
        """Stop the epoch and the persistent workers."""
        self._stop_epoch()
        self._stop_pool()

    def _stop_epoch(self) -> None:
        epoch = self._epoch() if self._epoch is not None else None
        if epoch is not None:
            epoch.close()
        self._epoch = None

    def _stop_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None
