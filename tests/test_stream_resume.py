"""Stream: one state_dict() resumes the whole loop exactly over any stateful loader."""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError, Stream
from checkpointable.iterators import (
    FixedBatchIterator,
    InfinitePermutationSourceIterator,
    NativeCheckpointableIterator,
)
from checkpointable.testing import assert_resumable

from .stream_checks import (
    EpochLoop,
    SamplerLoader,
    assert_stream_resumable,
)


def batches(n: int = 10, batch_size: int = 3) -> FixedBatchIterator:
    return FixedBatchIterator(NativeCheckpointableIterator(range(n)), batch_size)


def permutations() -> InfinitePermutationSourceIterator:
    return InfinitePermutationSourceIterator(list(range(5)), seed=1)


# Our iterators (iter(it) is it).


@pytest.mark.resumable("Stream")
@pytest.mark.parametrize("epoch_size", [1, 2, 5])
def test_over_a_finite_iterator_until_the_data_is_over(epoch_size: int) -> None:
    events = assert_stream_resumable(batches, max_epoch=float("inf"), epoch_size=epoch_size)
    assert [e[3] for e in events if e[0] == "batch"] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert events[-1][0] == "end"  # the loop ended because the data is over


@pytest.mark.resumable("Stream")
def test_over_an_endless_iterator() -> None:
    events = assert_stream_resumable(permutations, max_epoch=4, epoch_size=3)
    assert [e[1:3] for e in events if e[0] == "end"] == [(1, 3), (2, 6), (3, 9), (4, 12)]
    items = [e[3] for e in events if e[0] == "batch"]
    assert sorted(items[:5]) == list(range(5)) and items[:5] != list(range(5))


# A torch DataLoader over a stateful sampler, with torchdata's state semantics.


@pytest.mark.resumable("Stream")
@pytest.mark.parametrize(
    ("n", "epoch_size"),
    [
        (10, None),  # 4 batches per pass, the last one partial
        (10, 3),  # epochs smaller than the loader
        (10, 6),  # epochs larger than the loader, cutting across its passes
        (9, None),  # 3 full batches: a state at a pass's end restores to an empty pass
        (9, 2),
        (9, 5),
    ],
)
def test_over_a_stateful_data_loader(n: int, epoch_size: int | None) -> None:
    events = assert_stream_resumable(
        functools.partial(SamplerLoader, n, 3), max_epoch=3, epoch_size=epoch_size
    )
    size = epoch_size or -(-n // 3)
    assert [e[1:3] for e in events if e[0] == "end"] == [(1, size), (2, 2 * size), (3, 3 * size)]
    seen = torch.cat([e[3] for e in events if e[0] == "batch"][: -(-n // 3)])
    assert sorted(seen.tolist()) == list(range(100, 100 + n))  # one whole pass first


@pytest.mark.resumable("Stream")
def test_every_position_of_a_loop_resumes() -> None:
    assert_stream_resumable(
        functools.partial(SamplerLoader, 6, 2), max_epoch=3, epoch_size=4, max_positions=100
    )


@pytest.mark.resumable("Stream")
@pytest.mark.timeout(120)
def test_resumes_in_a_fresh_process() -> None:
    assert_stream_resumable(
        functools.partial(SamplerLoader, 7, 3), max_epoch=2, epoch_size=4, fresh_process=True
    )


@pytest.mark.resumable("Stream")
@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 7),
    batch_size=st.integers(1, 3),
    max_epoch=st.integers(1, 3),
    epoch_size=st.none() | st.integers(1, 6),
)
def test_resumes_for_any_sizes(
    n: int, batch_size: int, max_epoch: int, epoch_size: int | None
) -> None:
    assert_stream_resumable(
        functools.partial(SamplerLoader, n, batch_size),
        max_epoch=max_epoch,
        epoch_size=epoch_size,
        max_items=30,
        max_positions=12,
    )


@pytest.mark.resumable("Stream")
def test_resumes_after_reload_iterator_mid_pass() -> None:
    def factory() -> Stream:
        stream = Stream(SamplerLoader(10, 3))
        stream.next(), stream.next()
        stream.reload_iterator()  # skips the rest of the pass; no item taken from the new one
        return stream

    items = assert_resumable(factory, next_item=Stream.next, max_items=12)
    assert sorted(torch.cat(items[:4]).tolist()) == list(range(100, 110))


@pytest.mark.resumable("Stream")
@pytest.mark.parametrize("epoch_size", [2, 5])
def test_resumes_a_loop_that_reloads_the_loader_after_each_epoch(epoch_size: int) -> None:
    events = assert_stream_resumable(
        functools.partial(SamplerLoader, 10, 3),
        max_epoch=3,
        epoch_size=epoch_size,
        reload_each_epoch=True,
    )
    first = [e[3] for e in events if e[0] == "batch" and e[1] == 1]
    second = [e[3] for e in events if e[0] == "batch" and e[1] == 2]
    assert len(first) == len(second) == epoch_size
    assert not torch.equal(first[0], second[0])  # each epoch opened a new pass


# set_loader.


@pytest.mark.resumable("Stream")
def test_resumes_after_set_loader_in_iterator_mode() -> None:
    def factory() -> Stream:
        stream = Stream(SamplerLoader(5, 2, seed=1))
        stream.next()
        stream.set_loader(batches(7, 2))
        return stream

    items = assert_resumable(factory, next_item=Stream.next)
    assert items == [[0, 1], [2, 3], [4, 5], [6]]


@pytest.mark.resumable("Stream")
@pytest.mark.parametrize("at", [2, 4, 5])
def test_resumes_across_set_loader_in_an_epochs_loop(at: int) -> None:
    events = assert_stream_resumable(
        functools.partial(SamplerLoader, 10, 3),
        max_epoch=3,
        epoch_size=3,
        switch=(at, functools.partial(SamplerLoader, 4, 1, 7)),
    )
    after = [e[3] for e in events if e[0] == "batch" and e[2] > at]
    assert all(batch.numel() == 1 for batch in after)
    assert len(after) == 9 - at


def test_after_set_loader_the_state_is_the_new_loaders() -> None:
    stream = Stream(SamplerLoader(4, 2))
    stream.next()
    stream.set_loader(batches(4, 2))
    state = stream.state_dict()
    assert state["loader_type"] == "FixedBatchIterator"
    assert state["loader"]["type"] == "FixedBatchIterator"
    stream.set_loader(range(3))
    assert stream.state_dict() == {"epoch": 0, "iteration": 1}


# The state itself.


def test_state_layout() -> None:
    stream = Stream(SamplerLoader(10, 3))
    loop = stream.epochs(2, 5, progress_bar=False)
    epoch = next(loop)
    next(epoch), next(epoch)
    assert stream.state_dict() == {
        "type": "Stream",
        "version": 3,
        "epoch": 1,
        "iteration": 2,
        "in_epoch": True,
        "epoch_items": 2,
        "epoch_size": 5,
        "epoch_aligned": True,
        "iterating": True,
        "data_over": False,
        "loader_type": "SamplerLoader",
        "loader": {"sampler": {"epoch": 0, "position": 6, "ended": False}},
    }


def test_checkpoint_loop_resumes_from_one_saved_dict() -> None:
    def run(stop_at: int | None, checkpoint: bytes | None) -> tuple[list[Any], bytes | None]:
        stream = Stream(SamplerLoader(8, 3, seed=4))
        if checkpoint is not None:
            state = torch.load(io.BytesIO(checkpoint), weights_only=True)
            stream.load_state_dict(state["stream"])
        seen: list[Any] = []
        for epoch in stream.epochs(3, 4, progress_bar=False):
            for batch in epoch:
                seen.append((stream.epoch, stream.iteration, batch.tolist()))
                if stream.iteration == stop_at:
                    buffer = io.BytesIO()
                    torch.save({"stream": stream.state_dict()}, buffer)
                    return seen, buffer.getvalue()
        return seen, None

    full, _ = run(None, None)
    assert len(full) == 12
    for stop in range(1, 12):
        head, saved = run(stop, None)
        tail, _ = run(None, saved)
        assert head + tail == full


def test_a_resumed_epoch_keeps_its_size_and_later_epochs_take_the_new_one() -> None:
    stream = Stream(SamplerLoader(10, 1))
    epoch = next(stream.epochs(5, 4, progress_bar=False))
    next(epoch)
    resumed = Stream(SamplerLoader(10, 1))
    resumed.load_state_dict(json.loads(json.dumps(stream.state_dict())))
    sizes = [(resumed.epoch, len(list(e))) for e in resumed.epochs(3, 2, progress_bar=False)]
    assert sizes == [(1, 3), (2, 2), (3, 2)]


def test_a_resume_with_a_smaller_max_epoch_stops() -> None:
    stream = Stream(SamplerLoader(10, 1))
    loop = stream.epochs(5, 2, progress_bar=False)
    next(loop), next(loop)
    resumed = Stream(SamplerLoader(10, 1))
    resumed.load_state_dict(stream.state_dict())
    assert list(resumed.epochs(1, 2, progress_bar=False)) == []
    assert resumed.epoch == 2


def test_stateful_state_into_a_stateless_stream() -> None:
    state = Stream(batches()).state_dict()
    with pytest.raises(IncompatibleStateError, match="'FixedBatchIterator' loader, but this"):
        Stream(range(3)).load_state_dict(state)


def test_stateless_state_into_a_stateful_stream() -> None:
    with pytest.raises(IncompatibleStateError, match=r"only 'epoch' and 'iteration'.*stateful"):
        Stream(batches()).load_state_dict({"epoch": 1, "iteration": 3})


def test_state_of_another_loader_class() -> None:
    state = Stream(batches()).state_dict()
    with pytest.raises(IncompatibleStateError, match=r"'FixedBatchIterator' loader, but .*'Sam"):
        Stream(SamplerLoader()).load_state_dict(state)


def test_state_of_the_loader_with_other_configuration_is_refused_by_the_loader() -> None:
    stream = Stream(permutations())
    stream.next()
    other = InfinitePermutationSourceIterator(list(range(5)), seed=2)
    with pytest.raises(IncompatibleStateError, match="seed=1, but this object has seed=2"):
        Stream(other).load_state_dict(stream.state_dict())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iteration": -1}, "'iteration' must be an int >= 0"),
        ({"epoch": 1.5}, "'epoch' must be an int >= 0"),
        ({"epoch_items": 9}, "epoch_items=9 exceeds its iteration=0"),
        ({"in_epoch": 1}, "'in_epoch' must be a bool"),
        ({"epoch_size": 0}, "'epoch_size' must be an int >= 1"),
        ({"version": 99}, "format version 99"),
        ({"type": "Other"}, "saved by 'Other'"),
        ({"extra": 1}, r"unexpected key\(s\) \['extra'\]"),
    ],
)
def test_bad_states(change: dict[str, Any], message: str) -> None:
    state = {**Stream(batches()).state_dict(), **change}
    stream = Stream(batches())
    with pytest.raises(IncompatibleStateError, match=message):
        stream.load_state_dict(state)
    assert stream.state_dict() == Stream(batches()).state_dict()  # nothing was loaded


def test_bad_stateless_states() -> None:
    with pytest.raises(IncompatibleStateError, match="'iteration' must be an int >= 0"):
        Stream(range(3)).load_state_dict({"epoch": 0, "iteration": -2})
    with pytest.raises(IncompatibleStateError, match="saved by None"):
        Stream(range(3)).load_state_dict({"epoch": 0})
    with pytest.raises(TypeError, match="a state must be a dict, got list"):
        Stream(range(3)).load_state_dict([0, 1])  # type: ignore[arg-type]


def test_a_loader_state_that_is_not_plain_data() -> None:
    class TensorState:
        def __iter__(self) -> Iterator[int]:
            return iter([1])

        def state_dict(self) -> dict[str, Any]:
            return {"t": torch.tensor(1)}

        def load_state_dict(self, state: dict[str, Any]) -> None: ...

    with pytest.raises(TypeError, match=r"the loader's state\['t'\] is a Tensor"):
        Stream(TensorState()).state_dict()


def test_epoch_loop_helper_reports_epochs_and_iterations() -> None:
    loop = EpochLoop(functools.partial(SamplerLoader, 4, 2), 2, 3)
    events = list(loop)
    assert [e[:3] for e in events] == [
        ("batch", 1, 1),
        ("batch", 1, 2),
        ("batch", 1, 3),
        ("end", 1, 3),
        ("batch", 2, 4),
        ("batch", 2, 5),
        ("batch", 2, 6),
        ("end", 2, 6),
    ]


def test_loading_into_a_running_stream_drops_its_iterator() -> None:
    saved = Stream(SamplerLoader(10, 3))
    run = [saved.next() for _ in range(5)]
    state = saved.state_dict()
    expected = [saved.next().tolist() for _ in range(4)]
    other = Stream(SamplerLoader(10, 3))
    other.next(), other.next()
    other.load_state_dict(state)
    assert [other.next().tolist() for _ in range(4)] == expected
    assert len(run) == 5


def test_the_example_resumes_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "stream_resume.py"
    runpy.run_path(str(example), run_name="__main__")
    assert "resumed exactly" in capsys.readouterr().out


def test_set_loader_right_after_a_resume() -> None:
    def factory() -> Stream:
        return Stream(SamplerLoader(10, 3))

    stream = factory()
    stream.next()
    resumed = factory()
    resumed.load_state_dict(stream.state_dict())
    resumed.set_loader(batches(4, 2))  # the resumed stream held an iterator: the new one is taken
    assert resumed.state_dict()["iterating"] is True
    assert [resumed.next() for _ in range(2)] == [[0, 1], [2, 3]]
    with pytest.raises(StopIteration):
        resumed.next()


class OtherRestAfterResume:
    """A stateful loader whose pass, once resumed, holds another number of items than ``len()``
    says (a distributed sampler resumed on more or fewer ranks): epochs sized by the loader end
    with the pass, as the loader's own epoch does."""

    def __init__(self, rest: int, n: int = 6) -> None:
        self.n, self.rest, self.i, self.end, self.passes = n, rest, 0, n, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.i >= self.end:  # a finished pass: the next one is whole
            self.i, self.end, self.passes = 0, self.n, self.passes + 1
        while self.i < self.end:
            self.i += 1
            yield (self.passes, self.i - 1)

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "end": self.end, "passes": self.passes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i, self.passes = state["i"], state["passes"]
        self.end = self.i + self.rest  # the rest of the pass changed size


@pytest.mark.parametrize("rest", [2, 7])
def test_an_epoch_sized_by_the_loader_ends_with_its_resumed_pass(rest: int) -> None:
    stream = Stream(OtherRestAfterResume(rest))
    loop = stream.epochs(2, progress_bar=False)
    epoch = next(loop)
    assert [next(epoch) for _ in range(2)] == [(0, 0), (0, 1)]
    resumed = Stream(OtherRestAfterResume(rest))
    resumed.load_state_dict(stream.state_dict())
    epochs = [(resumed.epoch, list(e)) for e in resumed.epochs(2, progress_bar=False)]
    assert epochs == [
        (1, [(0, i) for i in range(2, 2 + rest)]),  # the whole rest of the resumed pass
        (2, [(1, i) for i in range(6)]),
    ]


def test_an_epoch_that_began_inside_a_pass_keeps_its_size() -> None:
    """zero's endless-iterator semantics: a misaligned epoch of len(loader) items spans passes."""
    stream = Stream(OtherRestAfterResume(0))
    loop = stream.epochs(3, progress_bar=False)
    first = next(loop)
    next(first)  # the first epoch is left after one item
    assert list(next(loop)) == [(0, i) for i in range(1, 6)] + [(1, 0)]
