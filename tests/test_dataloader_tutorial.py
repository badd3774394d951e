"""The seed tutorial's two programs (torchdata's StatefulDataLoader tutorial), as tests.

The printed values need not be torchdata's; the batches after the resume must equal those of
the uninterrupted run, for num_workers 0 and 2.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from checkpointable.dataloader import Stateful, StatefulDataLoader
from checkpointable.testing import items_equal
from tests._loader_data import NoisyRange, TutorialIterable, TutorialSampler


def run_program(make: Any, reload: bool) -> tuple[list[Any], list[Any]]:
    """The tutorial's loop: save at i == 2, run to the end, load, and list the rest.

    With `reload`, the state goes through torch.save / torch.load(weights_only=True) into a new
    loader, as after a restart.
    """
    dl = make()
    batches = []
    for i, batch in enumerate(dl):
        batches.append(batch)
        if i == 2:
            sd = dl.state_dict()
    if reload:
        buffer = io.BytesIO()
        torch.save(sd, buffer)
        buffer.seek(0)
        sd = torch.load(buffer, weights_only=True)
        dl.close()
        dl = make()
    dl.load_state_dict(sd)
    batches2 = list(dl)
    dl.close()
    return batches[3:], batches2


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reload", [False, True])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_map_style_program_with_a_stateful_sampler_and_dataset(
    num_workers: int, reload: bool
) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            NoisyRange(5, 1, 1),
            sampler=TutorialSampler(5, 1, 10),
            batch_size=2,
            drop_last=False,
            num_workers=num_workers,
        )

    expected, resumed = run_program(make, reload)
    assert len(expected) == 2
    assert items_equal(resumed, expected)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("reload", [False, True])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterable_program_with_per_worker_state(num_workers: int, reload: bool) -> None:
    def make() -> StatefulDataLoader:
        return StatefulDataLoader(
            TutorialIterable(12, 0), batch_size=2, drop_last=False, num_workers=num_workers
        )

    expected, resumed = run_program(make, reload)
    assert len(expected) == 3
    assert items_equal(resumed, expected)


def test_the_imports_of_torchdata_have_a_one_line_equivalent() -> None:
    class Counter(torch.utils.data.IterableDataset, Stateful):
        def __init__(self) -> None:
            self.i = 0

        def __iter__(self) -> Iterator[int]:
            while self.i < 4:
                self.i += 1
                yield self.i

        def state_dict(self) -> dict[str, Any]:
            return {"i": self.i}

        def load_state_dict(self, state_dict: dict[str, Any]) -> None:
            self.i = state_dict["i"]

    assert isinstance(Counter(), Stateful)
    loader = StatefulDataLoader(Counter(), batch_size=None)
    assert [int(x) for x in loader] == [1, 2, 3, 4]
