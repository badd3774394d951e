"""Stream: the seed's documented behaviour, its tutorial loops, and clear errors on bad input."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Iterator
from typing import Any, cast

import numpy
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, IterableDataset

import checkpointable
from checkpointable import ArgumentValueError, Stream


def epochs_of(stream: Stream, *args: Any, **kwargs: Any) -> list[tuple[int, list[Any]]]:
    kwargs.setdefault("progress_bar", False)
    return [(stream.epoch, list(epoch)) for epoch in stream.epochs(*args, **kwargs)]


class CountingIterable:
    """A list that counts its iter() calls."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.iter_calls = items, 0

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        self.iter_calls += 1
        return iter(self.items)


class Unsized(IterableDataset):
    def __iter__(self) -> Iterator[int]:
        return iter(range(4))


def tensor_dataset(values: torch.Tensor) -> Dataset[torch.Tensor]:
    """A tensor as torch's DataLoader reads it (by len() and [i]), typed as the Dataset it acts as."""
    return cast("Dataset[torch.Tensor]", values)


# The seed's documented examples.


def test_constructor_accepts_any_iterable() -> None:
    Stream([0, 1, 2, 3])
    Stream(range(10))
    Stream(itertools.repeat(0))
    Stream(DataLoader(torch.utils.data.TensorDataset(torch.randn(10, 2)), batch_size=3))
    Stream(x for x in range(3))
    assert checkpointable.stream.Stream is Stream


def test_attributes() -> None:
    loader = [1, 2]
    stream = Stream(loader)
    assert (stream.epoch, stream.iteration, stream.loader) == (0, 0, loader)
    with pytest.raises(AttributeError):
        stream.epoch = 3  # type: ignore[misc]


def test_next_cycles_over_the_loader() -> None:
    stream = Stream(range(3))
    assert stream.iteration == 0
    assert [stream.next() for _ in range(4)] == [0, 1, 2, 0]
    assert stream.iteration == 4


def test_data_does_not_start_over() -> None:
    stream = Stream(range(5))
    assert list(stream.data()) == [0, 1, 2, 3, 4]
    assert list(stream.data(3)) == [0, 1, 2]
    assert list(stream.data(3)) == [3, 4, 0]
    assert list(stream.data(1)) == [1]
    assert list(stream.data(2)) == [2, 3]
    assert list(stream.data(0)) == []
    assert stream.iteration == 14


def test_data_counts_iterations_taken_in_the_body() -> None:
    stream = Stream(range(10))
    seen = []
    for x in stream.data(4):
        seen.append(x)
        stream.next()
    assert seen == [0, 2]


def test_epochs_default_size_is_the_loader_length() -> None:
    assert epochs_of(Stream(range(3)), 2) == [(1, [0, 1, 2]), (2, [0, 1, 2])]


def test_epochs_custom_size_cuts_across_the_loader() -> None:
    assert epochs_of(Stream(range(3)), 3, 2) == [(1, [0, 1]), (2, [2, 0]), (3, [1, 2])]
    assert epochs_of(Stream(range(3)), 2, 5) == [(1, [0, 1, 2, 0, 1]), (2, [2, 0, 1, 2, 0])]


def test_epoch_is_incremented_at_the_start_of_each_epoch() -> None:
    stream = Stream(range(2))
    for epoch in stream.epochs(2, progress_bar=False):
        for _ in epoch:
            assert stream.epoch in (1, 2)
    assert stream.epoch == 2
    assert epochs_of(stream, 2) == []  # max_epoch reached


def test_epochs_is_a_thin_wrapper_of_the_low_level_loop() -> None:
    low = Stream(range(4))
    expected = []
    while low.epoch < 3:
        low.increment_epoch()
        expected.append((low.epoch, list(low.data(3))))
    assert epochs_of(Stream(range(4)), 3, 3) == expected


def test_set_loader_mid_epoch() -> None:
    stream = Stream(itertools.repeat(0))
    seen = []
    for x in stream.data(5):
        seen.append((stream.iteration, x))
        if stream.iteration == 2:
            stream.set_loader(itertools.repeat(1))
    assert seen == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]


def test_set_loader_before_the_first_item_stays_lazy() -> None:
    new = CountingIterable([7, 8])
    stream = Stream([1])
    stream.set_loader(new)
    assert new.iter_calls == 0
    assert stream.loader is new and stream.next() == 7


def test_the_iterator_is_created_on_the_first_next() -> None:
    loader = CountingIterable([1, 2])
    stream = Stream(loader)
    stream.epochs(3)
    stream.data()
    assert loader.iter_calls == 0
    stream.next()
    assert loader.iter_calls == 1


def test_reload_iterator() -> None:
    stream = Stream(range(5))
    assert (stream.next(), stream.next()) == (0, 1)
    stream.reload_iterator()
    assert stream.next() == 0
    stream = Stream(iter(range(5)))
    assert (stream.next(), stream.next()) == (0, 1)
    stream.reload_iterator()
    assert stream.next() == 2


def test_increment_epoch() -> None:
    stream = Stream(range(5))
    stream.increment_epoch()
    stream.increment_epoch()
    assert stream.epoch == 2


def test_state_of_a_stateless_loader_is_the_seeds() -> None:
    stream = Stream(range(10))
    assert stream.state_dict() == {"epoch": 0, "iteration": 0}
    stream.next()
    stream.next()
    stream.increment_epoch()
    assert stream.state_dict() == {"epoch": 1, "iteration": 2}


def test_loading_a_stateless_state_sets_the_counters_only() -> None:
    stream = Stream(range(10))
    stream.next()
    stream.increment_epoch()
    new_stream = Stream(range(10))
    new_stream.load_state_dict(stream.state_dict())
    assert new_stream.state_dict() == {"epoch": 1, "iteration": 1}
    assert new_stream.next() == 0  # the data is not restored
    assert new_stream.state_dict() == {"epoch": 1, "iteration": 2}


def test_stateless_mid_epoch_resume_starts_a_new_epoch_as_the_seed() -> None:
    stream = Stream(range(4))
    loop = stream.epochs(3, progress_bar=False)
    epoch = next(loop)
    next(epoch)
    resumed = Stream(range(4))
    resumed.load_state_dict(stream.state_dict())
    assert epochs_of(resumed, 3) == [(2, [0, 1, 2, 3]), (3, [0, 1, 2, 3])]


# The tutorial loops, as written.


def test_tutorial_epochs_loop() -> None:
    stream = Stream(DataLoader(tensor_dataset(torch.arange(6)), batch_size=2))
    seen = []
    for epoch in stream.epochs(2, progress_bar=False):
        for batch in epoch:
            seen.append((stream.epoch, stream.iteration, batch.tolist()))
    assert seen == [
        (1, 1, [0, 1]),
        (1, 2, [2, 3]),
        (1, 3, [4, 5]),
        (2, 4, [0, 1]),
        (2, 5, [2, 3]),
        (2, 6, [4, 5]),
    ]


def test_tutorial_low_level_loops_a_and_b() -> None:
    a, b = Stream(range(3)), Stream(range(3))
    seen_a, seen_b = [], []
    while a.epoch < 2:
        a.increment_epoch()
        for batch in a.data():
            seen_a.append((a.epoch, a.iteration, batch))
    while b.epoch < 2:
        b.increment_epoch()
        for _ in range(len(b.loader)):  # type: ignore[arg-type]
            batch = b.next()
            seen_b.append((b.epoch, b.iteration, batch))
    assert seen_a == seen_b == [(1, 1, 0), (1, 2, 1), (1, 3, 2), (2, 4, 0), (2, 5, 1), (2, 6, 2)]


def test_tutorial_endless_loop() -> None:
    stream = Stream(range(3))
    marks = []
    for item in stream.data(float("inf")):
        if stream.iteration % 4 == 0:
            marks.append(item)
        if stream.iteration == 12:
            break
    assert marks == [0, 1, 2]


def test_tutorial_checkpoint_loop_with_a_stateless_loader() -> None:
    buffer = io.BytesIO()
    stream = Stream(range(3))
    for epoch in stream.epochs(2, progress_bar=False):
        list(epoch)
        buffer.seek(0)
        torch.save({"stream": stream.state_dict()}, buffer)
        break
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = Stream(range(3))
    resumed.load_state_dict(checkpoint["stream"])
    assert epochs_of(resumed, 2) == [(2, [0, 1, 2])]


# The endless iterator: finite iterators end, nothing hangs.


@pytest.mark.timeout(20)
def test_an_exhausted_iterator_ends_next_data_and_epochs() -> None:
    stream = Stream(iter(range(3)))
    assert [stream.next() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(StopIteration, match="data is over"):
        stream.next()
    assert stream.iteration == 3
    assert list(Stream(iter(range(3))).data(float("inf"))) == [0, 1, 2]
    assert epochs_of(Stream(iter(range(5))), float("inf"), 2) == [
        (1, [0, 1]),
        (2, [2, 3]),
        (3, [4]),
    ]
    assert epochs_of(Stream(iter(range(4))), 10, 2) == [(1, [0, 1]), (2, [2, 3]), (3, [])]
    empty = Stream(iter([]))
    with pytest.raises(StopIteration):
        empty.next()
    assert epochs_of(empty, float("inf"), 3) == []


@pytest.mark.timeout(20)
def test_a_loader_whose_later_pass_is_empty_ends_the_stream() -> None:
    class OnePass:
        def __init__(self) -> None:
            self.passes = 0

        def __iter__(self) -> Iterator[int]:
            self.passes += 1
            return iter([1, 2] if self.passes == 1 else [])

    stream = Stream(OnePass())
    assert list(stream.data(float("inf"))) == [1, 2]
    assert epochs_of(Stream(OnePass()), float("inf"), 1) == [(1, [1]), (2, [2]), (3, [])]


def test_data_over_is_cleared_by_set_loader() -> None:
    stream = Stream(iter([1]))
    assert list(stream.data(float("inf"))) == [1]
    stream.set_loader(iter([2, 3]))
    assert epochs_of(stream, float("inf"), 1) == [(1, [2]), (2, [3]), (3, [])]


def test_unsized_loader_needs_explicit_sizes() -> None:
    stream = Stream(DataLoader(Unsized(), batch_size=None))
    with pytest.raises(ValueError, match=r"n_items=None means len\(loader\).*DataLoader"):
        stream.data()
    with pytest.raises(ValueError, match=r"epoch_size=None means len\(loader\)"):
        stream.epochs(2)
    assert list(stream.data(6)) == [0, 1, 2, 3, 0, 1]


def test_break_ends_the_epoch() -> None:
    stream = Stream(range(5))
    seen = []
    for epoch in stream.epochs(2, progress_bar=False):
        for x in epoch:
            seen.append(x)
            break
    assert seen == [0, 1]
    assert stream.state_dict() == {"epoch": 2, "iteration": 2}


def test_stale_epoch_iterators_stop() -> None:
    stream = Stream(range(5))
    loop = stream.epochs(3, progress_bar=False)
    first = next(loop)
    next(first)
    second = next(loop)
    assert list(first) == []
    assert list(second) == [1, 2, 3, 4, 0]


def test_numpy_and_torch_integers_are_accepted() -> None:
    stream = Stream(range(3))
    assert epochs_of(stream, numpy.int64(1), torch.tensor(2)) == [(1, [0, 1])]
    assert list(stream.data(numpy.int32(2))) == [2, 0]


def test_repr() -> None:
    stream = Stream([1, 2])
    stream.next()
    assert repr(stream) == "Stream([1, 2], epoch=0, iteration=1)"
    assert len(repr(Stream(list(range(100))))) < 100


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 6),
    max_epoch=st.integers(0, 4),
    epoch_size=st.none() | st.integers(1, 9),
)
def test_epochs_cut_the_endless_cycle(n: int, max_epoch: int, epoch_size: int | None) -> None:
    size = n if epoch_size is None else epoch_size
    cycle = list(itertools.islice(itertools.cycle(range(n)), max_epoch * size))
    expected = [(e + 1, cycle[e * size : (e + 1) * size]) for e in range(max_epoch)]
    assert epochs_of(Stream(range(n)), max_epoch, epoch_size) == expected


# Bad input.


@pytest.mark.parametrize("loader", [5, None, 2.5])
def test_non_iterable_loader(loader: Any) -> None:
    with pytest.raises(TypeError, match=r"loader must be an iterable"):
        Stream(loader)
    with pytest.raises(TypeError, match=r"Stream.set_loader: loader must be an iterable"):
        Stream([1]).set_loader(loader)


def test_empty_sized_loader_is_both_assertion_and_value_error() -> None:
    for error in (AssertionError, ValueError, ArgumentValueError):
        with pytest.raises(error, match=r"loader must not be empty.*len\(loader\)=0"):
            Stream([])
    with pytest.raises(ArgumentValueError, match="must not be empty"):
        Stream([1]).set_loader(DataLoader(tensor_dataset(torch.arange(0))))


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (2.5, AssertionError, r"float\('inf'\), got the float n_items=2.5"),
        (math.nan, ArgumentValueError, "got the float n_items=nan"),
        (-1, ValueError, "n_items must be an int >= 0, got n_items=-1"),
        ("3", TypeError, r"n_items must be an int or float\('inf'\), got '3' \(str\)"),
        (True, TypeError, r"got True \(bool\)"),
        (-math.inf, ValueError, "got the float n_items=-inf"),
    ],
)
def test_bad_n_items(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Stream(range(3)).data(value)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((-1,), ValueError, "max_epoch must be an int >= 0, got max_epoch=-1"),
        ((1.5,), AssertionError, "got the float max_epoch=1.5"),
        (("2",), TypeError, r"max_epoch must be an int or float\('inf'\), got '2' \(str\)"),
        ((2, 0), ValueError, "epoch_size must be an int >= 1, got epoch_size=0"),
        ((2, -3), ValueError, "epoch_size must be an int >= 1, got epoch_size=-3"),
        ((2, 2.5), ArgumentValueError, "got the float epoch_size=2.5"),
        ((2, [3]), TypeError, r"epoch_size must be an int or float\('inf'\)"),
        ((2, None, [1]), TypeError, "progress_bar_config must be a dict"),
    ],
)
def test_bad_epochs_arguments(args: tuple[Any, ...], error: type[Exception], message: str) -> None:
    stream = Stream(range(3))
    with pytest.raises(error, match=message):
        stream.epochs(*args)
    assert stream.epoch == 0  # checked at the call, before any epoch


def test_bad_progress_bar_arguments() -> None:
    stream = Stream(range(3))
    with pytest.raises(TypeError, match=r"progress_bar must be True, False or None.*'yes'"):
        stream.epochs(1, progress_bar="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="progress_bar=True asks for a bar but progress_bar_con"):
        stream.epochs(1, progress_bar_config=None, progress_bar=True)
    with pytest.raises(ValueError, match="disable=True; give only one of them"):
        stream.epochs(1, progress_bar_config={"disable": True}, progress_bar=True)
