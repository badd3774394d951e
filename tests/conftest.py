"""Shared test settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.leaks import no_leaks_of_ours

settings.register_profile(
    "default",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail if the test leaves a process, thread or /dev/shm entry of its own (tests/leaks.py)."""
    with no_leaks_of_ours():
        yield
