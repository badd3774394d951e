"""One resumability check for every stateful object: `assert_resumable`.

The check runs an object once without interruption and records every item and the state after
every item. Then, for each selected step, it builds a fresh object with the factory, loads that
step's state (after a JSON round trip) and checks that:

- the state is plain data and survives ``json`` and ``torch.save`` /
  ``torch.load(weights_only=True)`` unchanged;
- ``state_dict()`` right after loading reads back equal to the loaded state;
- the rest of the output equals the uninterrupted run, item for item, epoch end for epoch end;
- a second resume from a state taken after the first resume also continues exactly;
- a state taken at the end of the stream restores to an exhausted object;
- every state has the same structure (keys and nesting; a ``None`` stands for a part that does
  not exist yet, such as the state of an iterator not yet created), and no state changed after
  it was taken.

Use it for your own datasets, samplers and pipelines:

>>> from checkpointable.iterators import FixedBatchIterator, NativeCheckpointableIterator
>>> items = assert_resumable(lambda: FixedBatchIterator(NativeCheckpointableIterator(range(7)), 3))
>>> items
[[0, 1, 2], [3, 4, 5], [6]]
"""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from .._checks import close as _close
from .._checks import short_repr
from .._state import check_plain

__all__ = ["assert_resumable", "items_equal"]


class _EpochEnd:
    """Marks the end of an epoch in a recorded run (epoch mode)."""

    def __repr__(self) -> str:
        return "<end of epoch>"


EPOCH_END = _EpochEnd()
_short = partial(short_repr, limit=300)


@dataclass
class _Step:
    """One recorded point of the uninterrupted run: the state after `done` outputs."""

    done: int  # number of events (items and epoch ends) produced before this state was taken
    epoch: int  # epoch the next item belongs to (epoch mode)
    at_epoch_end: bool  # taken right after an epoch's StopIteration (epoch mode)
    state: dict[str, Any]
    frozen: str  # json of the state when it was taken, to prove it never changed


def assert_resumable(
    factory: Callable[[], Any],
    *,
    epochs: int | None = None,
    max_items: int = 2000,
    positions: Iterable[int] | None = None,
    max_positions: int = 30,
    next_item: Callable[[Any], Any] | None = None,
    before_epoch: Callable[[Any, int], None] | None = None,
    equal: Callable[[Any, Any], bool] | None = None,
    fresh_process: bool = False,
    same_structure: bool = True,
) -> list[Any]:
    """Check that objects built by `factory` save and restore their position exactly.

    Args:
        factory: builds a fresh object, configured identically each call. It must have
            ``state_dict()`` and ``load_state_dict(state)``.
        epochs: ``None`` for an iterator (items come from `next_item`, default ``next``) until it
            is exhausted or `max_items` were taken. An int for an iterable that is iterated once
            per epoch (a sampler, a data loader): ``iter(obj)`` is called `epochs` times and the
            state is also checked right after each epoch's end.
        max_items: stop an endless iterator after this many items.
        positions: the steps (number of events already produced; an epoch end counts as one
            event) whose states are restored. Default: every step when there are at most
            `max_positions`, else the first and last steps, the steps around epoch ends and
            evenly spaced steps in between.
        max_positions: bound on the number of restored steps when `positions` is not given.
        next_item: how to take one item in iterator mode, e.g. ``Stream.next``.
        before_epoch: called as ``before_epoch(obj, epoch)`` before each epoch's ``iter(obj)``,
            in the uninterrupted run and after a resume alike (e.g. a sampler's ``set_epoch``).
        equal: item comparison; the default compares tensors, arrays, mappings and sequences
            element by element (`items_equal`).
        fresh_process: also restore a few states in a new ``spawn`` process (the factory must
            then be picklable: a module-level function or a ``functools.partial`` of one).
        same_structure: check that every state has the keys and nesting of the first one. Turn
            it off for an object that nests a third party's state whose layout grows as it runs
            (a Hugging Face ``IterableDataset``'s ``previous_state`` goes from ``None`` to a dict).

    Returns:
        The items of the uninterrupted run (epoch ends left out).

    Raises:
        AssertionError: with a message saying at which step and how the check failed.
    """
    equal = equal or items_equal
    run = _Runner(factory, epochs, max_items, next_item, before_epoch)
    events, steps, exhausted = run.record()
    for index, step in enumerate(steps):
        if _dumps(step.state) != step.frozen:
            raise AssertionError(f"the state of step {index} changed after it was taken")
        step.state = json.loads(step.frozen)  # restore from what was saved, not a live object
    if same_structure:
        _check_states(steps)
    chosen = _choose(steps, events, positions, max_positions)
    # When the run ended, ask for one output more than expected to catch any extra output.
    extra = 1 if exhausted else 0
    for index in chosen:
        step = steps[index]
        tail = run.resume(step.state, step, len(events) - step.done + extra)
        _compare(events[step.done :], tail, equal, f"after restoring the state of step {index}")
    for first, second in _second_resumes(chosen, len(steps)):
        _check_second_resume(run, steps, events, first, second, extra, equal)
    if fresh_process:
        _check_fresh_process(run, steps, events, chosen, extra, equal)
    return [event for event in events if event is not EPOCH_END]


def items_equal(a: Any, b: Any) -> bool:
    """Compare two items structurally: tensors and arrays by dtype, shape and values.

    >>> import torch
    >>> items_equal({"x": torch.tensor([1, 2])}, {"x": torch.tensor([1, 2])})
    True
    >>> items_equal([torch.tensor([1.0])], [torch.tensor([1])])
    False
    """
    if type(a) is not type(b):
        return False
    if hasattr(a, "dtype") and hasattr(a, "shape") and not isinstance(a, int | float):
        if a.dtype != b.dtype or tuple(a.shape) != tuple(b.shape):
            return False
        import torch

        if isinstance(a, torch.Tensor):
            return bool(torch.equal(a, b))
        import numpy

        return bool(numpy.array_equal(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(items_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(items_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class _Runner:
    """Drives the object under test in the uninterrupted run and after each resume."""

    def __init__(
        self,
        factory: Callable[[], Any],
        epochs: int | None,
        max_items: int,
        next_item: Callable[[Any], Any] | None,
        before_epoch: Callable[[Any, int], None] | None,
    ) -> None:
        self.factory = factory
        self.epochs = epochs
        self.max_items = max_items
        self.next_item = next_item or next
        self.before_epoch = before_epoch

    def record(self) -> tuple[list[Any], list[_Step], bool]:
        """Run once; return the events, the state after each event, and whether it ended."""
        obj = self.factory()
        events: list[Any] = []
        steps = [self._take(obj, 0, 0, False)]
        exhausted = False
        try:
            for epoch, item in self._events(obj, start_epoch=0):
                events.append(item)
                steps.append(self._take(obj, len(events), epoch, item is EPOCH_END))
                if len(events) >= self.max_items:
                    break
            else:
                exhausted = True
        finally:
            _close(obj)
        return events, steps, exhausted

    def resume(self, state: dict[str, Any], step: _Step, count: int) -> list[Any]:
        """Load `state` into a fresh object and return its next `count` events (or fewer)."""
        obj = self.factory()
        try:
            restored = json.loads(json.dumps(state))
            obj.load_state_dict(restored)
            again = obj.state_dict()
            if again != state:
                raise AssertionError(
                    f"state_dict() right after load_state_dict() differs from the loaded state "
                    f"(step {step.done}):\n  loaded: {_short(state)}\n  read:   {_short(again)}"
                )
            tail = self.take(obj, step, count)
        finally:
            _close(obj)
        return tail

    def take(self, obj: Any, step: _Step, count: int) -> list[Any]:
        start_epoch = step.epoch + 1 if step.at_epoch_end else step.epoch
        out: list[Any] = []
        if count <= 0:
            return out
        for _, item in self._events(obj, start_epoch):
            out.append(item)
            if len(out) >= count:
                break
        return out

    def _events(self, obj: Any, start_epoch: int) -> Iterator[tuple[int, Any]]:
        if self.epochs is None:
            while True:
                try:
                    item = self.next_item(obj)
                except StopIteration:
                    return
                yield 0, item
        for epoch in range(start_epoch, self.epochs):
            if self.before_epoch is not None:
                self.before_epoch(obj, epoch)
            for item in iter(obj):
                yield epoch, item
            yield epoch, EPOCH_END

    def _take(self, obj: Any, done: int, epoch: int, at_end: bool) -> _Step:
        state = obj.state_dict()
        where = f"the state after {done} events"
        check_plain(state, where)
        frozen = _dumps(state)
        if json.loads(frozen) != state:
            raise AssertionError(f"{where} does not survive a JSON round trip: {_short(state)}")
        if _torch_round_trip(state) != state:
            raise AssertionError(f"{where} does not survive torch.save/torch.load(weights_only)")
        return _Step(done, epoch, at_end, state, frozen)


def _check_states(steps: list[_Step]) -> None:
    shape = _shape(steps[0].state)
    for index, step in enumerate(steps):
        found = _shape(step.state)
        if not _same_shape(found, shape):
            raise AssertionError(
                f"the state of step {index} has another structure than the first state:\n"
                f"  first: {shape}\n  here:  {found}"
            )


def _choose(
    steps: list[_Step], events: list[Any], positions: Iterable[int] | None, limit: int
) -> list[int]:
    last = len(steps) - 1
    if positions is not None:
        chosen = sorted({p for p in positions if 0 <= p <= last})
        if not chosen:
            raise ValueError(f"positions select no step; there are steps 0..{last}")
        return chosen
    if last + 1 <= limit:
        return list(range(last + 1))
    picked = {0, 1, 2, last - 2, last - 1, last}
    for index, event in enumerate(events):  # around each epoch end
        if event is EPOCH_END:
            picked.update({index, index + 1, index + 2})
    room = max(limit - len(picked), 1)
    stride = max(last // room, 1)
    picked.update(range(0, last + 1, stride))
    return sorted(p for p in picked if 0 <= p <= last)


def _second_resumes(chosen: list[int], count: int) -> list[tuple[int, int]]:
    pairs = []
    for first in chosen[:: max(len(chosen) // 6, 1)]:
        for second in (first + 1, (first + count) // 2, count - 1):
            if first < second < count:
                pairs.append((first, second))
    return sorted(set(pairs))


def _check_second_resume(
    run: _Runner,
    steps: list[_Step],
    events: list[Any],
    first: int,
    second: int,
    extra: int,
    equal: Callable[[Any, Any], bool],
) -> None:
    """Resume at `first`, run to `second`, save there and resume again in a fresh object."""
    start, stop = steps[first], steps[second]
    obj = run.factory()
    try:
        obj.load_state_dict(json.loads(json.dumps(start.state)))
        between = run.take(obj, start, stop.done - start.done)
        where = f"after resuming at step {first} and running to step {second}"
        _compare(events[start.done : stop.done], between, equal, where)
        state = obj.state_dict()
    finally:
        _close(obj)
    tail = run.resume(state, stop, len(events) - stop.done + extra)
    where = f"after a second resume at step {second} (first resume at step {first})"
    _compare(events[stop.done :], tail, equal, where)


def _check_fresh_process(
    run: _Runner,
    steps: list[_Step],
    events: list[Any],
    chosen: list[int],
    extra: int,
    equal: Callable[[Any, Any], bool],
) -> None:
    picks = sorted({chosen[0], chosen[len(chosen) // 2], chosen[-1]})
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        for index in picks:
            step = steps[index]
            spec = (run.factory, run.epochs, run.max_items, run.next_item, run.before_epoch)
            tail = pool.submit(
                _resume_in_child, spec, _dumps(step.state), step, len(events) - step.done + extra
            ).result(timeout=300)
            where = f"after restoring the state of step {index} in a fresh process"
            _compare(events[step.done :], tail, equal, where)


def _resume_in_child(spec: tuple[Any, ...], state_json: str, step: _Step, count: int) -> list[Any]:
    run = _Runner(*spec)
    tail = run.resume(json.loads(state_json), step, count)
    return [_EPOCH_END_TOKEN if item is EPOCH_END else item for item in tail]


_EPOCH_END_TOKEN = "<checkpointable.testing: end of epoch>"


def _compare(
    expected: list[Any], found: list[Any], equal: Callable[[Any, Any], bool], where: str
) -> None:
    found = [
        EPOCH_END if isinstance(item, str) and item == _EPOCH_END_TOKEN else item for item in found
    ]
    for index, (want, got) in enumerate(zip(expected, found, strict=False)):
        same = (want is EPOCH_END) == (got is EPOCH_END) and (want is EPOCH_END or equal(want, got))
        if not same:
            raise AssertionError(
                f"{where}: output {index} differs from the uninterrupted run: "
                f"expected {_short(want)}, got {_short(got)}"
            )
    if len(found) != len(expected):
        raise AssertionError(
            f"{where}: {len(found)} outputs instead of the {len(expected)} of the uninterrupted run"
        )


def _shape(value: Any) -> Any:
    if isinstance(value, dict) and value.get("kind") in _RNG_KINDS:
        return "scalar"  # a generator's state: its short or full form is one value
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        inner = [_shape(item) for item in value if isinstance(item, dict | list)]
        inner = [shape for shape in inner if shape != "scalar"]  # a generator's state
        return ["list", *inner]
    return "none" if value is None else "scalar"


_RNG_KINDS = ("torch", "python")


def _same_shape(a: Any, b: Any) -> bool:
    """Equal shapes, where "none" (a part that does not exist yet) matches any shape."""
    if a == "none" or b == "none":
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_shape(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _dumps(state: Any) -> str:
    return json.dumps(state, sort_keys=True)


def _torch_round_trip(state: Any) -> Any:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
