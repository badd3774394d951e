"""Iterators behave as infinibatch 0.1.1's where code written against it depends on it."""

from __future__ import annotations

import json

import pytest

from checkpointable.iterators import NativeCheckpointableIterator, WindowedIterator


@pytest.mark.parametrize("n_items, width", [(4, 3), (5, 2), (2, 3), (0, 1), (6, 3)])
def test_windowed_iterator_stops_at_once_and_for_ever(n_items: int, width: int) -> None:
    it = WindowedIterator(NativeCheckpointableIterator(list(range(n_items))), width)
    windows = list(it)
    assert windows == [tuple(range(i, i + width)) for i in range(n_items - width + 1)]
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(it)
    end = json.loads(json.dumps(it.getstate()))
    restored = WindowedIterator(NativeCheckpointableIterator(list(range(n_items))), width)
    restored.setstate(end)
    for _ in range(3):
        with pytest.raises(StopIteration):
            next(restored)
    assert restored.getstate() == end
