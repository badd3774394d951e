"""`StatefulDataLoader`: torch's ``DataLoader`` that saves and restores its position exactly."""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, IterDataPipe
from typing_extensions import TypeVar

from .._checks import require_optional_int
from .._errors import ArgumentValueError
from .epochs import Reader, dataset_length, fresh_state
from .foreign import state_caveat
from .indices import RANDOM, STATEFUL, IndexPlan, has_state
from .lifecycle import Lifecycle
from .parts import DatasetKind, EpochOptions, LoaderParts
from .skipping import check_skippable
from .state import LoaderState

__all__ = ["StatefulDataLoader"]

_TORCH_HAS_IN_ORDER = "in_order" in inspect.signature(DataLoader.__init__).parameters


# The batch type, as torch's DataLoader[T]; Any when the dataset does not say (a list, ...).
T_co = TypeVar("T_co", covariant=True, default=Any)


class StatefulDataLoader(DataLoader[T_co]):
    """torch's ``DataLoader`` with ``state_dict()`` / ``load_state_dict()``: resumes exactly.

    It accepts exactly ``torch.utils.data.DataLoader``'s arguments, checked by torch with its
    messages, and gives the same batches in the same order for the same seeds: the workers' base
    seed and a ``RandomSampler``'s seed are drawn from ``generator`` (or the global RNG) at the
    same moments, workers are seeded and see ``get_worker_info()`` as torch's, and an
    ``IterableDataset`` is read by each worker from its own copy, batches taken round-robin over
    the workers. The workers, queues and ordering are this package's own code.

    With workers, the tensors of a batch come from reused shared memory instead of one
    descriptor hand-over per tensor: each worker has 16 slots of up to 16 MiB, and up to 16
    batches per worker live in them at once. A batch you keep (in a list, say) holds its
    worker's slot until it is freed, so it is never overwritten; its tensors arrive contiguous,
    and ``is_shared()`` is False for them. A batch that does not fit (no free slot, too large,
    a tensor that requires grad or is not a plain CPU tensor) travels as torch's DataLoader
    sends it.

    ``state_dict()`` may be called at any time (before iterating, mid-epoch, after the last batch,
    between epochs) and costs a few microseconds: the position lives in the main process.
    ``load_state_dict(state)`` takes effect at the next ``iter(loader)``, whose first batch is the
    one that would have come next. A state taken after an epoch's last batch but before its
    ``StopIteration`` resumes with an empty rest of that epoch, then the next epoch (as
    torchdata); a state taken after the ``StopIteration`` starts the next epoch.

    What is saved, and what a restore costs:

    - map-style dataset: the epoch, the batches delivered and the sampler's position: the seed or
      generator state of torch's ``RandomSampler`` (restored by regenerating the permutation, a
      cost independent of the position), a sampler's own ``state_dict`` when it has one (no
      replay), else a replay of the sampler's indices from the epoch's start (never of data). It
      loads into a loader with any ``num_workers`` and continues exactly. A dataset with its own
      ``state_dict`` (e.g. an augmentation RNG) has it captured in each worker right after each
      batch and restored per worker; with another ``num_workers`` the order still continues
      exactly but those states are dropped with a warning (workers start freshly seeded).
    - ``IterableDataset`` with ``state_dict``: each worker copy's state rides along with its
      batches (every ``snapshot_every_n_steps``-th batch; a restore then re-reads at most n-1
      batches per worker); the state loads only with the same ``num_workers``. When
      ``iter(dataset)`` returns an iterator with its own ``state_dict`` (as torchdata), that
      iterator's state rides along too and is loaded into the new iterator. The dataset's state
      is loaded before ``iter(dataset)`` and again after it, so a dataset that is its own
      iterator, or resets its fields in ``__iter__``, keeps it. With no ``state_dict`` at all,
      each worker copy is fast-forwarded: its delivered batches are read again and discarded.
    - an ``IterDataPipe``: sharded over workers and ranks, its shuffles seeded from torch's
      per-epoch shared seed (kept in the state), as torch's ``DataLoader`` does.
    - `ShardedIterableDataset`: each shard's state after its last delivered batch and the
      round-robin position; the loader decides the order, so the state loads with any
      ``num_workers`` and continues exactly.

    Without a dataset ``state_dict``, random augmentations drawn from the workers' global RNGs are
    not reproduced after a resume (fresh workers are seeded again from the saved base seed).
    A state written at an epoch boundary (before the first ``iter()``, or after an epoch's last
    batch) fixes the next epoch: the seeds its ``iter()`` would draw from the global RNG (the
    workers' base seed, a ``RandomSampler``'s seed) are drawn when the state is written and
    used by that ``iter()``, here and after a resume, as torchdata's state fixes them.

    Args:
        dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
        pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context, generator,
        prefetch_factor, persistent_workers, pin_memory_device, in_order: as
            ``torch.utils.data.DataLoader``. ``in_order=False`` delivers batches as workers
            finish them and still keeps an exact state (a low watermark plus the batches
            delivered beyond it).
        snapshot_every_n_steps: attach an iterable-style dataset's (or shard's) state to every
            n-th batch of each worker (or shard) instead of every batch, for large states; a
            restore then re-reads at most n-1 batches per worker (or shard). 0 or None (as
            torchdata) take no periodic snapshot: a restore re-reads every batch a worker (or
            shard) delivered in the epoch.

    Raises:
        ValueError: as torch's ``DataLoader`` for its arguments; `snapshot_every_n_steps` < 0.
        TypeError: `snapshot_every_n_steps` is not an int or None.

    State: ``{"version", "type", "config", "position", "order", "seeds", "sources", "skips"}``,
    one short list each (the loader's format version 5; versions 2 to 4 still load), documented
    entry by entry in ``docs/state_format.md``; about 200 bytes pickled for a map-style dataset
    with torch's samplers.

    >>> loader = StatefulDataLoader(list(range(10)), batch_size=4)
    >>> batches = iter(loader)
    >>> next(batches)
    tensor([0, 1, 2, 3])
    >>> state = loader.state_dict()
    >>> resumed = StatefulDataLoader(list(range(10)), batch_size=4)
    >>> resumed.load_state_dict(state)
    >>> list(resumed)
    [tensor([4, 5, 6, 7]), tensor([8, 9])]
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: torch.Generator | None = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        snapshot_every_n_steps: int | None = 1,
    ) -> None:
        every = require_optional_int(
            snapshot_every_n_steps, "StatefulDataLoader", "snapshot_every_n_steps"
        )
        if every is not None and every < 0:
            raise ValueError(
                f"StatefulDataLoader: snapshot_every_n_steps must be >= 0 or None, got "
                f"{snapshot_every_n_steps=}"
            )
        extra = {"in_order": in_order} if _TORCH_HAS_IN_ORDER else {}
        super().__init__(
            dataset,
            batch_size,
            shuffle,
            sampler,
            batch_sampler,
            num_workers,
            collate_fn,
            pin_memory,
            drop_last,
            timeout,
            worker_init_fn,
            multiprocessing_context,
            generator,
            prefetch_factor=prefetch_factor,
            persistent_workers=persistent_workers,
            pin_memory_device=pin_memory_device,
            **extra,
        )
        self.in_order = in_order
        self.snapshot_every_n_steps = snapshot_every_n_steps
        dataset = self.dataset
        kind = DatasetKind.of(dataset)
        mapped, sharded = kind is DatasetKind.MAP, kind is DatasetKind.SHARDED
        plan = IndexPlan(self._index_sampler, self._auto_collation) if mapped else None
        stateful = not sharded and has_state(dataset)
        self._datapipe = isinstance(dataset, IterDataPipe)  # once: a metaclass check, ~1 us
        workers = max(num_workers, 1)
        config = {
            "dataset_kind": kind.value,
            "dataset_length": dataset_length(dataset) if mapped else None,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "sampler": plan.describe() if plan is not None else None,
            "num_workers": num_workers,
            "num_shards": dataset.num_shards if sharded else None,
        }
        state = LoaderState(
            config,
            num_entries=workers if mapped and stateful else 0,
            num_streams=0 if mapped else dataset.num_shards if sharded else workers,
            stream_stateful=sharded or stateful,
            fresh_state=partial(fresh_state, dataset, kind, {}),
        )
        if plan is not None and plan.kind == STATEFUL:
            state.sampler_state = plan.capture()
        batching = self._index_sampler, self.batch_size, self.drop_last
        self._parts = parts = LoaderParts(dataset, kind, plan, state, stateful, *batching)
        reader = Reader(parts)
        reader.main_process = num_workers == 0
        reader.loader_generator = generator
        state.refresh = reader
        reader.boundary_draws = weakref.WeakMethod(self._boundary_draws)
        self._lifecycle = Lifecycle(parts, reader)
        # What the dataset's own state leaves out, said once at the first state_dict().
        self._caveat = state_caveat(dataset) if kind is DatasetKind.ITERABLE else None

    def state_dict(self) -> dict[str, Any]:
        """The loader's position as a dict (see the class docstring and docs/state_format.md).

        Warns once (``UserWarning``) if the dataset is known to leave part of its position out
        of its own state, naming what a resume will not reproduce (a Hugging Face
        ``IterableDataset``'s shuffle buffer).
        """
        return self._state_base.state_dict()

    @property
    def _state_base(self) -> LoaderState:
        """What writes the state (with its "version" here, without where a parent nests it,
        `StateBase.nested_state`), after the caveat's warning."""
        if self._caveat is not None:
            caveat, self._caveat = self._caveat, None
            warnings.warn(caveat, UserWarning, stacklevel=3)
        return self._parts.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from `state_dict` at the next ``iter(loader)``.

        Raises:
            IncompatibleStateError: the state is not a StatefulDataLoader state of this format
                version, or was saved for another dataset kind, dataset length, batch size,
                sampler, number of shards, or (plain IterableDataset) number of workers.
        """
        self._lifecycle.load(state_dict)

    def close(self) -> None:
        """Stop the worker processes now (they are also stopped when the loader is collected)."""
        self._lifecycle.close()

    def __enter__(self) -> StatefulDataLoader[T_co]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        workers = self.num_workers
        if workers == 0 and self.timeout:
            raise ArgumentValueError(
                f"StatefulDataLoader: timeout={self.timeout} needs num_workers > 0; with "
                "num_workers=0 batches are read in the main process"
            )
        if workers > 0 and not self.prefetch_factor:
            raise ArgumentValueError(
                f"StatefulDataLoader: prefetch_factor must be >= 1 with num_workers > 0, got "
                f"prefetch_factor={self.prefetch_factor}"
            )
        return self._lifecycle.iterate(
            EpochOptions(
                num_workers=workers,
                persistent_workers=self.persistent_workers,
                collate_fn=self.collate_fn,
                auto_collation=self._auto_collation,
                in_order=self.in_order,
                prefetch_factor=self.prefetch_factor,
                timeout=self.timeout,
                multiprocessing_context=self.multiprocessing_context,
                worker_init_fn=self.worker_init_fn,
                snapshot_every=self.snapshot_every_n_steps,
                generator=self.generator,
                pin_memory=self.pin_memory,
                pin_memory_device=self.pin_memory_device,
                length_reported=self._IterableDataset_len_called,
            )
        )

    def skip(self, num_batches: int) -> None:
        """Leave out the next `num_batches` batches without reading them (the loss-spike recipe).

        The batches that the next ``iter(loader)`` (and the ones after it) would have delivered
        first are not produced: the one after them comes next, as in the uninterrupted run with
        those batches cut out. Call it after ``load_state_dict`` (typically: restore the
        checkpoint taken before a loss spike, then skip the batches that caused it), before
        iterating, or between epochs; not while an iterator of this loader is inside an epoch
        (``RuntimeError``: drop or finish that iterator first). After an abandoned epoch (a
        ``break``), the next ``iter()`` starts a new epoch, so the skip applies there.

        A skip longer than the rest of the epoch carries over: that epoch's ``iter()`` yields
        what is left of it (possibly nothing), and the next epochs lose their first batches
        until `num_batches` are left out, so the epochs of a training loop keep their numbers.
        It costs O(1): position arithmetic through the sampler (torch's sequential and random
        samplers, and our samplers' ``advance(num_samples)``, elastic distributed ones and a
        ``ShardedDataset``'s included: every rank skips the same batches of the global order);
        a sampler without state is replayed from its epoch's start, as any resume does (its
        indices, never the data). A `ShardedIterableDataset` whose shards have
        ``skip(num_items)`` (returning the items skipped) skips in its shards, taken
        round-robin as the loader takes them; a plain ``IterableDataset`` cannot skip. The skip is in the state (``"skips"``), so a later resume
        stays exact, and ``checkpointable inspect`` shows it. A dataset's own state (e.g. an
        augmentation RNG) does not move over skipped batches.

        Args:
            num_batches: how many batches to leave out, an int >= 0 (0 does nothing).

        Raises:
            TypeError: `num_batches` is not an int (a bool is refused); the dataset is a
                plain ``IterableDataset`` or a `ShardedIterableDataset` whose shards have no
                ``skip(num_items)``, or its stateful sampler has no ``advance(num_samples)``,
                or a sampler without state has no ``len()``.
            ValueError: `num_batches` < 0.
            RuntimeError: an iterator of this loader is inside an epoch.

        >>> loader = StatefulDataLoader(list(range(10)), batch_size=2)
        >>> loader.skip(3)
        >>> list(loader)
        [tensor([6, 7]), tensor([8, 9])]
        >>> loader.state_dict()["skips"]  # [pending, total, log of [epoch, batch, count]]
        [0, 3, [[0, 0, 3]]]
        """
        count = check_skippable(
            num_batches, self._parts.kind, self._parts.plan, self._epoch_length(), self.dataset
        )
        self._lifecycle.skip(count)

    def _epoch_length(self) -> int | None:
        """Batches per epoch as torch counts them (None: a sampler without ``len()``)."""
        try:
            return len(self)
        except TypeError:
            return None

    def _boundary_draws(self) -> tuple[bool, bool] | None:
        """At an epoch boundary (`Reader.draw_next_seeds` knows when), whether the next
        ``iter()`` draws the workers' base seed and a ``RandomSampler``'s seed from the global
        RNG; None when it draws neither before the base seed."""
        state, plan = self._parts.state, self._parts.plan
        if self._datapipe:
            return None  # its shared seed is drawn before the base seed, at iter()
        kept = self.persistent_workers and self.num_workers > 0 and state.base_seed is not None
        base = self.generator is None and not kept
        sampler = plan is not None and plan.kind == RANDOM and plan.sampler.generator is None
        return base, sampler

    def __repr__(self) -> str:
        return (
            f"StatefulDataLoader(dataset={type(self.dataset).__name__}, "
            f"batch_size={self.batch_size}, drop_last={self.drop_last}, "
            f"sampler={type(self.sampler).__name__}, num_workers={self.num_workers}, "
            f"persistent_workers={self.persistent_workers}, in_order={self.in_order}, "
            f"snapshot_every_n_steps={self.snapshot_every_n_steps})"
        )
