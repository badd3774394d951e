"""Skipping batches (`StatefulDataLoader.skip`): position arithmetic, never a read of the data.

A skip of `n` batches cuts out the next `n` batches the loader would deliver. The part that
falls in the current epoch moves the epoch's position at once; what goes beyond the epoch's
end is kept as ``pending`` and cut from the start of the next epoch(s) when they begin. How the
position moves depends on how the map-style plan keeps it (see `indices`):

- torch's ``SequentialSampler`` / ``RandomSampler``, and a replayed sampler with ``len()``: the
  position is the count of delivered batches, so a skip marks the next `n` batches delivered
  (the next ``iter()`` seeks the regenerated order there, or replays the indices, as any resume
  does);
- a stateful sampler with ``advance(num_samples)`` (our resumable samplers, a
  ``ShardedDataset``'s sampler): ``advance`` moves the sampler itself, and the sampler tells
  where its pass ends.

A `ShardedIterableDataset` whose shards have ``skip(num_items)`` (returning the items skipped,
fewer when the shard ends) is skipped the loader's way: batch after batch, the next shard in
round-robin order that has not ended skips a batch's worth of items, so the shards that end
inside the skip are found as the loader would find them; each touched shard's state is then
taken as its new snapshot.
"""

from __future__ import annotations

from typing import Any

from .._checks import close, require_int
from .._rng import draw_seed, encode_torch_generator
from .._state import StateBase
from .indices import RANDOM, REPLAY, STATEFUL, IndexPlan
from .parts import DatasetKind
from .state import LoaderState

__all__ = ["check_skippable", "cut_epoch", "cut_positions", "cut_shards"]

_OWNER = "StatefulDataLoader.skip"


def check_skippable(
    num_batches: Any, kind: DatasetKind, plan: IndexPlan | None, length: int | None, dataset: Any
) -> int:
    """Check the argument and that this loader's position can be moved by arithmetic.

    Raises:
        TypeError: `num_batches` is not an int (a bool is refused), or the loader's dataset or
            sampler has no arithmetic for its position.
        ValueError: `num_batches` < 0.
    """
    count = require_int(num_batches, _OWNER, "num_batches", minimum=0)
    if kind is DatasetKind.SHARDED:
        shard = dataset.open_shard(0)
        try:
            if not callable(getattr(shard, "skip", None)):
                raise TypeError(
                    f"{_OWNER}: the shards of this ShardedIterableDataset "
                    f"({type(shard).__name__}) have no skip(num_items) method, so their "
                    "positions cannot be moved without reading"
                )
        finally:
            close(shard)
        return count
    if plan is None:
        raise TypeError(
            f"{_OWNER}: skipping needs a map-style dataset (with a sampler); this loader reads a "
            f"{kind} IterableDataset, whose position lives in its workers' copies: skip inside "
            "the dataset instead"
        )
    if plan.kind == STATEFUL:
        if plan.user_batches or not callable(getattr(plan.sampler, "advance", None)):
            role = "batch sampler" if plan.user_batches else "sampler"
            raise TypeError(
                f"{_OWNER}: the {role} {type(plan.sampler).__name__} has a state but no "
                "advance(num_samples) method, so its position cannot be moved without drawing; "
                "use one of checkpointable.samplers (they have advance), or give it advance()"
            )
    elif plan.kind == REPLAY and length is None:
        raise TypeError(
            f"{_OWNER}: the sampler {type(plan.sampler).__name__} has no len(), so the end of "
            "its epoch is not known; give it __len__, or use one of checkpointable.samplers"
        )
    return count


def cut_positions(batches: int, beyond: set[int], count: int) -> tuple[int, set[int]]:
    """Mark the next `count` undelivered positions delivered; return the new low watermark and
    the positions delivered above it (cost: the size of `beyond`, at most the prefetch window).

    >>> cut_positions(2, {3, 6}, 2)  # 2 and 4 are cut; 3 was delivered; 5 comes next
    (5, {6})
    """
    end = batches + count
    for position in sorted(beyond):
        if position < end:
            end += 1  # a delivered position inside the cut: the cut reaches one further
        elif position == end:
            end += 1  # delivered right after the cut: the watermark passes it
        else:
            break
    return end, {position for position in beyond if position > end}


def cut_epoch(
    state: LoaderState, plan: IndexPlan, total: int | None, count: int, record: bool = True
) -> int:
    """Cut up to `count` batches from the rest of the current epoch; return how many were cut.

    `total` is the epoch's number of batches (``len(loader)``), or None for a stateful sampler,
    whose ``advance`` says where its pass ends. With `record`, a ``RandomSampler`` epoch whose
    seed (or its generator's state) is not drawn yet gets it now, so that the state written
    after the skip names its order; without it (an epoch that ``iter()`` is starting), the
    caller opens the epoch's indices once the workers' base seed is drawn, in torch's order.
    """
    if count == 0 or state.sampler_exhausted:
        return 0
    batches, beyond = state.batches, state.beyond
    if plan.kind != STATEFUL:
        if total is None:
            raise RuntimeError(f"{_OWNER}: no epoch length (internal error)")
        count = min(count, total - batches - len(beyond))
        if count <= 0:
            return 0
        state.batches, state.beyond = cut_positions(batches, beyond, count)
        if plan.kind == RANDOM and record:
            record_order(state, plan)
        return count
    new_batches, new_beyond = cut_positions(batches, beyond, count)
    per_task = plan.batch_size or 1
    wanted = (new_batches - batches) * per_task
    done = plan.sampler.advance(wanted)
    done = wanted if done is None else done
    if done < wanted:  # the pass ended inside the cut: its last tasks are the last ones
        tasks = done // per_task if plan.drop_last else -(-done // per_task)
        count = tasks - sum(1 for position in beyond if position < batches + tasks)
        new_batches, new_beyond = batches + tasks, set()
    state.batches, state.beyond = new_batches, new_beyond
    state.sampler_state = plan.capture()
    return count


def record_order(state: LoaderState, plan: IndexPlan) -> None:
    """Fix now what a ``RandomSampler`` epoch's order is drawn from, if not yet drawn: its seed
    from the global RNG (as the sampler's first draw would), or its generator's state."""
    generator = plan.generator
    if generator is not None:
        if state.generator_state is None:
            state.generator_state = encode_torch_generator(generator)
    elif state.seed is None:
        state.seed = draw_seed()


def cut_shards(
    state: LoaderState, dataset: Any, batch_size: int | None, drop_last: bool, count: int
) -> int:
    """Cut up to `count` batches from the rest of a `ShardedIterableDataset` epoch, taking the
    shards round-robin as the loader does; return how many were cut (fewer: every shard ended).
    A shard's batches delivered after its snapshot (``replay``) are skipped too, not read."""
    size = batch_size or 1
    streams = state.streams
    shards: dict[int, Any] = {}

    def shard_at(index: int) -> Any:
        if index not in shards:
            entry = streams[index]
            shard = dataset.open_shard(index)
            if not entry["fresh"]:
                shard.load_state_dict(entry["state"])
            if entry["replay"]:
                shard.skip(entry["replay"] * size)
            shards[index] = shard
        return shards[index]

    cut = 0
    try:
        while cut < count and not all(entry["ended"] for entry in streams):
            index = state.next_stream
            state.next_stream = (index + 1) % len(streams)
            entry = streams[index]
            if entry["ended"]:
                continue
            skipped = shard_at(index).skip(size)
            skipped = size if skipped is None else skipped
            if skipped < size:
                entry["ended"] = True
            if skipped and not (drop_last and skipped < size):
                cut += 1
        for index, shard in shards.items():
            entry = streams[index]
            entry["state"], entry["iterator_state"] = StateBase.nested_state(shard), None
            entry["fresh"], entry["replay"] = False, 0
    finally:
        for shard in shards.values():
            close(shard)
    state.batches += cut
    return cut
