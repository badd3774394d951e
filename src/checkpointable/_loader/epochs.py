"""How an epoch starts: the states loaded in the main process, the workers' starts, the iterators.

`Lifecycle.iterate` decides whether the epoch continues a loaded state or starts afresh and
draws the seeds; the functions here, given the loader's `LoaderParts` and `EpochOptions`, build
what reads the epoch: a `MainMapEpoch` or `MainSourceEpoch` without workers, a `WorkerEpoch` over
a `WorkerPool` with them. `Reader` completes the state with what lives in main-process objects
when the state is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils.data._utils.pin_memory import pin_memory

from .._checks import close
from .._rng import draw_seed, encode_torch_generator, restore_torch_generator
from .._state import StateBase
from .batcher import Batcher, fetch_map
from .foreign import keeps_loaded_state
from .indices import STATEFUL, EpochIndices, IndexPlan
from .main_epochs import MainMapEpoch, MainSourceEpoch
from .parts import DatasetKind, EpochOptions, LoaderParts
from .pool import WorkerPool
from .state import LoaderState
from .worker import SourceStart, WorkerSpec
from .worker_epochs import MapTasks, SourceTasks, WorkerEpoch

__all__ = [
    "Reader",
    "dataset_length",
    "fresh_state",
    "load_main_process_states",
    "main_epoch",
    "worker_epoch",
]


def load_main_process_states(parts: LoaderParts, reader: Reader, num_workers: int) -> None:
    """Give the generators (and, without workers, the dataset) their states; a stateful sampler
    got its state in `Lifecycle.load` already."""
    state, plan, kind = parts.state, parts.plan, parts.kind
    generator = reader.loader_generator
    if generator is not None and state.loader_generator_state is not None:
        restore_torch_generator(generator, state.loader_generator_state, "StatefulDataLoader")
    sampler_generator = plan.generator if plan is not None else None
    if sampler_generator is not None and not state.in_epoch and state.generator_state:
        # between epochs: the next epoch draws from the generator as it was
        restore_torch_generator(sampler_generator, state.generator_state, "StatefulDataLoader")
    if num_workers == 0 and parts.dataset_stateful:
        entries = (state.dataset_states if kind is DatasetKind.MAP else state.streams) or []
        if entries and not entries[0]["fresh"]:
            sticky = kind is DatasetKind.ITERABLE and keeps_loaded_state(parts.dataset)
            if sticky and reader.initial_dataset_state is None:
                reader.initial_dataset_state = parts.dataset.state_dict()  # before any load
            StateBase.load_nested(parts.dataset, entries[0]["state"])
            reader.dataset_loaded = sticky
    if num_workers == 0 and kind is DatasetKind.ITERABLE and state.in_epoch:
        entry = state.streams[0]
        if not entry["fresh"]:  # the stream loads it again around iter(dataset), see Batcher
            reader.loaded = state.snapshot(0)


def restart_main_process_iterable(parts: LoaderParts, reader: Reader) -> None:
    """Without workers, a new pass over a dataset that keeps a loaded state for every later
    ``iter()`` (a Hugging Face ``IterableDataset``, within one of its epochs) starts from the
    dataset's state as the loader got it, as a worker's fresh copy does; without this, the pass
    after a resume would start again where the loaded state pointed.
    """
    if reader.dataset_loaded:
        parts.dataset.load_state_dict(reader.initial_dataset_state)
        reader.dataset_loaded = False


def main_epoch(
    parts: LoaderParts,
    reader: Reader,
    options: EpochOptions,
    indices: EpochIndices | None,
    continuing: bool,
) -> MainMapEpoch | MainSourceEpoch:
    """The iterator of an epoch read in the main process."""
    state, plan, dataset = parts.state, parts.plan, parts.dataset
    device = pin_device(options)
    pin = _identity if device is None else partial(pin_memory, device=device)
    finish = partial(finish_epoch, state, plan, None)
    if indices is not None:
        fetch = partial(fetch_pinned, dataset, options.auto_collation, options.collate_fn, pin)
        capture = plan.capture if plan is not None and plan.kind == STATEFUL else None
        return MainMapEpoch(state, indices, fetch, finish, capture)
    streams = []
    loaded, reader.loaded = reader.loaded, None
    for index, entry in enumerate(state.streams):
        stream = Batcher(
            parts.batch_size, parts.drop_last, options.collate_fn, options.snapshot_every
        )
        streams.append(stream)
        replay = entry["replay"] if continuing else 0
        if entry["ended"]:
            continue
        if parts.kind is DatasetKind.SHARDED:
            load = not entry["fresh"]  # a new epoch's shards are fresh, unless a skip moved them
            stream.start(dataset.open_shard(index), True, state.snapshot(index), load, replay)
        else:  # continuing a loaded epoch: the snapshot kept by load_main_process_states
            start = {**(loaded or {}), "shared_seed": state.shared_seed}
            stream.start(dataset, parts.dataset_stateful, start, loaded is not None, replay)
    reader.streams = streams
    return MainSourceEpoch(state, streams, pin, finish, length_check(parts, options))


def worker_epoch(
    parts: LoaderParts,
    options: EpochOptions,
    indices: EpochIndices | None,
    continuing: bool,
    pool: WorkerPool | None,
) -> tuple[WorkerEpoch, WorkerPool]:
    """The iterator of an epoch read by workers, and its pool: `pool` (persistent workers that
    are alive) or a new one."""
    state, plan, workers = parts.state, parts.plan, options.num_workers
    persistent = options.persistent_workers
    new_pool = pool is None
    if pool is None:
        spec = worker_spec(parts, options)
        pool = WorkerPool(
            spec, workers, options.multiprocessing_context, options.timeout, pin_device(options)
        )
    pool.begin_epoch(worker_starts(parts, workers, new_pool, continuing))
    tasks: MapTasks | SourceTasks
    if indices is not None:
        capture = indices.plan.kind == STATEFUL
        tasks = MapTasks(state, indices, indices.plan, workers, options.in_order, capture)
    else:
        count = len(state.streams)
        sharded = parts.kind is DatasetKind.SHARDED
        owners = [s % workers for s in range(count)] if sharded else None
        cap = None if options.in_order else options.prefetch_factor
        check = length_check(parts, options)
        tasks = SourceTasks(state, owners or list(range(workers)), check, cap)
    finish = partial(finish_epoch, state, plan, None if persistent else pool)
    window = (options.prefetch_factor or 0) * workers
    epoch = WorkerEpoch(pool, tasks, options.in_order, window, finish, owns_pool=not persistent)
    return epoch, pool


def length_check(parts: LoaderParts, options: EpochOptions) -> Callable[[int], None] | None:
    """torch's check that an iterable-style dataset yields no more batches than ``len(loader)``
    said, when it was asked (None otherwise): called with the batches delivered so far."""
    reported = options.length_reported
    if parts.kind is DatasetKind.MAP or reported is None:
        return None
    return partial(_warn_if_longer, parts.dataset, reported, options.num_workers)


def _warn_if_longer(dataset: Any, reported: int, num_workers: int, fetched: int) -> None:
    if fetched <= reported:
        return
    message = (  # torch's words, which users grep their logs for
        f"Length of IterableDataset {dataset} was reported to be {reported}"
        f"(when accessing len(dataloader)), but {fetched} samples have been fetched. "
    )
    if num_workers > 0:
        message += (
            "For multiprocessing data-loading, this could be caused by not properly configuring "
            "the IterableDataset replica at each worker. Please see "
            "https://pytorch.org/docs/stable/data.html#torch.utils.data.IterableDataset for "
            "examples."
        )
    warnings.warn(message, stacklevel=4)


def worker_spec(parts: LoaderParts, options: EpochOptions) -> WorkerSpec:
    """What each worker needs."""
    base_seed = parts.state.base_seed
    if base_seed is None:  # drawn by Lifecycle.iterate before the workers start
        raise RuntimeError(
            "StatefulDataLoader: no base seed drawn for the workers (internal error)"
        )
    return WorkerSpec(
        kind=parts.kind,
        dataset=parts.dataset,
        auto_collation=options.auto_collation,
        batch_size=parts.batch_size,
        drop_last=parts.drop_last,
        collate_fn=options.collate_fn,
        worker_init_fn=options.worker_init_fn,
        base_seed=base_seed,
        num_workers=options.num_workers,
        snapshot_every=options.snapshot_every or 0,
        dataset_stateful=parts.dataset_stateful,
    )


def worker_starts(parts: LoaderParts, workers: int, new_pool: bool, continuing: bool) -> list[Any]:
    """What each worker loads and skips when the epoch begins."""
    state = parts.state
    if parts.kind is DatasetKind.MAP:
        entries = state.dataset_states
        if entries is None or not new_pool:
            return [None] * workers
        return [None if entry["fresh"] else entry["state"] for entry in entries]
    starts: list[dict[int, SourceStart]] = [{} for _ in range(workers)]
    for index, entry in enumerate(state.streams):
        # A plain dataset copy lives on in a reused persistent worker; a shard is new each epoch.
        load = not entry["fresh"] and (new_pool or parts.kind is DatasetKind.SHARDED)
        replay = entry["replay"] if continuing else 0
        how = SourceStart(state.snapshot(index), load, replay, entry["ended"])
        starts[index % workers][index] = how
    return starts


class Reader:
    """Reads, when the state is written, what lives in main-process objects: the generators'
    states (the next epoch draws from them) and, without workers, the dataset's and sampler's.

    It holds no reference to the loader, so that a loader is freed (and its workers stopped) as
    soon as the user drops it.
    """

    def __init__(self, parts: LoaderParts) -> None:
        self.state, self.plan, self.dataset = parts.state, parts.plan, parts.dataset
        self.kind, self.stateful = parts.kind, parts.dataset_stateful
        #: A loaded state waits for the next iter() (`Phase.LOADED`, `Phase.LOADED_IN_EPOCH`):
        #: report it as loaded.
        self.pending = False
        self.streams: list[Batcher] | None = None
        #: Without workers: the loaded snapshot the next epoch's stream starts from.
        self.loaded: dict[str, Any] | None = None
        #: A weak reference to the loader's method that says, at an epoch boundary, which of
        #: the next epoch's seeds come from the global RNG (see `draw_next_seeds`).
        self.boundary_draws: Callable[[], Callable[[], tuple[bool, bool] | None] | None] | None = (
            None
        )
        self.main_process = False
        #: The epoch being read's batches as torch counts them, taken at its ``iter()`` (None:
        #: no length); a state is only written inside an epoch after that ``iter()``.
        self.epoch_batches: int | None = None
        self.loader_generator: torch.Generator | None = None
        # Without workers, a dataset that keeps a loaded state: a state was loaded into it, and
        # its state before that.
        self.dataset_loaded = False
        self.initial_dataset_state: Any = None

    def __call__(self) -> None:
        if self.pending:
            return
        self.draw_next_seeds()
        state, plan = self.state, self.plan
        sampler_generator = plan.generator if plan is not None else None
        loader_generator = self.loader_generator
        if loader_generator is not None and loader_generator is not sampler_generator:
            state.loader_generator_state = encode_torch_generator(loader_generator)
        if sampler_generator is not None and (
            not state.in_epoch or state.generator_state is None
        ):  # the state before the epoch's first draw
            state.generator_state = encode_torch_generator(sampler_generator)
        if not self.main_process:
            return
        if self.kind is DatasetKind.MAP:
            if self.stateful and state.dataset_states:
                dataset_state = StateBase.nested_state(self.dataset)
                state.dataset_states[0] = {"state": dataset_state, "fresh": False}
            return
        started = [s for s in self.streams or () if s.source is not None]
        if self.kind is DatasetKind.ITERABLE and not started and self.stateful:
            # before the first iter()
            first = {"state": StateBase.nested_state(self.dataset), "iterator_state": None}
            state.take_snapshot(0, first)
        for index, stream in enumerate(self.streams or ()):
            snapshot = stream.capture() if stream.source is not None else None
            if snapshot is not None:
                state.take_snapshot(index, snapshot)

    def draw_next_seeds(self) -> None:
        """At an epoch boundary (before the first ``iter()``, after an epoch's last batch),
        draw from the global RNG now the seeds that the next ``iter()`` would draw from it (the
        workers' base seed, then a ``RandomSampler``'s seed, in torch's order), so that the
        state written now fixes the next epoch as torchdata's does; the next ``iter()`` uses
        them instead of drawing. Drawn once per boundary."""
        state = self.state
        if state.next_seeds is not None:
            return
        if state.in_epoch:  # at its end only when every batch torch counts was delivered
            batches = self.epoch_batches  # None: an iterable-style dataset, or a sampler
            if batches is None or state.batches + len(state.beyond) < batches:  # without len()
                return
        method = self.boundary_draws() if self.boundary_draws is not None else None
        draws = method() if method is not None else None
        if draws is None or not any(draws):
            return
        base, sampler = draws
        state.next_seeds = {
            "base_seed": draw_seed() if base else None,
            "sampler_seed": draw_seed() if sampler else None,
        }


def finish_epoch(state: LoaderState, plan: IndexPlan | None, pool: Any) -> None:
    state.end_epoch()
    if plan is not None and plan.kind == STATEFUL:
        # The last delivered task's draw, or the draw that found nothing, ran the indices out:
        # the recorded state is the one from before it (see `indices`).
        state.sampler_exhausted = True
    if pool is not None:
        pool.shutdown()


def fetch_pinned(
    dataset: Any, auto: bool, collate_fn: Any, pin: Callable[[Any], Any], task: Any
) -> Any:
    return pin(fetch_map(dataset, task, auto, collate_fn))


def fresh_state(dataset: Any, kind: DatasetKind, cache: dict[int, Any], index: int) -> Any:
    """The state a fresh source starts from: the loader's dataset copy, or a freshly made shard."""
    key = index if kind is DatasetKind.SHARDED else 0
    if key not in cache:
        if kind is DatasetKind.SHARDED:
            shard = dataset.open_shard(index)
            cache[key] = StateBase.nested_state(shard)
            close(shard)
        else:
            cache[key] = StateBase.nested_state(dataset)
    return cache[key]


def dataset_length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _identity(batch: Any) -> Any:
    return batch


def pin_device(options: EpochOptions) -> str | None:
    """The accelerator to pin batches for, or None; warns as torch does when pinning is off, at
    the script's ``iter(loader)`` (`main_epoch` or `worker_epoch`, `Lifecycle._open_epoch`,
    `Lifecycle.iterate`, ``StatefulDataLoader.__iter__``, then the script: stacklevel 6)."""
    if not options.pin_memory:
        return None
    if options.pin_memory_device:
        warnings.warn(
            "pin_memory_device is deprecated, the current accelerator will be used as the "
            f"device, ignore pin_memory_device='{options.pin_memory_device}'.",
            stacklevel=6,
        )
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is None or not accelerator.is_available():
        warnings.warn(
            "'pin_memory' argument is set as true but no accelerator is found, then device "
            "pinned memory won't be used.",
            stacklevel=6,
        )
        return None
    current = accelerator.current_accelerator()
    if current is None or current.type == "mps":
        return None
    return str(current.type)
