"""Stream behaves as zero's (libzero 0.0.8) where code written against zero depends on it."""

from __future__ import annotations

import io
import itertools
import math
import re

import pytest

from checkpointable import Stream
from checkpointable.iterators import NativeCheckpointableIterator

COUNTS = {"bar_format": "{n}/{total}", "mininterval": 0}


def test_epochs_takes_zeros_progress_bar_config_keyword_and_position() -> None:
    out = io.StringIO()
    stream = Stream(range(3))
    for epoch in stream.epochs(2, progress_bar_config={"file": out, **COUNTS}):
        list(epoch)
    assert "6/6" in out.getvalue()
    out = io.StringIO()
    for epoch in Stream(range(3)).epochs(1, None, {"file": out, **COUNTS}):
        list(epoch)
    assert "3/3" in out.getvalue()
    quiet = Stream(range(3))
    assert [list(e) for e in quiet.epochs(1, progress_bar_config=None)] == [[0, 1, 2]]


def test_a_named_file_shows_the_bar_even_when_it_is_not_a_terminal() -> None:
    out = io.StringIO()  # not a terminal, and pytest's stderr is not one either
    for epoch in Stream(range(2)).epochs(2, progress_bar_config={"file": out, **COUNTS}):
        list(epoch)
    assert re.findall(r"(\d+)/(\d+)", out.getvalue())[-1] == ("4", "4")


def test_a_new_loop_after_an_abandoned_one_starts_full_epochs_as_in_zero() -> None:
    stream = Stream(range(3))
    epochs = enumerate(stream.epochs(math.inf, progress_bar_config=None))
    for _ in zip(epochs, range(1000), strict=False):
        pass  # never consumes an epoch
    sizes = []
    for epoch in itertools.islice(stream.epochs(math.inf, math.inf, None), 3):
        sizes.append(len(list(itertools.islice(epoch, 10))))
    assert sizes == [10, 10, 10]
    assert stream.epoch == 1004  # zero: each loop increments before its first epoch


def test_a_second_loop_after_break_starts_a_new_epoch_as_in_zero() -> None:
    stream = Stream(range(5))
    for epoch in stream.epochs(3, progress_bar_config=None):
        next(epoch)
        break
    seen = [(stream.epoch, list(epoch)) for epoch in stream.epochs(3, progress_bar_config=None)]
    assert seen == [(2, [1, 2, 3, 4, 0]), (3, [1, 2, 3, 4, 0])]


def test_a_loaded_state_still_continues_the_saved_epoch() -> None:
    def make() -> Stream:
        return Stream(NativeCheckpointableIterator(range(10)))

    stream = make()
    epoch = next(stream.epochs(3, 4, None))
    next(epoch), next(epoch)
    resumed = make()
    resumed.load_state_dict(stream.state_dict())
    seen = [(resumed.epoch, list(e)) for e in resumed.epochs(3, 4, None)]
    assert seen == [(1, [2, 3]), (2, [4, 5, 6, 7]), (3, [8, 9])]


def test_the_earlier_keyword_progress_bar_options_is_an_alias() -> None:
    out = io.StringIO()
    for epoch in Stream(range(2)).epochs(1, progress_bar_options={"file": out, **COUNTS}):
        list(epoch)
    assert "2/2" in out.getvalue()
    with pytest.raises(TypeError, match="progress_bar_options is another name of progress_bar_"):
        Stream(range(2)).epochs(1, progress_bar_config={}, progress_bar_options={})
