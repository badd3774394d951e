"""`WindowTransform`: read the source a window at a time, serve from it, resume in the window."""

from __future__ import annotations

from abc import abstractmethod
from random import Random
from typing import Any, ClassVar

from .._errors import IncompatibleStateError
from .._rng import decode_python_state
from .._state import state_int
from .base import CheckpointableIterator, RandomState, SourceState, Transform, snapshot

__all__ = ["WindowTransform"]


class WindowTransform(Transform):
    """A `Transform` that reads its source a window at a time (a block, a read-ahead), reorders
    it with an RNG, and serves its outputs one by one.

    Its position is the source's state and the RNG's at the start of the current window, and how
    many of the window's outputs were served (under `_SERVED`); a restore reads that one window
    again: a bounded replay of one window. A subclass reads a window in `_read_window` (calling
    `_mark_window` first) and says how many outputs it has in `_window_size`.
    """

    _SERVED: ClassVar[str]  # the state's key for the outputs of the window already served
    _WINDOW: ClassVar[str]  # what a window is called in messages

    def __init__(self, source_iterator: CheckpointableIterator, seed: int | None) -> None:
        super().__init__(source_iterator)
        self._seed = seed
        self._random = Random(seed)
        self._window_start: tuple[SourceState, tuple[Any, ...]] | None = None
        self._served = 0

    @property
    def _randomised(self) -> bool:
        """Whether the RNG orders the windows (its state is then part of the position)."""
        return True

    def _mark_window(self) -> None:
        """Record the start of the window about to be read."""
        self._window_start = (snapshot(self._source_iterator), self._random.getstate())

    @abstractmethod
    def _read_window(self) -> None:
        """Read the next window from the source (after `_mark_window`); served count to 0."""

    @abstractmethod
    def _window_size(self) -> int:
        """The number of outputs of the window in memory."""

    def _forget_window(self) -> None:
        """Drop the window in memory (on restore)."""
        self._window_start, self._served = None, 0

    def _position(self) -> dict[str, Any]:
        if self._window_start is None:  # no window read yet: the next one starts here
            source, random_state = snapshot(self._source_iterator), self._random.getstate()
        else:
            source, random_state = self._window_start
        return {
            "source": source,
            "random_state": RandomState(random_state) if self._randomised else None,
            self._SERVED: self._served,
        }

    def _restore(self, state: dict[str, Any] | None) -> None:
        self._forget_window()
        if state is None:
            self._source_iterator.setstate(None)
            self._random.seed(self._seed)
            return
        name = type(self).__name__
        served = state_int(name, state, self._SERVED)
        self._source_iterator.setstate(state["source"])
        if self._randomised:
            self._random.setstate(decode_python_state(state["random_state"], name))
        if served:
            self._read_window()
            if served > self._window_size():
                raise IncompatibleStateError(
                    f"{name}: the state served {served} outputs of a {self._WINDOW} that has "
                    f"only {self._window_size()}; it was saved over other data"
                )
            self._served = served
