"""The resumability check must pass for correct objects and fail for each kind of broken one."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from checkpointable.testing import assert_resumable, items_equal


class Counter:
    """A correct stateful iterator over range(n)."""

    def __init__(self, n: int = 10) -> None:
        self.n, self.i = n, 0

    def __iter__(self) -> Counter:
        return self

    def __next__(self) -> int:
        if self.i >= self.n:
            raise StopIteration
        self.i += 1
        return self.i - 1

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]


class EpochCounter:
    """A correct iterable with epochs: each epoch yields n items shuffled by the epoch number."""

    def __init__(self, n: int = 5) -> None:
        self.n, self.epoch, self.i, self.ended = n, 0, 0, False

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.ended:
            self.epoch, self.i, self.ended = self.epoch + 1, 0, False
        order = list(range(self.n))
        random.Random(self.epoch).shuffle(order)
        while self.i < self.n:
            self.i += 1
            yield (self.epoch, order[self.i - 1])
        self.ended = True

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "i": self.i, "ended": self.ended}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.i, self.ended = state["epoch"], state["i"], state["ended"]


def test_passes_for_a_correct_iterator() -> None:
    assert assert_resumable(Counter) == list(range(10))


def test_passes_for_a_correct_iterable_over_epochs() -> None:
    items = assert_resumable(EpochCounter, epochs=3)
    assert len(items) == 15 and {epoch for epoch, _ in items} == {0, 1, 2}


def test_passes_in_a_fresh_process() -> None:
    assert assert_resumable(Counter, fresh_process=True) == list(range(10))


class SkipsAfterResume(Counter):
    """Reads its state back correctly but skips an item after a resume."""

    skip = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.skip = True

    def __next__(self) -> int:
        if self.skip:
            self.skip = False
            super().__next__()
        return super().__next__()


class YieldsMoreAfterTheEnd(Counter):
    """Restored at the end of the stream, it yields one item more."""

    extra = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.extra = self.i == self.n

    def __next__(self) -> int:
        if self.extra:
            self.extra = False
            return -1
        return super().__next__()


class TupleState(Counter):
    def state_dict(self) -> dict[str, Any]:
        return {"i": (self.i,)}


class IntKeyState(Counter):
    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "seen": {1: True}}


class TensorState(Counter):
    def state_dict(self) -> dict[str, Any]:
        return {"i": torch.tensor(self.i)}


class ChangingStructure(Counter):
    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i} if self.i < 3 else {"i": self.i, "extra": 1}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]


class MutatesSavedState(Counter):
    def __init__(self, n: int = 10) -> None:
        super().__init__(n)
        self.shared = {"i": 0}

    def __next__(self) -> int:
        item = super().__next__()
        self.shared["i"] = self.i
        return item

    def state_dict(self) -> dict[str, Any]:
        return self.shared


class ReadsBackDifferently(Counter):
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"]
        self.extra = True

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "loaded": getattr(self, "extra", False)}


class ForgetsAfterSecondResume(Counter):
    """Correct after one resume, wrong when a state taken after a resume is loaded."""

    def __init__(self, n: int = 10) -> None:
        super().__init__(n)
        self.resumed = False

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.i = state["i"] + (1 if state["resumed"] else 0)
        self.resumed = True

    def state_dict(self) -> dict[str, Any]:
        return {"i": self.i, "resumed": self.resumed}


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (SkipsAfterResume, "differs from the uninterrupted run"),
        (YieldsMoreAfterTheEnd, "outputs instead of"),
        (TupleState, "is a tuple"),
        (IntKeyState, "must be str"),
        (TensorState, "is a Tensor"),
        (ChangingStructure, "another structure"),
        (MutatesSavedState, "changed after it was taken"),
        (ReadsBackDifferently, "right after load_state_dict"),
        (ForgetsAfterSecondResume, "right after load_state_dict|second resume"),
    ],
)
def test_fails_for_a_broken_iterator(broken: type[Any], message: str) -> None:
    error = TypeError if broken in (TupleState, IntKeyState, TensorState) else AssertionError
    with pytest.raises(error, match=message):
        assert_resumable(broken)


class EpochForgetter(EpochCounter):
    """Restores the position in the epoch but always restarts at epoch 0."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict({**state, "epoch": 0})


def test_fails_when_the_epoch_is_lost() -> None:
    with pytest.raises(AssertionError):
        assert_resumable(EpochForgetter, epochs=3)


def test_items_equal_compares_tensors_by_dtype_shape_and_values() -> None:
    assert items_equal((torch.zeros(2), [1, "a"]), (torch.zeros(2), [1, "a"]))
    assert not items_equal(torch.zeros(2), torch.zeros(3))
    assert not items_equal(torch.zeros(2), torch.zeros(2, dtype=torch.int64))
    assert not items_equal([1, 2], (1, 2))


def test_positions_out_of_range_are_rejected() -> None:
    with pytest.raises(ValueError, match="positions select no step"):
        assert_resumable(Counter, positions=[100])
