"""How an epoch starts: the states loaded in the main process, the workers' starts, the iterators.

`StatefulDataLoader.__iter__` decides whether the epoch continues a loaded state or starts
afresh and draws the seeds; the functions here build what reads the epoch: a `MainMapEpoch` or
`MainSourceEpoch` without workers, a `WorkerEpoch` over a `WorkerPool` with them. `Reader`
completes the state with what lives in main-process objects when the state is written.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data._utils.pin_memory import pin_memory

from .._rng import draw_seed, encode_torch_generator, restore_torch_generator
from .batcher import Batcher, fetch_map
from .foreign import keeps_loaded_state
from .indices import STATEFUL, EpochIndices, IndexPlan
from .main_epochs import MainMapEpoch, MainSourceEpoch
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


def load_main_process_states(loader: Any) -> None:
    """Give the generators (and, without workers, the dataset) their states; a stateful sampler
    got its state in `StatefulDataLoader.load_state_dict` already."""
    state, plan = loader._state, loader._plan
    generator = loader._reader.loader_generator
    if generator is not None and state.loader_generator_state is not None:
        restore_torch_generator(generator, state.loader_generator_state, "StatefulDataLoader")
    sampler_generator = plan.generator if plan is not None else None
    if sampler_generator is not None and not state.in_epoch and state.generator_state:
        # between epochs: the next epoch draws from the generator as it was
        restore_torch_generator(sampler_generator, state.generator_state, "StatefulDataLoader")
    if loader.num_workers == 0 and loader._dataset_stateful:
        entries = (state.dataset_states if loader._kind == "map" else state.streams) or []
        if entries and not entries[0]["fresh"]:
            reader = loader._reader
            sticky = loader._kind == "iterable" and keeps_loaded_state(loader.dataset)
            if sticky and reader.initial_dataset_state is None:
                reader.initial_dataset_state = loader.dataset.state_dict()  # before any load
            loader.dataset.load_state_dict(entries[0]["state"])
            reader.dataset_loaded = sticky
    if loader.num_workers == 0 and loader._kind == "iterable" and state.in_epoch:
        entry = state.streams[0]
        if not entry["fresh"]:  # the stream loads it again around iter(dataset), see Batcher
            loader._reader.loaded = state.snapshot(0)


def restart_main_process_iterable(loader: Any) -> None:
    """Without workers, a new pass over a dataset that keeps a loaded state for every later
    ``iter()`` (a Hugging Face ``IterableDataset``, within one of its epochs) starts from the
    dataset's state as the loader got it, as a worker's fresh copy does; without this, the pass
    after a resume would start again where the loaded state pointed.
    """
    reader = loader._reader
    if reader.dataset_loaded:
        loader.dataset.load_state_dict(reader.initial_dataset_state)
        reader.dataset_loaded = False


def main_epoch(
    loader: Any, indices: EpochIndices | None, continuing: bool
) -> MainMapEpoch | MainSourceEpoch:
    """The iterator of an epoch read in the main process."""
    state = loader._state
    pin = pin_function(loader)
    finish = partial(finish_epoch, state, loader._plan, None)
    if indices is not None:
        fetch = partial(
            fetch_pinned, loader.dataset, loader._auto_collation, loader.collate_fn, pin
        )
        plan = loader._plan
        capture = plan.capture if plan is not None and plan.kind == STATEFUL else None
        return MainMapEpoch(state, indices, fetch, finish, capture)
    streams = []
    dataset: Any = loader.dataset
    loaded, loader._reader.loaded = loader._reader.loaded, None
    for index, entry in enumerate(state.streams):
        stream = Batcher(
            loader.batch_size, loader.drop_last, loader.collate_fn, loader.snapshot_every_n_steps
        )
        streams.append(stream)
        replay = entry["replay"] if continuing else 0
        if entry["ended"]:
            continue
        if loader._kind == "sharded":
            load = not entry["fresh"]  # a new epoch's shards are fresh, unless a skip moved them
            stream.start(dataset.open_shard(index), True, state.snapshot(index), load, replay)
        else:  # continuing a loaded epoch: the snapshot kept by load_main_process_states
            start = {**(loaded or {}), "shared_seed": state.shared_seed}
            stream.start(dataset, loader._dataset_stateful, start, loaded is not None, replay)
    loader._reader.streams = streams
    return MainSourceEpoch(state, streams, pin, finish, length_check(loader))


def worker_epoch(
    loader: Any, indices: EpochIndices | None, continuing: bool, pool_alive: bool
) -> tuple[WorkerEpoch, WorkerPool]:
    """The iterator of an epoch read by workers, and its pool (reused if persistent and alive)."""
    state, plan, workers = loader._state, loader._plan, loader.num_workers
    persistent = loader.persistent_workers
    pool = loader._pool if persistent and pool_alive else None
    new_pool = pool is None
    if pool is None:
        if loader._pool is not None:
            loader._pool.shutdown()
        pool = WorkerPool(
            worker_spec(loader),
            workers,
            loader.multiprocessing_context,
            loader.timeout,
            pin_device(loader),
        )
    pool.begin_epoch(worker_starts(loader, new_pool, continuing))
    tasks: MapTasks | SourceTasks
    if indices is not None:
        capture = indices.plan.kind == STATEFUL
        tasks = MapTasks(state, indices, indices.plan, workers, loader.in_order, capture)
    else:
        count = len(state.streams)
        owners = [s % workers for s in range(count)] if loader._kind == "sharded" else None
        cap = None if loader.in_order else loader.prefetch_factor
        tasks = SourceTasks(state, owners or list(range(workers)), length_check(loader), cap)
    finish = partial(finish_epoch, state, plan, None if persistent else pool)
    window = loader.prefetch_factor * workers
    epoch = WorkerEpoch(pool, tasks, loader.in_order, window, finish, owns_pool=not persistent)
    return epoch, pool


def length_check(loader: Any) -> Callable[[int], None] | None:
    """torch's check that an iterable-style dataset yields no more batches than ``len(loader)``
    said, when it was asked (None otherwise): called with the batches delivered so far."""
    reported = loader._IterableDataset_len_called
    if loader._kind == "map" or reported is None:
        return None
    return partial(_warn_if_longer, loader.dataset, reported, loader.num_workers)


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


def worker_spec(loader: Any) -> WorkerSpec:
    """What each worker of `loader` needs."""
    base_seed = loader._state.base_seed
    if base_seed is None:  # drawn in __iter__ before the workers start
        raise RuntimeError(
            "StatefulDataLoader: no base seed drawn for the workers (internal error)"
        )
    return WorkerSpec(
        kind=loader._kind,
        dataset=loader.dataset,
        auto_collation=loader._auto_collation,
        batch_size=loader.batch_size,
        drop_last=loader.drop_last,
        collate_fn=loader.collate_fn,
        worker_init_fn=loader.worker_init_fn,
        base_seed=base_seed,
        num_workers=loader.num_workers,
        snapshot_every=loader.snapshot_every_n_steps or 0,
        dataset_stateful=loader._dataset_stateful,
    )


def worker_starts(loader: Any, new_pool: bool, continuing: bool) -> list[Any]:
    """What each worker loads and skips when the epoch begins."""
    state, workers = loader._state, loader.num_workers
    if loader._kind == "map":
        entries = state.dataset_states
        if entries is None or not new_pool:
            return [None] * workers
        return [None if entry["fresh"] else entry["state"] for entry in entries]
    starts: list[dict[int, SourceStart]] = [{} for _ in range(workers)]
    for index, entry in enumerate(state.streams):
        # A plain dataset copy lives on in a reused persistent worker; a shard is new each epoch.
        load = not entry["fresh"] and (new_pool or loader._kind == "sharded")
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
        self.streams: list[Batcher] | None = None
        #: Without workers: the loaded snapshot the next epoch's stream starts from.
        self.loaded: dict[str, Any] | None = None
        #: A weak reference to the loader's method that says, at an epoch boundary, which of
        #: the next epoch's seeds come from the global RNG (see `draw_next_seeds`).
        self.boundary_draws: Callable[[], Callable[[], tuple[bool, bool] | None] | None] | None = (
            None
        )
        self.main_process = False
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
        if self.kind == "map":
            if self.stateful and state.dataset_states:
                state.dataset_states[0] = {"state": self.dataset.state_dict(), "fresh": False}
            return
        started = [s for s in self.streams or () if s.source is not None]
        if self.kind == "iterable" and not started and self.stateful:  # before the first iter()
            state.take_snapshot(0, {"state": self.dataset.state_dict(), "iterator_state": None})
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
        method = self.boundary_draws() if self.boundary_draws is not None else None
        draws = method() if method is not None else None
        if state.next_seeds is not None or draws is None or not any(draws):
            return
        base, sampler = draws
        state.next_seeds = {
            "base_seed": _global_seed() if base else None,
            "sampler_seed": _global_seed() if sampler else None,
        }


def _global_seed() -> int:
    return draw_seed()


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


def fresh_state(dataset: Any, kind: str, cache: dict[int, Any], index: int) -> Any:
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


def dataset_length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _identity(batch: Any) -> Any:
    return batch


def pin_device(loader: DataLoader[Any]) -> str | None:
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


def pin_function(loader: DataLoader[Any]) -> Callable[[Any], Any]:
    device = pin_device(loader)
    return _identity if device is None else partial(pin_memory, device=device)
