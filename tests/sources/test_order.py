"""WindowOrder: a bijection of the epoch's rows, a pure function of (seed, epoch, position)."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from checkpointable._sources.order import WindowOrder


def order_of(rows: list[int], seed: int, epoch: int, window: int, lanes: int) -> WindowOrder:
    block_rows = torch.tensor(rows, dtype=torch.int64)
    return WindowOrder(
        block_rows, torch.cumsum(block_rows, 0) - block_rows, seed, epoch, window, lanes
    )


@given(
    rows=st.lists(st.integers(1, 12), min_size=1, max_size=12),
    seed=st.integers(0, 2**40),
    epoch=st.integers(0, 5),
    window=st.integers(1, 4),
    lanes=st.integers(1, 6),
    step=st.integers(1, 5),
)
def test_a_bijection_that_slices_like_a_tensor(
    rows: list[int], seed: int, epoch: int, window: int, lanes: int, step: int
) -> None:
    order = order_of(rows, seed, epoch, window, lanes)
    n = sum(rows)
    full = order[0:n].tolist()
    assert sorted(full) == list(range(n)) and len(order) == n
    for start in range(step):
        assert order[start:n:step].tolist() == full[start::step]
    assert [order[i] for i in range(n)] == full
    again = order_of(rows, seed, epoch, window, lanes)
    assert again[n // 2 : n].tolist() == full[n // 2 :]  # no state: any position, any time


@given(lanes=st.integers(2, 6), per_lane=st.integers(1, 4), block=st.integers(1, 5))
def test_position_c_lies_in_one_lane_while_every_lane_has_rows(
    lanes: int, per_lane: int, block: int
) -> None:
    rows = [block] * (lanes * per_lane)  # equal lanes: no tail
    order = order_of(rows, 1, 0, 2, lanes)
    n = sum(rows)
    blocks_of_residue = [{row // block for row in order[r:n:lanes].tolist()} for r in range(lanes)]
    for i in range(lanes):
        assert len(blocks_of_residue[i]) == per_lane
        for j in range(i):
            assert not blocks_of_residue[i] & blocks_of_residue[j]
