"""`StatefulDataLoader`: torch's ``DataLoader`` that saves and restores its position exactly."""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.pin_memory import pin_memory

from .._errors import ArgumentTypeError, ArgumentValueError
from .indices import (
    STATEFUL,
    EpochIndices,
    IndexPlan,
    decode_generator_state,
    encode_generator_state,
    has_state,
)
from .main_epochs import MainMapEpoch, MainStreamEpoch
from .pool import WorkerPool
from .sharded import ShardedIterableDataset
from .state import LoaderState
from .streams import Stream, fetch_map
from .worker import StreamStart, WorkerSpec
from .worker_epochs import MapTasks, StreamTasks, WorkerEpoch

__all__ = ["StatefulDataLoader"]

_TORCH_HAS_IN_ORDER = "in_order" in inspect.signature(DataLoader.__init__).parameters


class StatefulDataLoader(DataLoader[Any]):
    """torch's ``DataLoader`` with ``state_dict()`` / ``load_state_dict()``: resumes exactly.

    It accepts exactly ``torch.utils.data.DataLoader``'s arguments, checked by torch with its
    messages, and gives the same batches in the same order for the same seeds: the workers' base
    seed and a ``RandomSampler``'s seed are drawn from ``generator`` (or the global RNG) at the
    same moments, workers are seeded and see ``get_worker_info()`` as torch's, and an
    ``IterableDataset`` is read by each worker from its own copy, batches taken round-robin over
    the workers. The workers, queues and ordering are this package's own code.

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
      batches per worker); the state loads only with the same ``num_workers``. Without
      ``state_dict`` each worker copy is fast-forwarded: its delivered batches are read again and
      discarded.
    - `ShardedIterableDataset`: each shard's state after its last delivered batch and the
      round-robin position; the loader decides the order, so the state loads with any
      ``num_workers`` and continues exactly.

    Without a dataset ``state_dict``, random augmentations drawn from the workers' global RNGs are
    not reproduced after a resume (fresh workers are seeded again from the saved base seed).

    Args:
        dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
        pin_memory, drop_last, timeout, worker_init_fn, multiprocessing_context, generator,
        prefetch_factor, persistent_workers, pin_memory_device, in_order: as
            ``torch.utils.data.DataLoader``. ``in_order=False`` delivers batches as workers
            finish them and still keeps an exact state (a low watermark plus the batches
            delivered beyond it).
        snapshot_every_n_steps: attach an iterable-style dataset's (or shard's) state to every
            n-th batch of each worker (or shard) instead of every batch, for large states; a
            restore then re-reads at most n-1 batches per worker (or shard). An int >= 1.

    Raises:
        ValueError: as torch's ``DataLoader`` for its arguments; `snapshot_every_n_steps` < 1.
        TypeError: `snapshot_every_n_steps` is not an int.

    State: ``{"version", "type", "dataset_kind", "dataset_length", "batch_size", "drop_last",
    "sampler", "num_workers", "num_shards", "epoch", "in_epoch", "batches", "delivered_beyond",
    "sampler_position", "base_seed", "dataset_states", "streams", "next_stream"}``, documented
    key by key in ``docs/state_format.md``; < 1 KB for a map-style dataset with torch's samplers.

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
        snapshot_every_n_steps: int = 1,
    ) -> None:
        if isinstance(snapshot_every_n_steps, bool) or not isinstance(snapshot_every_n_steps, int):
            raise ArgumentTypeError(
                f"StatefulDataLoader: snapshot_every_n_steps must be an int, got "
                f"{snapshot_every_n_steps!r} ({type(snapshot_every_n_steps).__name__})"
            )
        if snapshot_every_n_steps < 1:
            raise ValueError(
                f"StatefulDataLoader: snapshot_every_n_steps must be >= 1, got "
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
        if isinstance(dataset, ShardedIterableDataset):
            kind = "sharded"
        elif isinstance(dataset, IterableDataset):
            kind = "iterable"
        else:
            kind = "map"
        self._kind = kind
        self._plan = IndexPlan(self._index_sampler, self._auto_collation) if kind == "map" else None
        self._dataset_stateful = kind != "sharded" and has_state(dataset)
        workers = max(num_workers, 1)
        config = {
            "dataset_kind": kind,
            "dataset_length": _length(dataset) if kind == "map" else None,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "sampler": self._plan.describe() if self._plan is not None else None,
            "num_workers": num_workers,
            "num_shards": dataset.num_shards if kind == "sharded" else None,
        }
        streams = 0 if kind == "map" else workers if kind == "iterable" else dataset.num_shards
        self._state = LoaderState(
            config,
            num_entries=workers if kind == "map" and self._dataset_stateful else 0,
            num_streams=streams,
            stream_stateful=kind == "sharded" or self._dataset_stateful,
            fresh_state=partial(_fresh_state, dataset, kind, {}),
        )
        self._reader = _Reader(self._state, self._plan, dataset, kind, self._dataset_stateful)
        self._reader.main_process = num_workers == 0
        self._reader.loader_generator = generator
        self._state.refresh = self._reader
        if self._plan is not None and self._plan.kind == STATEFUL:
            self._state.sampler_state = self._plan.capture()
        self._pool: WorkerPool | None = None  # persistent workers
        self._epoch: weakref.ref[Any] | None = None
        self._resume = False

    def state_dict(self) -> dict[str, Any]:
        """The loader's position as a dict (see the class docstring and docs/state_format.md)."""
        return self._state.to_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from `state_dict` at the next ``iter(loader)``.

        Raises:
            IncompatibleStateError: the state is not a StatefulDataLoader state of this format
                version, or was saved for another dataset kind, dataset length, batch size,
                sampler, number of shards, or (plain IterableDataset) number of workers.
        """
        self._state.load(state_dict)
        self._stop_epoch()
        if self._pool is not None:  # persistent workers hold the old position: start afresh
            self._pool.shutdown()
            self._pool = None
        self._resume = True
        self._reader.pending = True

    def close(self) -> None:
        """Stop the worker processes now (they are also stopped when the loader is collected)."""
        self._stop_epoch()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> StatefulDataLoader:
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
        self._stop_epoch()
        state, plan = self._state, self._plan
        resume, self._resume = self._resume, False
        self._reader.pending = False
        if resume:
            self._load_main_process_states()
        continuing = resume and state.in_epoch
        pool_alive = self._pool is not None and self._pool.alive
        if not continuing:
            if state.in_epoch:  # the previous epoch was abandoned
                state.end_epoch()
            state.start_epoch(carry=self.persistent_workers and workers > 0)
            if plan is not None and plan.kind == STATEFUL:
                state.sampler_state = plan.capture()
        indices = None
        if plan is not None:  # before the base seed: torch calls iter(index sampler) first
            # A stateful sampler's state is the one from before the last delivered task's draw.
            start = min(state.batches, 1) if plan.kind == STATEFUL else state.batches
            indices = EpochIndices(plan, state.seed, state.generator_state, start, state)
        if not continuing:
            reused = self.persistent_workers and pool_alive
            kept = self.persistent_workers and resume and state.base_seed is not None
            if not (reused or kept):
                state.base_seed = int(
                    torch.empty((), dtype=torch.int64).random_(generator=self.generator).item()
                )
        elif state.base_seed is None:
            state.base_seed = int(torch.empty((), dtype=torch.int64).random_().item())
        if workers == 0:
            epoch: Any = self._main_epoch(indices, continuing)
        else:
            epoch = self._worker_epoch(indices, continuing, pool_alive)
        self._epoch = weakref.ref(epoch)
        return epoch

    def _load_main_process_states(self) -> None:
        """Give the generators, the sampler (and, without workers, the dataset) their states."""
        state, plan = self._state, self._plan
        generator = self._reader.loader_generator
        if generator is not None and state.loader_generator_state is not None:
            generator.set_state(decode_generator_state(state.loader_generator_state))
        sampler_generator = plan.generator if plan is not None else None
        if sampler_generator is not None and not state.in_epoch and state.generator_state:
            # between epochs: the next epoch draws from the generator as it was
            sampler_generator.set_state(decode_generator_state(state.generator_state))
        if plan is not None and plan.kind == STATEFUL:
            plan.sampler.load_state_dict(state.sampler_state)
        if self.num_workers == 0 and self._dataset_stateful:
            entries = state.dataset_states if self._kind == "map" else state.streams
            assert entries is not None
            if not entries[0]["fresh"]:
                self.dataset.load_state_dict(entries[0]["state"])  # type: ignore[attr-defined]

    def _main_epoch(self, indices: EpochIndices | None, continuing: bool) -> Any:
        state = self._state
        pin = _pin_function(self)
        finish = partial(_finish_epoch, state, self._plan, None)
        if indices is not None:
            fetch = partial(_fetch, self.dataset, self._auto_collation, self.collate_fn, pin)
            plan = self._plan
            capture = plan.capture if plan is not None and plan.kind == STATEFUL else None
            return MainMapEpoch(state, indices, fetch, finish, capture)
        streams = []
        dataset: Any = self.dataset
        for index, entry in enumerate(state.streams):
            stream = Stream(
                self.batch_size, self.drop_last, self.collate_fn, self.snapshot_every_n_steps
            )
            streams.append(stream)
            replay = entry["replay"] if continuing else 0
            if entry["ended"]:
                continue
            if self._kind == "sharded":
                load = continuing and not entry["fresh"]
                stream.start(dataset.open_shard(index), True, entry["state"], load, replay)
            else:  # the dataset's own state was loaded by _load_main_process_states
                stream.start(dataset, self._dataset_stateful, None, False, replay)
        self._reader.streams = streams
        return MainStreamEpoch(state, streams, pin, finish)

    def _worker_epoch(
        self, indices: EpochIndices | None, continuing: bool, pool_alive: bool
    ) -> Any:
        state, plan, workers = self._state, self._plan, self.num_workers
        persistent = self.persistent_workers
        if persistent and pool_alive:
            pool = self._pool
            assert pool is not None
            new_pool = False
        else:
            if self._pool is not None:
                self._pool.shutdown()
            pool = WorkerPool(
                self._worker_spec(),
                workers,
                self.multiprocessing_context,
                self.timeout,
                _pin_device(self),
            )
            self._pool = pool if persistent else None
            new_pool = True
        pool.begin_epoch(self._worker_starts(new_pool, continuing))
        tasks: MapTasks | StreamTasks
        if indices is not None:
            assert plan is not None
            capture = plan.kind == STATEFUL
            tasks = MapTasks(state, indices, plan, workers, self.in_order, capture)
        elif self._kind == "sharded":
            tasks = StreamTasks(state, [s % workers for s in range(len(state.streams))])
        else:
            tasks = StreamTasks(state, list(range(workers)))
        finish = partial(_finish_epoch, state, plan, None if persistent else pool)
        window = self.prefetch_factor * workers  # type: ignore[operator]
        return WorkerEpoch(pool, tasks, self.in_order, window, finish, owns_pool=not persistent)

    def _worker_spec(self) -> WorkerSpec:
        base_seed = self._state.base_seed
        assert base_seed is not None
        return WorkerSpec(
            kind=self._kind,
            dataset=self.dataset,
            auto_collation=self._auto_collation,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            collate_fn=self.collate_fn,
            worker_init_fn=self.worker_init_fn,
            base_seed=base_seed,
            num_workers=self.num_workers,
            snapshot_every=self.snapshot_every_n_steps,
            dataset_stateful=self._dataset_stateful,
        )

    def _worker_starts(self, new_pool: bool, continuing: bool) -> list[Any]:
        """What each worker loads and skips when the epoch begins."""
        state, workers = self._state, self.num_workers
        if self._kind == "map":
            entries = state.dataset_states
            if entries is None or not new_pool:
                return [None] * workers
            return [None if entry["fresh"] else entry["state"] for entry in entries]
        starts: list[dict[int, StreamStart]] = [{} for _ in range(workers)]
        for index, entry in enumerate(state.streams):
            # A plain dataset copy lives on in a reused persistent worker; a shard is new each epoch.
            load = not entry["fresh"] and (new_pool or self._kind == "sharded")
            replay = entry["replay"] if continuing else 0
            how = StreamStart(entry["state"], load, replay, entry["ended"])
            starts[index % workers][index] = how
        return starts

    def _stop_epoch(self) -> None:
        epoch = self._epoch() if self._epoch is not None else None
        if epoch is not None:
            epoch.close()
        self._epoch = None

    def __repr__(self) -> str:
        return (
            f"StatefulDataLoader(dataset={type(self.dataset).__name__}, "
            f"batch_size={self.batch_size}, drop_last={self.drop_last}, "
            f"sampler={type(self.sampler).__name__}, num_workers={self.num_workers}, "
            f"persistent_workers={self.persistent_workers}, in_order={self.in_order}, "
            f"snapshot_every_n_steps={self.snapshot_every_n_steps})"
        )


class _Reader:
    """Reads, when the state is written, what lives in main-process objects: the generators'
    states (the next epoch draws from them) and, without workers, the dataset's and sampler's.

    It holds no reference to the loader, so that a loader is freed (and its workers stopped) as
    soon as the user drops it.
    """

    def __init__(
        self, state: LoaderState, plan: IndexPlan | None, dataset: Any, kind: str, stateful: bool
    ) -> None:
        self.state, self.plan, self.dataset, self.kind, self.stateful = (
            state,
            plan,
            dataset,
            kind,
            stateful,
        )
        self.pending = False  # a loaded state waits for the next iter(): report it as loaded
        self.streams: list[Stream] | None = None
        self.main_process = False
        self.loader_generator: torch.Generator | None = None

    def __call__(self) -> None:
        if self.pending:
            return
        state, plan = self.state, self.plan
        sampler_generator = plan.generator if plan is not None else None
        loader_generator = self.loader_generator
        if loader_generator is not None and loader_generator is not sampler_generator:
            state.loader_generator_state = encode_generator_state(loader_generator)
        if sampler_generator is not None and (
            not state.in_epoch or state.generator_state is None
        ):  # the state before the epoch's first draw
            state.generator_state = encode_generator_state(sampler_generator)
        if not self.main_process:
            return
        if self.kind == "sharded":
            for entry, stream in zip(state.streams, self.streams or (), strict=False):
                if stream.source is not None:
                    entry["state"], entry["fresh"], entry["replay"] = stream.capture(), False, 0
        elif self.stateful:
            entry = state.dataset_states[0] if state.dataset_states else state.streams[0]
            entry["state"], entry["fresh"] = self.dataset.state_dict(), False
            if self.kind == "iterable":
                entry["replay"] = 0


def _finish_epoch(state: LoaderState, plan: IndexPlan | None, pool: Any) -> None:
    state.end_epoch()
    if plan is not None and plan.kind == STATEFUL:
        state.sampler_state = plan.capture()
    if pool is not None:
        pool.shutdown()


def _fetch(dataset: Any, auto: bool, collate_fn: Any, pin: Callable[[Any], Any], task: Any) -> Any:
    return pin(fetch_map(dataset, task, auto, collate_fn))


def _fresh_state(dataset: Any, kind: str, cache: dict[int, Any], index: int) -> Any:
    """The state a fresh source starts from: the loader's dataset copy, or a freshly made shard."""
    key = index if kind == "sharded" else 0
    if key not in cache:
        if kind == "sharded":
            shard = dataset.open_shard(index)
            cache[key] = shard.state_dict()
            close = getattr(shard, "close", None)
            if callable(close):
                close()
        else:
            cache[key] = dataset.state_dict()
    return cache[key]


def _length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _identity(batch: Any) -> Any:
    return batch


def _pin_device(loader: DataLoader[Any]) -> str | None:
    """The accelerator to pin batches for, or None; warns as torch does when pinning is off."""
    if not loader.pin_memory:
        return None
    if loader.pin_memory_device:
        warnings.warn(
            "pin_memory_device is deprecated, the current accelerator will be used as the "
            f"device, ignore pin_memory_device='{loader.pin_memory_device}'.",
            stacklevel=4,
        )
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, then device "
            "pinned memory won't be used.",
            stacklevel=4,
        )
        return None
    current = accelerator.current_accelerator()
    if current is None or current.type == "mps":
        return None
    return str(current.type)


def _pin_function(loader: DataLoader[Any]) -> Callable[[Any], Any]:
    device = _pin_device(loader)
    return _identity if device is None else partial(pin_memory, device=device)
