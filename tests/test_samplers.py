"""The resumable samplers: orders, positions, epochs, state, errors and the registry."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from itertools import islice
from typing import Any, cast

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from checkpointable import IncompatibleStateError
from checkpointable.samplers import (
    SAMPLER_REGISTRY,
    Registry,
    ResumableDistributedSampler,
    ResumableRandomSampler,
    ResumableSampler,
    ResumableSamplerType,
    ResumableSequentialSampler,
    create_sampler,
)
from checkpointable.testing import assert_resumable


def ints(n: int) -> Dataset[int]:
    """range(n) as torch's samplers and DataLoader read a dataset (len() and [i])."""
    return cast("Dataset[int]", range(n))


set_epoch = ResumableSampler.set_epoch  # picklable, for before_epoch in a fresh process


def helios_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()


# ---------------------------------------------------------------------------- orders
@pytest.mark.parametrize(("n", "seed", "epoch"), [(0, 0, 0), (1, 3, 0), (10, 0, 4), (5000, 7, 2)])
def test_random_order_is_helios_order(n: int, seed: int, epoch: int) -> None:
    sampler = ResumableRandomSampler(range(n), seed=seed)
    sampler.set_epoch(epoch)
    assert list(sampler) == helios_order(n, seed, epoch)
    assert len(sampler) == n


def test_sequential_order_is_range() -> None:
    assert list(ResumableSequentialSampler(range(9000), batch_size=3)) == list(range(9000))


def test_yields_python_ints() -> None:
    assert {type(i) for i in ResumableRandomSampler(range(5))} == {int}
    assert {type(i) for i in ResumableDistributedSampler(range(5), 2, 1)} == {int}


@pytest.mark.parametrize("position", [0, 1, 4095, 4096, 4097, 9999, 10000])
def test_random_resumes_at_any_position_across_chunks(position: int) -> None:
    sampler = ResumableRandomSampler(range(10000), seed=2)
    it = iter(sampler)
    head = list(islice(it, position))
    state = json.loads(json.dumps(sampler.state_dict()))
    assert state["position"] == position
    restored = ResumableRandomSampler(range(10000), seed=2)
    restored.load_state_dict(state)
    assert head + list(restored) == helios_order(10000, 2, 0)


# ---------------------------------------------------------------------------- assert_resumable
@pytest.mark.resumable("ResumableRandomSampler")
@pytest.mark.parametrize(("n", "seed", "batch_size"), [(0, 0, 1), (1, 0, 1), (7, 1, 3), (25, 5, 4)])
def test_random_sampler_is_resumable(n: int, seed: int, batch_size: int) -> None:
    items = assert_resumable(
        lambda: ResumableRandomSampler(range(n), seed=seed, batch_size=batch_size),
        epochs=3,
        before_epoch=set_epoch,
    )
    assert items == [i for e in range(3) for i in helios_order(n, seed, e)]


@pytest.mark.resumable("ResumableSequentialSampler")
@pytest.mark.parametrize(("n", "batch_size"), [(0, 1), (5, 1), (13, 4)])
def test_sequential_sampler_is_resumable(n: int, batch_size: int) -> None:
    items = assert_resumable(
        lambda: ResumableSequentialSampler(range(n), batch_size=batch_size),
        epochs=3,
        before_epoch=set_epoch,
    )
    assert items == list(range(n)) * 3


@pytest.mark.parametrize(
    ("n", "replicas", "rank", "shuffle", "drop_last"),
    [
        (10, 2, 0, True, False),
        (11, 3, 2, True, False),
        (11, 3, 1, False, True),
        (11, 4, 3, True, True),
        (2, 3, 2, True, False),  # fewer samples than ranks: padding only
        (2, 3, 0, False, True),  # fewer samples than ranks: nothing
        (0, 2, 1, True, False),
    ],
)
@pytest.mark.resumable("ResumableDistributedSampler")
def test_distributed_sampler_is_resumable(
    n: int, replicas: int, rank: int, shuffle: bool, drop_last: bool
) -> None:
    def factory() -> ResumableDistributedSampler:
        return ResumableDistributedSampler(
            range(n), replicas, rank, shuffle=shuffle, seed=4, drop_last=drop_last, batch_size=2
        )

    items = assert_resumable(factory, epochs=3, before_epoch=set_epoch)
    expected = []
    for epoch in range(3):
        torch_sampler: torch.utils.data.DistributedSampler[int] = (
            torch.utils.data.DistributedSampler(
                ints(n), replicas, rank, shuffle=shuffle, seed=4, drop_last=drop_last
            )
        )
        torch_sampler.set_epoch(epoch)
        expected += list(torch_sampler)
    assert items == expected


def test_resumable_in_a_fresh_process() -> None:
    factory = functools.partial(ResumableRandomSampler, range(12), seed=9, batch_size=5)
    assert_resumable(factory, epochs=2, before_epoch=set_epoch, fresh_process=True)


class ListOrder(ResumableSampler):
    """A user-defined sampler: the base class does position and state."""

    def __len__(self) -> int:
        return 6

    def order(self, epoch: int) -> list[int]:
        return [(3 * i + epoch) % 6 for i in range(6)]


@pytest.mark.resumable("ResumableSampler")
def test_user_subclass_with_a_list_order_is_resumable() -> None:
    items = assert_resumable(lambda: ListOrder(2), epochs=2, before_epoch=set_epoch)
    assert items == ListOrder(2).order(0) + ListOrder(2).order(1)


def test_an_order_of_the_wrong_length_is_reported() -> None:
    class Wrong(ListOrder):
        def order(self, epoch: int) -> list[int]:
            return [0, 1]

    with pytest.raises(
        RuntimeError, match=r"order\(0\) has 2 indices, but the sampler's len\(\) is 6"
    ):
        list(Wrong(1))


# ---------------------------------------------------------------------------- epochs and position
def test_set_epoch_same_epoch_keeps_the_position_other_epoch_resets_it() -> None:
    sampler = ResumableRandomSampler(range(10), seed=1, batch_size=2)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = list(islice(it, 4))
    state = sampler.state_dict()
    restored = ResumableRandomSampler(range(10), seed=1, batch_size=2)
    restored.load_state_dict(state)
    restored.set_epoch(2)  # a training script calls this at the top of the epoch
    assert (restored.epoch, restored.position, restored.start_iter) == (2, 4, 2)
    assert head + list(restored) == helios_order(10, 1, 2)
    restored.load_state_dict(state)
    restored.set_epoch(3)
    assert restored.position == 0 and list(restored) == helios_order(10, 1, 3)


def test_the_skip_is_not_applied_to_later_epochs() -> None:
    """The anchors' bug: a resumed start_iter stayed in force for the following epochs."""
    sampler = ResumableRandomSampler(range(10), seed=0, batch_size=3)
    sampler.start_iter = 2
    assert list(sampler) == helios_order(10, 0, 0)[6:]
    assert len(sampler) == 10  # still the whole epoch's length
    assert list(sampler) == helios_order(10, 0, 0)  # iterated again: the whole epoch
    sampler.start_iter = 2
    list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) == helios_order(10, 0, 1)


def test_the_position_stays_at_the_end_until_the_next_iterator() -> None:
    """A DataLoader exhausts the sampler while it draws the last partial batch; a checkpoint
    taken while that batch is trained on must not resume at the start of the epoch."""
    sampler = ResumableSequentialSampler(range(5), batch_size=2)
    assert list(sampler) == [0, 1, 2, 3, 4]
    state = sampler.state_dict()
    assert (state["position"], sampler.start_iter) == (5, 3)
    restored = ResumableSequentialSampler(range(5), batch_size=2)
    restored.load_state_dict(state)
    assert list(restored) == []  # the rest of the epoch: nothing
    assert list(restored) == [0, 1, 2, 3, 4]


def test_only_the_newest_iterator_moves_the_position() -> None:
    sampler = ResumableSequentialSampler(range(6))
    old = iter(sampler)
    next(old)
    new = iter(sampler)  # continues from where the old one was
    assert next(new) == 1
    assert list(old) == [1, 2, 3, 4, 5]  # runs out without touching the state
    assert sampler.position == 2 and list(new) == [2, 3, 4, 5]


def test_an_iterator_taken_before_set_epoch_keeps_its_order_but_stops_counting() -> None:
    sampler = ResumableRandomSampler(range(6), seed=0)
    it = iter(sampler)
    next(it)
    sampler.set_epoch(1)
    assert sampler.position == 0
    assert len(list(it)) == 5 and sampler.position == 0


def test_start_iter_setter_and_changed_batch_size() -> None:
    sampler = ResumableRandomSampler(range(10), seed=5, batch_size=4)
    sampler.start_iter = 3  # every batch drawn, the last one partial
    assert (sampler.position, list(sampler)) == (10, [])
    state_sampler = ResumableRandomSampler(range(10), seed=5, batch_size=4)
    it = iter(state_sampler)
    list(islice(it, 4))
    other = ResumableRandomSampler(range(10), seed=5, batch_size=3)  # batch size changed
    other.load_state_dict(state_sampler.state_dict())
    assert (other.position, other.start_iter) == (4, 2)
    assert list(other) == helios_order(10, 5, 0)[4:]


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_resumes_through_a_torch_dataloader_at_every_batch(batch_size: int) -> None:
    n = 11

    def loader(sampler: Sampler[int]) -> DataLoader[int]:
        return DataLoader(ints(n), batch_size=batch_size, sampler=sampler, num_workers=0)

    def sampler() -> ResumableRandomSampler:
        return ResumableRandomSampler(range(n), seed=3, batch_size=batch_size)

    full = [b.tolist() for b in loader(sampler())]
    for stop in range(len(full) + 1):
        first = sampler()
        taken = [b.tolist() for b in islice(loader(first), stop)]
        assert first.start_iter == stop
        second = sampler()
        second.load_state_dict(json.loads(json.dumps(first.state_dict())))
        assert taken + [b.tolist() for b in loader(second)] == full
        # helios' way: set start_iter from the training loop's own counter
        third = sampler()
        third.start_iter = stop
        assert taken + [b.tolist() for b in loader(third)] == full


def test_distributed_batch_size_changes_only_start_iter() -> None:
    sampler = ResumableDistributedSampler(range(20), 2, 0, batch_size=3)
    list(islice(iter(sampler), 6))
    state = sampler.state_dict()
    assert (state["progress"], state["position"], sampler.start_iter) == (12, 6, 2)
    other = ResumableDistributedSampler(range(20), 2, 0, batch_size=4)
    other.load_state_dict(state)
    assert other.start_iter == 2 and other.position == 6
    torch_order: list[int] = list(torch.utils.data.DistributedSampler(ints(20), 2, 0))
    assert list(other) == torch_order[6:]


def test_distributed_start_iter_setter_is_heliosish() -> None:
    sampler = ResumableDistributedSampler(range(11), 3, 1, seed=2, batch_size=2)
    sampler.set_epoch(5)
    sampler.start_iter = 1
    torch_sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        ints(11), 3, 1, seed=2
    )
    torch_sampler.set_epoch(5)
    assert sampler.progress == 6 and list(sampler) == list(torch_sampler)[2:]


# ---------------------------------------------------------------------------- state
def test_state_is_plain_ints_and_names_the_configuration() -> None:
    state = ResumableRandomSampler(range(4), seed=2).state_dict()
    assert state == {
        "version": 3,
        "type": "ResumableRandomSampler",
        "epoch": 0,
        "dataset_length": 4,
        "seed": 2,
        "position": 0,
    }
    state = ResumableDistributedSampler(range(4), 2, 1, drop_last=True).state_dict()
    assert state == {
        "version": 3,
        "type": "ResumableDistributedSampler",
        "epoch": 0,
        "dataset_length": 4,
        "seed": 0,
        "shuffle": True,
        "drop_last": True,
        "progress": 0,
        "position": 0,
    }


@pytest.mark.parametrize(
    ("saved", "loading", "message"),
    [
        (
            lambda: ResumableRandomSampler(range(10)),
            lambda: ResumableRandomSampler(range(12)),
            "saved with dataset_length=10, but this object has dataset_length=12",
        ),
        (
            lambda: ResumableRandomSampler(range(10), seed=1),
            lambda: ResumableRandomSampler(range(10), seed=2),
            "saved with seed=1, but this object has seed=2",
        ),
        (
            lambda: ResumableSequentialSampler(range(10)),
            lambda: ResumableRandomSampler(range(10)),
            "saved by 'ResumableSequentialSampler', not by 'ResumableRandomSampler'",
        ),
        (
            lambda: ResumableDistributedSampler(range(10), 2, 0),
            lambda: ResumableDistributedSampler(range(9), 3, 0),
            "saved with dataset_length=10, but this object has dataset_length=9",
        ),
        (
            lambda: ResumableDistributedSampler(range(10), 2, 0, drop_last=True),
            lambda: ResumableDistributedSampler(range(10), 2, 0),
            "saved with drop_last=True, but this object has drop_last=False",
        ),
        (
            lambda: ResumableDistributedSampler(range(10), 2, 0),
            lambda: ResumableRandomSampler(range(10)),
            "saved by 'ResumableDistributedSampler', not by 'ResumableRandomSampler'",
        ),
    ],
)
def test_incompatible_states_are_refused_naming_both_values(
    saved: Callable[[], Any], loading: Callable[[], Any], message: str
) -> None:
    with pytest.raises(IncompatibleStateError, match=message):
        loading().load_state_dict(saved().state_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"position": 11}, "'position' is 11, beyond the epoch's 10 samples"),
        ({"position": -1}, "'position' must be an int >= 0, got -1"),
        ({"position": 2.0}, "'position' must be an int >= 0, got 2.0"),
        ({"epoch": "1"}, "'epoch' must be an int >= 0"),
        ({"version": 99}, "format version 99"),
        ({"extra": 1}, r"unexpected key\(s\) \['extra'\]"),
    ],
)
def test_corrupt_states_are_refused(change: dict[str, Any], message: str) -> None:
    state = {**ResumableRandomSampler(range(10)).state_dict(), **change}
    with pytest.raises(IncompatibleStateError, match=message):
        ResumableRandomSampler(range(10)).load_state_dict(state)


def test_distributed_progress_beyond_the_epoch_is_refused() -> None:
    state = {**ResumableDistributedSampler(range(10), 2, 0).state_dict(), "progress": 11}
    with pytest.raises(IncompatibleStateError, match="'progress' is 11, beyond the epoch's 10"):
        ResumableDistributedSampler(range(10), 2, 0).load_state_dict(state)


def test_missing_key_is_refused() -> None:
    state = ResumableSequentialSampler(range(3)).state_dict()
    del state["position"]
    with pytest.raises(IncompatibleStateError, match=r"lacks the key\(s\) \['position'\]"):
        ResumableSequentialSampler(range(3)).load_state_dict(state)


# ---------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: ResumableRandomSampler(range(3), batch_size=0), ValueError, "batch_size must be a positive int, got batch_size=0"),
        (lambda: ResumableRandomSampler(range(3), batch_size="2"), TypeError, "batch_size must be an int, got '2'"),  # type: ignore[arg-type]
        (lambda: ResumableRandomSampler(range(3), batch_size=True), TypeError, "batch_size must be an int, got True"),
        (lambda: ResumableSampler(-1), ValueError, "batch_size must be a positive int, got batch_size=-1"),
        (lambda: ResumableRandomSampler(iter([1, 2])), TypeError, "data_source must be a sized dataset"),  # type: ignore[arg-type]
        (lambda: ResumableSequentialSampler(None), TypeError, "data_source must be a sized dataset.*NoneType"),  # type: ignore[arg-type]
        (lambda: ResumableRandomSampler(range(3), seed=1.5), TypeError, "seed must be an int, got 1.5"),  # type: ignore[arg-type]
        (lambda: ResumableRandomSampler(range(3), seed=2**64), ValueError, r"seed must be in \[-2\*\*63, 2\*\*64\)"),
        (lambda: ResumableDistributedSampler(range(3), 2, 2), ValueError, "rank must be < num_replicas, got rank=2, num_replicas=2"),
        (lambda: ResumableDistributedSampler(range(3), 2, -1), ValueError, "rank must be an int >= 0, got rank=-1"),
        (lambda: ResumableDistributedSampler(range(3), 0, 0), ValueError, "num_replicas must be a positive int, got num_replicas=0"),
        (lambda: ResumableDistributedSampler(range(3), 2.0, 0), TypeError, "num_replicas must be an int"),  # type: ignore[arg-type]
        (lambda: ResumableDistributedSampler(range(3), 2, 0, shuffle=1), TypeError, "shuffle must be a bool, got 1"),  # type: ignore[arg-type]
        (lambda: ResumableDistributedSampler(range(3), 2, 0, drop_last=None), TypeError, "drop_last must be a bool"),  # type: ignore[arg-type]
        (lambda: ResumableDistributedSampler(range(3), 2, 0, batch_size=0), ValueError, "batch_size must be a positive int"),
        (lambda: ResumableDistributedSampler(range(3)), ValueError, "num_replicas=None needs an initialised torch.distributed process group"),
        (lambda: ResumableDistributedSampler(range(3), num_replicas=2), ValueError, "rank=None needs an initialised"),
    ],
)  # fmt: skip
def test_bad_arguments_are_named(
    make: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        make()


def test_bad_epoch_and_start_iter_are_named() -> None:
    sampler = ResumableRandomSampler(range(10), batch_size=4)
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got epoch=-1"):
        sampler.set_epoch(-1)
    with pytest.raises(TypeError, match=r"epoch must be an int, got 1\.0"):
        sampler.epoch = 1.0  # type: ignore[assignment]
    with pytest.raises(ValueError, match="start_iter must be an int >= 0, got start_iter=-1"):
        sampler.start_iter = -1
    with pytest.raises(
        ValueError, match=r"start_iter must be <= 3, the number of batches .*got start_iter=4"
    ):
        sampler.start_iter = 4
    huge = ResumableRandomSampler(range(3), seed=2**64 - 1)
    huge.set_epoch(1)
    with pytest.raises(ValueError, match=r"seed \+ epoch must be in \[-2\*\*63, 2\*\*64\)"):
        list(huge)


def test_repr_shows_the_configuration() -> None:
    assert repr(ResumableRandomSampler(range(4), seed=2, batch_size=3)) == (
        "ResumableRandomSampler(dataset_length=4, seed=2, batch_size=3)"
    )
    assert repr(ResumableDistributedSampler(range(4), 2, 1)) == (
        "ResumableDistributedSampler(dataset_length=4, num_replicas=2, rank=1, seed=0, "
        "shuffle=True, drop_last=False, batch_size=1)"
    )


# ---------------------------------------------------------------------------- registry
def test_the_three_samplers_are_registered_and_created_by_name() -> None:
    assert list(SAMPLER_REGISTRY.keys()) == [
        "ResumableRandomSampler",
        "ResumableSequentialSampler",
        "ResumableDistributedSampler",
    ]
    sampler = create_sampler("ResumableDistributedSampler", range(6), num_replicas=2, rank=1)
    assert isinstance(sampler, ResumableDistributedSampler)
    assert isinstance(sampler, torch.utils.data.DistributedSampler)
    assert isinstance(sampler, ResumableSamplerType)
    assert isinstance(create_sampler("ResumableRandomSampler", range(2)), ResumableSamplerType)


def test_registry_as_decorator_and_call_with_clear_errors() -> None:
    registry = Registry("sampler")

    @registry.register
    class Mine(ResumableSequentialSampler):
        pass

    assert registry.get("Mine") is Mine
    assert registry.register(ListOrder) is ListOrder
    assert registry.register(ListOrder, suffix="v2") is ListOrder
    assert registry.get("ListOrder", suffix="v2") is ListOrder and len(registry) == 3
    with pytest.raises(
        ValueError, match="an object named 'Mine' is already registered in the 'sampler'"
    ):
        registry.register(Mine)
    with pytest.raises(AssertionError):  # helios asserted
        registry.register(Mine)
    with pytest.raises(
        KeyError,
        match=r"no object named 'Nope' in the 'sampler' registry; registered: \['ListOrder', 'ListOrder_v2', 'Mine'\]",
    ):
        registry.get("Nope")
    with pytest.raises(TypeError, match="only objects with a __name__"):
        registry.register(3)
    with pytest.raises(KeyError, match=r"no object named 'Nope'.*ResumableRandomSampler"):
        create_sampler("Nope", range(3))
