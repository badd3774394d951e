"""Test helpers for the iterators."""

from __future__ import annotations

from typing import Any

from checkpointable.iterators import NativeCheckpointableIterator


class CountingSource(NativeCheckpointableIterator):
    """A list source that counts the items read from it, to measure replays."""

    def __init__(self, items: list[Any]) -> None:
        super().__init__(items)
        self.reads = 0

    def __next__(self) -> Any:
        item = super().__next__()
        self.reads += 1
        return item
