"""A state loads with another num_workers (map style, sharded datasets) and stays exactly-once with
out-of-order delivery."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from checkpointable import IncompatibleStateError, ResumableRandomSampler
from checkpointable._loader.state_layout import long_form
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.testing import items_equal
from tests._loader_data import (
    CountingNoise,
    CountingSampler,
    Slow,
    Squares,
    StatefulPartitioned,
    sharded,
)

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")

WORKERS = [0, 1, 2, 3]


def make(kind: str, num_workers: int, **kwargs: Any) -> StatefulDataLoader:
    if kind == "map":
        return StatefulDataLoader(
            Squares(29), batch_size=3, shuffle=True, num_workers=num_workers, **kwargs
        )
    return StatefulDataLoader(sharded(29, 4), batch_size=2, num_workers=num_workers, **kwargs)


def epochs(loader: StatefulDataLoader, first: int, last: int) -> list[Any]:
    """The batches of epochs first..last-1, with the global RNG seeded per epoch."""
    out: list[Any] = []
    for epoch in range(first, last):
        torch.manual_seed(100 + epoch)
        out.extend(loader)
        out.append("end")
    return out


def partial_epoch(loader: StatefulDataLoader, count: int) -> list[Any]:
    torch.manual_seed(100)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["map", "sharded"])
def test_a_state_saved_with_any_num_workers_loads_with_any_other(kind: str) -> None:
    with make(kind, 0) as reference_loader:
        reference = epochs(reference_loader, 0, 2)
    for saved_with in WORKERS:
        loader = make(kind, saved_with)
        head = partial_epoch(loader, 5)
        mid_epoch = loader.state_dict()
        loader.close()
        assert items_equal(head, reference[:5])
        loader = make(kind, saved_with)
        first = epochs(loader, 0, 1)
        between_epochs = loader.state_dict()
        # A state between epochs fixes the next epoch (its seeds are drawn when it is written,
        # as torchdata's state fixes it): the reseed before epoch 1 no longer changes it.
        second = epochs(loader, 1, 2)
        loader.close()
        assert items_equal(first, reference[: len(first)])
        for loaded_with in WORKERS:
            for state, expected, next_epoch in (
                (mid_epoch, reference[5:], 0),
                (between_epochs, second, 1),
            ):
                with make(kind, loaded_with) as resumed:
                    resumed.load_state_dict(state)
                    if next_epoch == 0:  # the rest of epoch 0, unseeded: the state holds its seed
                        rest = [*resumed, "end", *epochs(resumed, 1, 2)]
                    else:
                        rest = epochs(resumed, 1, 2)
                where = f"saved with {saved_with} workers, loaded with {loaded_with}"
                assert items_equal(rest, expected), where


@pytest.mark.timeout(120)
def test_a_dataset_state_is_dropped_with_a_warning_when_num_workers_changes() -> None:
    loader = StatefulDataLoader(CountingNoise(20), batch_size=2, num_workers=2)
    head = partial_epoch(loader, 3)
    state = loader.state_dict()
    loader.close()
    resumed = StatefulDataLoader(CountingNoise(20), batch_size=2, num_workers=1)
    with pytest.warns(UserWarning, match=r"num_workers=2 .* num_workers=1: the sample order"):
        resumed.load_state_dict(state)
    rest = list(resumed)
    resumed.close()
    assert [int(i) for batch in head + rest for i in batch[0]] == list(range(20))


def test_a_plain_iterable_state_needs_the_same_num_workers() -> None:
    loader = StatefulDataLoader(StatefulPartitioned(10), batch_size=2, num_workers=0)
    state = loader.state_dict()
    other = StatefulDataLoader(StatefulPartitioned(10), batch_size=2, num_workers=2)
    with pytest.raises(IncompatibleStateError, match=r"num_workers=0, but this loader has num_wo"):
        other.load_state_dict(state)


def _ids(batches: list[Any]) -> list[int]:
    return [int(i) for batch in batches for i in (batch[0] if isinstance(batch, list) else batch)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("loaded_with", [0, 2])
def test_out_of_order_delivery_stays_exactly_once_after_a_resume(loaded_with: int) -> None:
    n = 40
    loader = StatefulDataLoader(
        Slow(n), batch_size=1, num_workers=2, in_order=False, prefetch_factor=4
    )
    seen: list[Any] = []
    state = None
    for batch in loader:
        seen.append(batch)
        candidate = loader.state_dict()
        if long_form(candidate)["delivered_beyond"] and len(seen) >= 6:
            state = candidate
            break
    loader.close()
    assert state is not None, "no batch was delivered out of order: the test proves nothing"
    delivered = set(_ids(seen))
    named = long_form(state)
    assert delivered == set(range(named["batches"])) | set(named["delivered_beyond"])
    with StatefulDataLoader(
        Slow(n), batch_size=1, num_workers=loaded_with, in_order=loaded_with == 0
    ) as resumed:
        resumed.load_state_dict(state)
        rest = _ids(list(resumed))
    assert sorted(_ids(seen) + rest) == list(range(n))  # every item exactly once


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["sharded", "iterable"])
def test_out_of_order_iterable_styles_stay_exactly_once(kind: str) -> None:
    def build(num_workers: int) -> StatefulDataLoader:
        dataset = sharded(37, 5) if kind == "sharded" else StatefulPartitioned(37)
        return StatefulDataLoader(dataset, batch_size=2, num_workers=num_workers, in_order=False)

    loader = build(2)
    head = partial_epoch(loader, 6)
    state = loader.state_dict()
    loader.close()
    with build(2) as resumed:
        resumed.load_state_dict(state)
        rest = list(resumed)
    items = [int(i) for batch in head + rest for i in batch]
    assert sorted(items) == list(range(37))
    assert len(long_form(state)["streams"]) == (5 if kind == "sharded" else 2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sampler", ["counting", "resumable"])
def test_out_of_order_delivery_with_a_stateful_sampler_stays_exactly_once(sampler: str) -> None:
    """A resetting user sampler and our resumable one, two epochs, resumed with 0 workers."""
    n = 23

    def build(num_workers: int) -> StatefulDataLoader:
        chosen = (
            CountingSampler(n, seed=3)
            if sampler == "counting"
            else (ResumableRandomSampler(Slow(n), seed=3))
        )
        return StatefulDataLoader(
            Slow(n), batch_size=2, sampler=chosen, num_workers=num_workers,
            in_order=num_workers == 0, prefetch_factor=4 if num_workers else None,
        )  # fmt: skip

    loader = build(2)
    first_epoch = _ids(list(loader))
    seen: list[Any] = []
    state = None
    for batch in loader:  # the second epoch
        seen.append(batch)
        candidate = loader.state_dict()
        if long_form(candidate)["delivered_beyond"] and len(seen) >= 4:
            state = candidate
            break
    loader.close()
    assert state is not None, "no batch was delivered out of order: the test proves nothing"
    with build(0) as resumed:
        resumed.load_state_dict(state)
        rest = _ids(list(resumed))
        third_epoch = _ids(list(resumed))
    assert sorted(first_epoch) == sorted(_ids(seen) + rest) == sorted(third_epoch) == list(range(n))
