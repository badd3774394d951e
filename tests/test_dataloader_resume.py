"""StatefulDataLoader resumes exactly: assert_resumable over the configurations that matter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import (
    DataLoader,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

from checkpointable._loader.state_layout import long_form
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.testing import assert_resumable, items_equal
from tests._loader_data import (
    CountingNoise,
    CountingSampler,
    Partitioned,
    PlainSampler,
    Squares,
    StatefulPartitioned,
    sharded,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning"),
    pytest.mark.resumable("StatefulDataLoader"),
]


def reseed(loader: StatefulDataLoader, epoch: int) -> None:
    """Before each epoch, as a training script that restores its RNGs: the shuffles repeat.

    Only while no state is taken at an epoch boundary: such a state draws the next epoch's seeds
    when it is written (see ``next_seeds`` in docs/state_format.md), and assert_resumable takes
    one after every batch. Loaders checked over several epochs with seeds from the global RNG
    therefore get a `generator` (``generator="seeded"``), and those without one are checked over one epoch.
    """
    torch.manual_seed(1000 + epoch)


def seeded() -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(5)
    return generator


def map_loader(num_workers: int = 0, persistent: bool = False, **kwargs: Any) -> StatefulDataLoader:
    """A loader over CountingNoise; ``sampler=<kind>`` / ``batch_sampler="stateful"`` build fresh
    samplers at each call (a factory must not share stateful objects between loaders)."""
    n = kwargs.pop("n", 11)
    kwargs.setdefault("batch_size", 3)
    if isinstance(kwargs.get("sampler"), str):
        kwargs["sampler"] = _sampler(kwargs["sampler"], n)
    if kwargs.get("generator") == "seeded":
        kwargs["generator"] = seeded()
    if kwargs.get("batch_sampler") == "stateful":
        kwargs["batch_sampler"], kwargs["batch_size"] = _StatefulBatches(n), 1
    return StatefulDataLoader(
        CountingNoise(n), num_workers=num_workers, persistent_workers=persistent, **kwargs
    )


# ---------------------------------------------------------------- map-style, no workers


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shuffle": True},
        {"shuffle": True, "drop_last": True},
        {"shuffle": False, "batch_size": None, "n": 6},
        {"sampler": "random_generator"},
        {"sampler": "random_replacement"},
        {"sampler": "stateful"},
        {"sampler": "plain"},
        {"sampler": "subset"},
        {"batch_sampler": "stateful"},
    ],
    ids=str,
)
def test_map_style_without_workers(kwargs: dict[str, Any]) -> None:
    factory = partial(map_loader, 0, False, **kwargs)
    epochs = 1 if kwargs.get("shuffle") else 3  # seeds from the global RNG: see reseed
    items = assert_resumable(factory, epochs=epochs, before_epoch=reseed)
    assert items


def _sampler(kind: str, n: int) -> Any:
    generator = torch.Generator()
    generator.manual_seed(42)
    if kind == "random_generator":
        return RandomSampler(range(n), generator=generator)
    if kind == "random_replacement":
        return RandomSampler(range(n), replacement=True, num_samples=40, generator=generator)
    if kind == "stateful":
        return CountingSampler(n, seed=4)
    if kind == "plain":
        return PlainSampler(n)
    return SubsetRandomSampler(list(range(1, n, 2)), generator=generator)


class _StatefulBatches:
    """A user batch sampler with its own state: batches of 2 from a CountingSampler."""

    def __init__(self, n: int) -> None:
        self.sampler = CountingSampler(n, seed=9)

    def __len__(self) -> int:
        return (len(self.sampler) + 1) // 2

    def __iter__(self) -> Iterator[list[int]]:
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == 2:
                yield batch
                batch = []
        if batch:
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


# ---------------------------------------------------------------- map-style, workers

# Every step is restored without workers; with workers a few chosen steps (each resume starts
# processes): the first steps, mid-epoch, the last batch of an epoch, its end, the next epoch.
FEW = [0, 1, 3, 4, 5, 6, 9]


@pytest.mark.parametrize("kind", ["subset", "weighted"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_samplers_drawing_from_the_global_rng_replay_the_same_order(
    kind: str, num_workers: int
) -> None:
    """SubsetRandomSampler() / WeightedRandomSampler() draw from the global RNG: the resumed run
    draws with a different global RNG, yet replays the epoch's order (every step but the first,
    which starts an epoch: its order comes from the global RNG, as with torch)."""

    def factory() -> StatefulDataLoader:
        if kind == "subset":
            sampler: Any = SubsetRandomSampler(list(range(0, 13)))
        else:
            sampler = WeightedRandomSampler([1.0 + i % 3 for i in range(13)], 13)
        return StatefulDataLoader(Squares(13), 2, sampler=sampler, num_workers=num_workers)

    positions = range(1, 9) if num_workers == 0 else [1, 3, 6, 7]
    assert_resumable(factory, epochs=1, positions=positions)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent", [False, True])
def test_map_style_with_two_workers(persistent: bool) -> None:
    # 11 items in batches of 3: 4 batches and an epoch end per epoch (steps 4 and 5, 9 and 10).
    factory = partial(map_loader, 2, persistent, shuffle=True, generator="seeded")
    assert_resumable(factory, epochs=2, before_epoch=reseed, positions=FEW)
    assert_resumable(partial(map_loader, 2, persistent, shuffle=True), epochs=1, positions=[1, 3])


@pytest.mark.timeout(120)
def test_map_style_with_workers_and_a_stateful_sampler() -> None:
    factory = partial(map_loader, 2, False, sampler="stateful", generator="seeded")
    assert_resumable(factory, epochs=2, before_epoch=reseed, positions=FEW)


@pytest.mark.timeout(240)
def test_map_style_with_spawn_workers() -> None:
    factory = partial(map_loader, 2, True, shuffle=True, multiprocessing_context="spawn")
    assert_resumable(factory, epochs=2, before_epoch=reseed, positions=[6])


# ---------------------------------------------------------------- iterable-style


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("num_workers", "persistent"), [(0, False), (2, False), (2, True)], ids=str
)
def test_stateful_iterable_dataset(num_workers: int, persistent: bool) -> None:
    def factory() -> StatefulDataLoader:
        return StatefulDataLoader(
            StatefulPartitioned(13),
            batch_size=2,
            num_workers=num_workers,
            persistent_workers=persistent,
        )

    positions = None if num_workers == 0 else [0, 2, 5, 7, 8, 10]
    assert_resumable(factory, epochs=2, positions=positions)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterable_dataset_without_state_is_fast_forwarded(num_workers: int) -> None:
    def factory() -> StatefulDataLoader:
        return StatefulDataLoader(Partitioned(13), batch_size=2, num_workers=num_workers)

    positions = None if num_workers == 0 else [1, 4, 7, 9]
    assert_resumable(factory, epochs=2, positions=positions)


@pytest.mark.timeout(120)
def test_snapshots_every_n_steps_restore_exactly() -> None:
    def factory() -> StatefulDataLoader:
        return StatefulDataLoader(
            StatefulPartitioned(25), batch_size=2, num_workers=2, snapshot_every_n_steps=3
        )

    assert_resumable(factory, epochs=1, positions=[2, 3, 5, 8])
    loader = factory()
    for step, _ in enumerate(loader):
        if step == 4:
            break
    state = loader.state_dict()
    loader.close()
    replays = [entry["replay"] for entry in long_form(state)["streams"]]
    # Worker 0 delivered 3 batches (its state came with the 3rd), worker 1 two (none yet).
    assert replays == [0, 2]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_sharded_dataset(num_workers: int) -> None:
    factory = partial(StatefulDataLoader, sharded(23, 3), batch_size=2, num_workers=num_workers)
    positions = None if num_workers == 0 else [0, 3, 8, 12, 13, 14]
    assert_resumable(factory, epochs=2, positions=positions)


@pytest.mark.timeout(240)
def test_forkserver_workers_resume_exactly() -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            sharded(17, 3),
            batch_size=2,
            num_workers=1,
            persistent_workers=True,
            multiprocessing_context="forkserver",
        )

    with make() as loader:
        batches = iter(loader)
        head = [next(batches) for _ in range(3)]
        state = loader.state_dict()
        tail = list(batches)
    with make() as resumed:
        resumed.load_state_dict(state)
        again = list(resumed)
    assert len(head) == 3 and items_equal(again, tail)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    batch_size=st.integers(1, 9),
    drop_last=st.booleans(),
    replacement=st.booleans(),
    extra=st.one_of(st.none(), st.integers(1, 90)),
    seed=st.integers(0, 2**20),
)
def test_a_random_sampler_resumes_at_any_position_as_torch_draws_it(
    n: int, batch_size: int, drop_last: bool, replacement: bool, extra: int | None, seed: int
) -> None:
    """torch's batches from every position on, and the shared generator left as torch leaves it."""

    def make(cls: type, generator: torch.Generator) -> Any:
        sampler = RandomSampler(
            range(n), replacement=replacement, num_samples=extra, generator=generator
        )
        return cls(
            Squares(n), batch_size, sampler=sampler, drop_last=drop_last, generator=generator
        )

    generator = torch.Generator()
    generator.manual_seed(seed)
    expected = [b[0].tolist() for b in make(DataLoader, generator)]
    after = generator.get_state()
    generator.manual_seed(seed)
    loader = make(StatefulDataLoader, generator)
    states = [loader.state_dict()]
    for _ in loader:
        states.append(loader.state_dict())
    for position, state in enumerate(states):
        other = torch.Generator()
        other.manual_seed(seed + 1)  # a restarted run: the generator is not where it was
        resumed = make(StatefulDataLoader, other)
        resumed.load_state_dict(json.loads(json.dumps(state)))
        assert [b[0].tolist() for b in resumed] == expected[position:]
        assert torch.equal(other.get_state(), after)
