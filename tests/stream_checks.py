"""Resumability checks of `Stream` over any stateful loader, reusable for every kind of loader.

`assert_stream_resumable(make_loader, ...)` (``from .stream_checks import ...`` in a test module)
runs `checkpointable.testing.assert_resumable` on a stream over ``make_loader()`` driven the two
ways a training script drives it: ``stream.next()`` in a loop (iterator mode), and ``for epoch in stream.epochs(...): for batch in epoch:`` (through
`EpochLoop`, which reports every batch and every epoch end with the stream's counters, so a
resume that lands in another epoch or at another iteration fails too). Use it for any loader with
``state_dict`` / ``load_state_dict``, e.g. ``assert_stream_resumable(lambda:
StatefulDataLoader(dataset, batch_size=2, shuffle=True), epoch_size=3)``; pass a module-level
function or a ``functools.partial`` of one with ``fresh_process=True``.

`SamplerLoader` is a small stateful loader with torchdata's semantics: a torch ``DataLoader``
over a shuffling sampler whose state is its position.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from checkpointable import Stream
from checkpointable.testing import assert_resumable

__all__ = ["EpochLoop", "ResumableSampler", "SamplerLoader", "assert_stream_resumable"]


def assert_stream_resumable(
    make_loader: Callable[[], Any],
    *,
    max_epoch: int | float = 3,
    epoch_size: int | float | None = None,
    max_items: int = 60,
    switch: tuple[int, Callable[[], Any]] | None = None,
    reload_each_epoch: bool = False,
    fresh_process: bool = False,
    **options: Any,
) -> list[Any]:
    """Check a stream over ``make_loader()`` in iterator mode and in an `epochs` loop.

    Args:
        make_loader: builds a fresh loader, configured identically each call.
        max_epoch, epoch_size: the arguments of ``stream.epochs``.
        max_items: bound on the items of each run (iterator mode runs this many).
        switch: ``(iteration, make_new_loader)``: the epochs loop calls
            ``stream.set_loader(make_new_loader())`` when it reaches that iteration.
        reload_each_epoch: the epochs loop calls ``stream.reload_iterator()`` after each epoch.
        fresh_process: also restore states in a spawn process (picklable factories only).
        options: more keyword arguments for `assert_resumable` (``positions``, ...).

    Returns:
        The events of the epochs loop (see `EpochLoop`).
    """
    assert_resumable(
        functools.partial(_stream_over, make_loader),
        next_item=Stream.next,
        max_items=max_items,
        fresh_process=fresh_process,
        **options,
    )
    return assert_resumable(
        functools.partial(EpochLoop, make_loader, max_epoch, epoch_size, switch, reload_each_epoch),
        max_items=max_items,
        fresh_process=fresh_process,
        **options,
    )


def _stream_over(make_loader: Callable[[], Any]) -> Stream:
    return Stream(make_loader())


class EpochLoop:
    """A training script's ``epochs`` loop as an iterator whose state is the stream's state.

    ``next()`` returns ``("batch", epoch, iteration, batch)`` for each batch and ``("end", epoch,
    iteration)`` after each epoch. `load_state_dict` loads the state into the stream and starts
    a fresh ``stream.epochs(...)`` loop, as a resumed script does. With `reload_each_epoch`, the
    loop calls ``stream.reload_iterator()`` after each epoch. With `switch`, the loop calls
    ``set_loader(make_new_loader())`` in the body of iteration `at`, and a state saved at or after
    that iteration is loaded after the same ``set_loader``, as a script that picks its loader from
    the checkpoint.
    """

    def __init__(
        self,
        make_loader: Callable[[], Any],
        max_epoch: int | float,
        epoch_size: int | float | None,
        switch: tuple[int, Callable[[], Any]] | None = None,
        reload_each_epoch: bool = False,
    ) -> None:
        self.stream = Stream(make_loader())
        self.max_epoch, self.epoch_size, self.switch = max_epoch, epoch_size, switch
        self.reload_each_epoch = reload_each_epoch
        self._loop: Iterator[tuple[Any, ...]] | None = None

    def __iter__(self) -> EpochLoop:
        return self

    def __next__(self) -> tuple[Any, ...]:
        if self._loop is None:
            self._loop = self._run()
        return next(self._loop)

    def _run(self) -> Iterator[tuple[Any, ...]]:
        stream = self.stream
        for epoch in stream.epochs(self.max_epoch, self.epoch_size, progress_bar=False):
            for batch in epoch:
                if self.switch is not None and stream.iteration == self.switch[0]:
                    stream.set_loader(self.switch[1]())
                yield ("batch", stream.epoch, stream.iteration, batch)
            if self.reload_each_epoch:
                stream.reload_iterator()  # each epoch starts a fresh pass of the loader
            yield ("end", stream.epoch, stream.iteration)

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.switch is not None and state["iteration"] >= self.switch[0]:
            self.stream.set_loader(self.switch[1]())
        self.stream.load_state_dict(state)
        self.close()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()  # type: ignore[attr-defined]
            self._loop = None


class ResumableSampler(Sampler[int]):
    """A shuffling sampler whose state is its position, with torchdata's semantics.

    Pass `e` is ``torch.randperm(n)`` seeded by ``(seed, e)``. `start_pass` (called by
    ``iter(loader)``, so that the state describes the latest iterator at once, as in torchdata)
    starts the next pass, except right after construction or `load_state_dict`, when it
    continues the saved pass. `ended` is set by the loader when its consumer sees the pass's
    end. A state taken after the last batch but before that restores to a pass that yields
    nothing (as torchdata's ``StatefulDataLoader``); one taken after it, to the next pass.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed = n, seed
        self.epoch, self.position, self.ended, self.resume = 0, 0, False, True

    def __len__(self) -> int:
        return self.n

    def start_pass(self) -> None:
        if not self.resume or self.ended:
            self.epoch, self.position, self.ended = self.epoch + 1, 0, False
        self.resume = False

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        while self.position < self.n:
            self.position += 1
            yield order[self.position - 1]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "ended": self.ended}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position, self.ended = state["epoch"], state["position"], state["ended"]
        self.resume = True


class SamplerLoader:
    """A torch ``DataLoader`` (``num_workers=0``) over a `ResumableSampler`, with its state.

    Batches are tensors of ``100 + index``; ``len()`` is the number of batches of a pass.
    """

    def __init__(self, n: int = 10, batch_size: int = 3, seed: int = 0) -> None:
        self.sampler = ResumableSampler(n, seed)
        data = cast("Dataset[int]", range(100, 100 + n))  # read by len() and [i]
        self.loader = DataLoader(data, batch_size=batch_size, sampler=self.sampler)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.sampler.start_pass()
        return self._pass(iter(self.loader))

    def _pass(self, batches: Iterator[Any]) -> Iterator[Any]:
        yield from batches
        self.sampler.ended = True  # the consumer sees the pass's end (StopIteration)

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
