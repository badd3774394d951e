"""StatefulDataLoader behaves as torchdata 0.11's (and torch's DataLoader) where users depend on it.

Items of issue 10 (torchdata part) covered here: 1 (stateful iterators), 2 (when a loaded
dataset state is applied), 3 (end-of-epoch states fix the next shuffle), 4 (states before the
first iter fix the base seed), 5 (snapshot_every_n_steps 0 / None), 8 (subscriptable), 9 (the
length warning), 11 (IterDataPipe shared seed), 12 (in_order=False).
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from typing import Any, cast

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from checkpointable import IncompatibleStateError
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.testing import assert_resumable, items_equal
from tests._compat_data import (
    Noisy,
    Overlong,
    ResettingIter,
    SelfIterating,
    SlowFirstItem,
    SlowFirstWorker,
    StatefulIteratorDataset,
    shuffled_pipe,
)
from tests._loader_data import StatefulPartitioned

# ------------------------------------------------------------------ 1. stateful iterators


def iterator_loader(num_workers: int, persistent: bool) -> StatefulDataLoader:
    return StatefulDataLoader(
        StatefulIteratorDataset(5),
        batch_size=2,
        num_workers=num_workers,
        persistent_workers=persistent,
    )


def test_a_stateful_iterator_is_saved_and_restored_without_workers() -> None:
    assert_resumable(partial(iterator_loader, 0, False), epochs=2)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("persistent", [False, True])
def test_a_stateful_iterator_is_saved_and_restored_with_two_workers(persistent: bool) -> None:
    assert_resumable(partial(iterator_loader, 2, persistent), epochs=2, positions=[1, 3, 5])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers, persistent", [(0, False), (2, False), (2, True)])
def test_the_restored_iterator_is_not_fast_forwarded(num_workers: int, persistent: bool) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            StatefulIteratorDataset(5, random_seed=True),
            batch_size=2,
            num_workers=num_workers,
            persistent_workers=persistent,
        )

    loader = make()
    batches = iter(loader)
    next(batches), next(batches)
    state = json.loads(json.dumps(loader.state_dict()))
    rest = list(batches)
    resumed = make()
    resumed.load_state_dict(state)
    assert items_equal(list(resumed), rest)
    if num_workers == 0:
        dataset = cast(StatefulIteratorDataset, resumed.dataset)
        assert dataset.iter_calls == 1  # one new iterator, its state loaded


# ------------------------------------------------- 2. the loaded dataset state sticks


@pytest.mark.timeout(180)
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("dataset", [SelfIterating, ResettingIter])
def test_a_dataset_whose_iter_resets_its_fields_keeps_the_loaded_state(
    dataset: Any, num_workers: int
) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(dataset(9), batch_size=2, num_workers=num_workers)

    loader = make()
    batches = iter(loader)
    next(batches), next(batches)
    state = loader.state_dict()
    rest = [b.tolist() for b in batches]
    resumed = make()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest


# ------------------------------------------------------- 5. snapshot_every_n_steps


@pytest.mark.parametrize("every", [0, None])
def test_snapshot_every_n_steps_accepts_zero_and_none(every: int | None) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            StatefulPartitioned(7), batch_size=2, snapshot_every_n_steps=every
        )

    assert make().snapshot_every_n_steps == every
    assert_resumable(make, epochs=2)


def test_snapshot_every_n_steps_still_refuses_negatives_and_other_types() -> None:
    with pytest.raises(ValueError, match="snapshot_every_n_steps must be >= 0 or None, got"):
        StatefulDataLoader(StatefulPartitioned(3), snapshot_every_n_steps=-1)
    with pytest.raises(TypeError, match="snapshot_every_n_steps must be an int or None"):
        StatefulDataLoader(StatefulPartitioned(3), snapshot_every_n_steps=1.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ 8. typing


def test_the_loader_is_subscriptable_as_torchs() -> None:
    alias = StatefulDataLoader[int]
    loader = alias(list(range(4)), batch_size=2)
    assert isinstance(loader, StatefulDataLoader)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]


# ------------------------------------------------------------------ 9. length warning


def length_warnings(cls: Any, num_workers: int) -> list[str]:
    loader = cls(Overlong(), batch_size=None, num_workers=num_workers)
    assert len(loader) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sorted(int(x) for x in loader) == [0, 1, 2, 3, 4]
    return [str(w.message) for w in caught if "Length of IterableDataset" in str(w.message)]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_iterable_dataset_longer_than_its_len_warns_as_torch(num_workers: int) -> None:
    ours = length_warnings(StatefulDataLoader, num_workers)
    assert ours == length_warnings(DataLoader, num_workers)
    assert len(ours) == 2 and "was reported to be 3" in ours[0]


def test_a_state_of_the_previous_format_version_is_refused_clearly() -> None:
    loader = StatefulDataLoader(StatefulPartitioned(5), batch_size=2)
    state = loader.state_dict()
    old = {**state, "version": 1}
    for entry in old["sources"][1]:
        del entry["iterator_state"]
    with pytest.raises(IncompatibleStateError, match="format version 1, this release"):
        StatefulDataLoader(StatefulPartitioned(5), batch_size=2).load_state_dict(old)


# ------------------------------------- 3. and 4. states at epoch boundaries fix the seeds


def shuffled(num_workers: int, persistent: bool, dataset: Any = None) -> StatefulDataLoader:
    return StatefulDataLoader(
        list(range(10)) if dataset is None else dataset,
        batch_size=3,
        shuffle=True,
        num_workers=num_workers,
        persistent_workers=persistent,
    )


def as_lists(batches: Any) -> list[Any]:
    return [b.tolist() if isinstance(b, torch.Tensor) else [x.tolist() for x in b] for b in batches]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("after_stop", [False, True])
@pytest.mark.parametrize("num_workers, persistent", [(0, False), (2, False), (2, True)])
def test_an_end_of_epoch_state_fixes_the_next_shuffle(
    num_workers: int, persistent: bool, after_stop: bool
) -> None:
    torch.manual_seed(0)
    loader = shuffled(num_workers, persistent)
    batches = iter(loader)
    for _ in range(4):  # the whole epoch: 4 batches
        next(batches)
    if after_stop:
        assert list(batches) == []
    state = json.loads(json.dumps(loader.state_dict()))
    torch.rand(5)  # the training step uses the global RNG before the next epoch
    list(batches)
    expected = as_lists(loader)
    torch.manual_seed(99)  # a fresh process: another global RNG
    resumed = shuffled(num_workers, persistent)
    resumed.load_state_dict(state)
    if not after_stop:
        assert list(resumed) == []  # the rest of the saved epoch
    assert as_lists(resumed) == expected


@pytest.mark.timeout(120)
@pytest.mark.parametrize("persistent", [False, True])
def test_a_state_before_the_first_iter_fixes_the_workers_base_seed(persistent: bool) -> None:
    torch.manual_seed(0)
    loader = shuffled(2, persistent, Noisy())
    state = json.loads(json.dumps(loader.state_dict()))
    torch.rand(5)
    expected = as_lists(loader)
    torch.manual_seed(99)
    resumed = shuffled(2, persistent, Noisy())
    resumed.load_state_dict(state)
    assert as_lists(resumed) == expected


# --------------------------------------------------------------- 12. in_order=False


def out_of_order(dataset: Any) -> StatefulDataLoader:
    return StatefulDataLoader(dataset, batch_size=2, num_workers=2, in_order=False)


@pytest.mark.timeout(120)
def test_out_of_order_a_slow_worker_never_holds_back_the_others_and_the_state_is_exact() -> None:
    loader = out_of_order(SlowFirstWorker(40, 3.0))  # worker 0 sleeps 3 s, worker 1 never
    batches = iter(loader)
    first = [next(batches).tolist() for _ in range(8)]
    assert first == [[i, i + 2] for i in range(1, 32, 4)]  # worker 1's, while worker 0 sleeps
    state = loader.state_dict()
    rest = [b.tolist() for b in batches]
    assert sorted(rest) == sorted([[i, i + 2] for i in range(0, 40, 4)] + [[33, 35], [37, 39]])
    resumed = out_of_order(SlowFirstWorker(40, 0.0))
    resumed.load_state_dict(state)
    assert sorted(b.tolist() for b in resumed) == sorted(rest)


@pytest.mark.timeout(120)
def test_out_of_order_map_style_delivers_the_ready_batches_first() -> None:
    loader = StatefulDataLoader(SlowFirstItem(24, 3.0), batch_size=1, num_workers=2, in_order=False)
    batches = iter(loader)
    first = [int(next(batches)) for _ in range(12)]
    assert 0 not in first
    state = loader.state_dict()
    rest = sorted(int(b) for b in batches)
    resumed = StatefulDataLoader(
        SlowFirstItem(24, 0.0), batch_size=1, num_workers=2, in_order=False
    )
    resumed.load_state_dict(state)
    assert sorted(int(b) for b in resumed) == rest


# ------------------------------------------------- 11. IterDataPipe shuffles, shared seed


def pipe_epochs(cls: Any, num_workers: int, persistent: bool) -> tuple[list[Any], Any]:
    torch.manual_seed(7)
    loader = cls(
        shuffled_pipe(12),
        batch_size=3,
        num_workers=num_workers,
        persistent_workers=persistent,
    )
    epochs = [[b.tolist() for b in loader] for _ in range(3)]
    return epochs, torch.get_rng_state()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers, persistent", [(0, False), (2, True), (2, False)])
def test_iterdatapipe_shuffles_get_torchs_shared_seed(num_workers: int, persistent: bool) -> None:
    ours, our_rng = pipe_epochs(StatefulDataLoader, num_workers, persistent)
    theirs, their_rng = pipe_epochs(DataLoader, num_workers, persistent)
    assert ours == theirs
    assert len({json.dumps(e) for e in ours}) == 3  # each epoch its own shuffle
    assert torch.equal(our_rng, their_rng)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_iterdatapipe_epoch_keeps_its_shuffle(num_workers: int) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(shuffled_pipe(12), batch_size=3, num_workers=num_workers)

    loader = make()
    batches = iter(loader)
    next(batches)
    state = json.loads(json.dumps(loader.state_dict()))
    rest = [b.tolist() for b in batches]
    torch.manual_seed(123)
    resumed = make()
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == rest


# ------------------------------------------------------------------ 7. the sampler module


def test_the_sampler_module_draws_torchs_order() -> None:
    from torch.utils.data import BatchSampler as TorchBatch
    from torch.utils.data import DistributedSampler
    from torch.utils.data import RandomSampler as TorchRandom

    from checkpointable.dataloader import sampler

    def run(make: Any) -> tuple[list[Any], torch.Tensor]:
        torch.manual_seed(3)
        generator = torch.Generator()
        generator.manual_seed(4)
        out = [list(s) for s in make(generator) for _ in range(2)]
        return out, generator.get_state()

    for replacement, num_samples in ((False, None), (False, 23), (True, 40)):
        for with_generator in (False, True):

            def ours(
                g: Any, r: bool = replacement, k: int | None = num_samples, w: bool = with_generator
            ) -> Any:
                return [sampler.RandomSampler(range(10), r, k, g if w else None)]

            def theirs(
                g: Any, r: bool = replacement, k: int | None = num_samples, w: bool = with_generator
            ) -> Any:
                return [TorchRandom(range(10), r, k, g if w else None)]

            assert run(ours)[0] == run(theirs)[0]
            assert torch.equal(run(ours)[1], run(theirs)[1])
    ours_b = sampler.BatchSampler(sampler.RandomSampler(range(10)), 3, False)
    torch.manual_seed(5)
    got = list(ours_b)
    torch.manual_seed(5)
    assert got == list(TorchBatch(TorchRandom(range(10)), 3, False))
    for rank in (0, 1):
        mine = sampler.StatefulDistributedSampler(range(11), 2, rank, seed=3)
        torch_one: DistributedSampler[int] = DistributedSampler(
            cast("Dataset[int]", range(11)), 2, rank, seed=3
        )
        mine.set_epoch(2)
        torch_one.set_epoch(2)
        assert list(mine) == list(torch_one)


def with_generator() -> Any:
    from checkpointable.dataloader import sampler

    generator = torch.Generator()
    generator.manual_seed(11)
    return sampler.RandomSampler(range(9), generator=generator)


def test_the_stateful_samplers_resume_exactly() -> None:
    from checkpointable.dataloader import sampler

    assert_resumable(with_generator, epochs=3)
    assert_resumable(lambda: sampler.BatchSampler(with_generator(), 2, False), epochs=3)
    assert_resumable(lambda: sampler.BatchSampler(range(7), 3, True), epochs=2)
    assert_resumable(lambda: sampler.StatefulDistributedSampler(range(9), 2, 1), epochs=1)
    # Without a generator the pass's seed is drawn at its first index, as torch's: states from
    # then on hold it (a state before that leaves the draw to the global RNG, as torch does).
    assert_resumable(lambda: sampler.RandomSampler(range(9)), epochs=1, positions=range(1, 10))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_the_loader_resumes_over_the_stateful_samplers(num_workers: int) -> None:
    from checkpointable.dataloader import sampler

    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            list(range(9)),
            batch_sampler=sampler.BatchSampler(with_generator(), 2, False),
            num_workers=num_workers,
        )

    assert_resumable(make, epochs=2, positions=[0, 2, 5, 6])
