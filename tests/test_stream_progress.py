"""Stream's progress bar: one bar for the whole loop, read from what tqdm printed."""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Generator, Iterator
from typing import Any, cast

import pytest

from checkpointable import Stream

from .stream_checks import SamplerLoader

COUNTS = {"bar_format": "{n}/{total}", "mininterval": 0}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(stream: Stream, *args: Any, stop_at: int | None = None, **kwargs: Any) -> None:
    for epoch in stream.epochs(*args, **kwargs):
        for _ in epoch:
            if stream.iteration == stop_at:
                return


def shown(output: str) -> list[tuple[int, str]]:
    """The (n, total) pairs that tqdm printed, in order."""
    return [(int(n), total) for n, total in re.findall(r"(\d+)/(\w+)", output)]


def test_one_bar_counts_every_item_of_the_loop() -> None:
    out = io.StringIO()
    run(Stream(range(4)), 3, progress_bar=True, progress_bar_config={"file": out, **COUNTS})
    values = shown(out.getvalue())
    assert values[0] == (0, "12") and values[-1] == (12, "12")
    assert sorted({n for n, _ in values}) == list(range(13))
    assert out.getvalue().endswith("\n")  # closed at the end of the loop


def test_custom_epoch_size_sets_the_total() -> None:
    out = io.StringIO()
    run(Stream(range(4)), 2, 5, progress_bar=True, progress_bar_config={"file": out, **COUNTS})
    assert shown(out.getvalue())[-1] == (10, "10")


@pytest.mark.parametrize("stop_at", [3, 4, 5, 9])
def test_after_a_resume_the_bar_starts_at_the_restored_iteration(stop_at: int) -> None:
    make = functools.partial(SamplerLoader, 10, 3)  # 4 batches per epoch, 3 epochs: 12
    stream = Stream(make())
    run(stream, 3, progress_bar=False, stop_at=stop_at)
    resumed = Stream(make())
    resumed.load_state_dict(stream.state_dict())
    out = io.StringIO()
    run(resumed, 3, progress_bar=True, progress_bar_config={"file": out, **COUNTS})
    values = shown(out.getvalue())
    assert values[0] == (stop_at, "12")
    assert values[-1] == (12, "12")
    assert resumed.iteration == 12


def test_the_total_follows_a_resumed_epoch_of_another_size() -> None:
    stream = Stream(SamplerLoader(10, 1))
    run(stream, 5, 4, progress_bar=False, stop_at=1)
    resumed = Stream(SamplerLoader(10, 1))
    resumed.load_state_dict(stream.state_dict())
    out = io.StringIO()
    run(resumed, 3, 2, progress_bar=True, progress_bar_config={"file": out, **COUNTS})
    assert shown(out.getvalue())[0] == (1, str(1 + 3 + 2 * 2))
    assert shown(out.getvalue())[-1] == (8, "8")


def test_the_total_follows_set_loader() -> None:
    out = io.StringIO()
    stream = Stream(range(2))
    for epoch in stream.epochs(3, progress_bar=True, progress_bar_config={"file": out, **COUNTS}):
        list(epoch)
        if stream.epoch == 1:
            stream.set_loader(range(5))
    assert shown(out.getvalue())[-1] == (12, "12")


def test_an_endless_loop_has_no_total() -> None:
    out = io.StringIO()
    options = {"file": out, "bar_format": "{n_fmt}/{total_fmt}", "mininterval": 0}
    run(Stream(range(3)), float("inf"), progress_bar=True, progress_bar_config=options, stop_at=5)
    assert re.findall(r"\d+/\S", out.getvalue())[-1] == "5/?"


def test_tqdm_options_pass_through() -> None:
    out = io.StringIO()
    options = {"file": out, "desc": "train", "unit": "batch", "total": 99, "mininterval": 0}
    run(Stream(range(2)), 1, progress_bar=True, progress_bar_config=options)
    assert "train:" in out.getvalue() and "2/99" in out.getvalue() and "batch/s" in out.getvalue()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"progress_bar": False},
        {"progress_bar_config": None},
        {"progress_bar_config": {"disable": True}},
    ],
)
def test_nothing_is_written_when_disabled(kwargs: dict[str, Any]) -> None:
    out = io.StringIO()
    options = kwargs.pop("progress_bar_config", {})
    if options is not None:
        options = {**options, "file": out}
    run(Stream(range(3)), 2, progress_bar_config=options, **kwargs)
    assert out.getvalue() == ""


def test_auto_shows_the_bar_on_a_terminal() -> None:
    out = Terminal()
    run(Stream(range(3)), 2, progress_bar_config={"file": out, **COUNTS})
    assert shown(out.getvalue())[-1] == (6, "6")


def test_default_bar_writes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run(Stream(range(3)), 2)
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal
    run(Stream(range(3)), 2, progress_bar=True)
    assert "6/6" in capsys.readouterr().err


def test_leaving_the_loop_closes_the_bar() -> None:
    out = io.StringIO()
    stream = Stream(range(3))
    run(stream, 5, progress_bar=True, progress_bar_config={"file": out, **COUNTS}, stop_at=4)
    assert shown(out.getvalue())[-1] == (4, "15")
    assert out.getvalue().endswith("\n")
    stream.next()  # no bar any more: nothing printed
    assert shown(out.getvalue())[-1] == (4, "15")


def test_a_new_loop_closes_the_bar_of_an_unfinished_one() -> None:
    first, second = io.StringIO(), io.StringIO()
    stream = Stream(range(3))
    # epochs() is a generator, closed below as a loop left unfinished is
    loop = cast(
        "Generator[Iterator[Any], None, None]",
        stream.epochs(2, progress_bar=True, progress_bar_config={"file": first, **COUNTS}),
    )
    next(next(loop))
    run(stream, 3, progress_bar=True, progress_bar_config={"file": second, **COUNTS})
    assert first.getvalue().endswith("\n") and shown(first.getvalue())[-1] == (1, "6")
    # As in zero, the new loop starts a new epoch: epochs 2 and 3 of 3 items after the first.
    assert shown(second.getvalue())[0] == (1, "7") and shown(second.getvalue())[-1] == (7, "7")
    loop.close()  # the first loop's end leaves the second bar alone
