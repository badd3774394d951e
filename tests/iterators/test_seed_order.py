"""Same output as infinibatch wherever its code fixes the order (users who migrate keep it).

The expected values were recorded from infinibatch 0.1.1 by
benchmarks/record_infinibatch_golden.py, running the same cases (seed_cases.py) on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import checkpointable.datasets
import checkpointable.iterators

from .seed_cases import CASES, as_lists

GOLDEN = json.loads((Path(__file__).parent / "infinibatch_golden.json").read_text())


def test_every_recorded_case_is_checked() -> None:
    assert set(CASES) == set(GOLDEN) - {"_source"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_same_output_as_infinibatch(name: str) -> None:
    output = CASES[name](checkpointable.iterators, checkpointable.datasets)
    assert as_lists(output) == GOLDEN[name]
