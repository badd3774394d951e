"""The sampler registry behaves as helios' (helios-ml 2.0) ``core.Registry``."""

from __future__ import annotations

import pytest

from checkpointable import samplers
from checkpointable.samplers import SAMPLER_REGISTRY, Registry, create_sampler

BUILT_IN = ["ResumableRandomSampler", "ResumableSequentialSampler", "ResumableDistributedSampler"]


def test_registry_keys_in_iteration_and_str_as_helios() -> None:
    registry = Registry("transform")

    @registry.register
    class Zoom:
        pass

    def flip() -> None:
        pass

    registry.register(flip, suffix="v2")
    assert list(registry.keys()) == ["Zoom", "flip_v2"]  # registration order
    assert "Zoom" in registry.keys()  # noqa: SIM118  (helios' keys() view)
    assert "flip_v2" in registry and "flip" not in registry
    assert list(registry) == [("Zoom", Zoom), ("flip_v2", flip)]  # items, as helios
    assert dict(iter(registry)) == {"Zoom": Zoom, "flip_v2": flip}
    assert str(registry) == "transform"
    assert registry.get("flip", suffix="v2") is flip


def test_sampler_registry_lists_the_built_in_samplers() -> None:
    assert str(SAMPLER_REGISTRY) == "sampler"
    assert list(SAMPLER_REGISTRY.keys())[:3] == BUILT_IN
    assert dict(iter(SAMPLER_REGISTRY))["ResumableRandomSampler"] is samplers.ResumableRandomSampler


def test_create_sampler_looks_up_a_user_sampler_through_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class MySampler(samplers.ResumableSequentialSampler):
        pass

    registry = Registry("sampler")
    for _, cls in SAMPLER_REGISTRY:
        registry.register(cls)
    registry.register(MySampler)
    monkeypatch.setattr(samplers, "SAMPLER_REGISTRY", registry)
    sampler = create_sampler("MySampler", range(4), batch_size=2)
    assert type(sampler) is MySampler and list(sampler) == [0, 1, 2, 3]
    assert "MySampler" not in SAMPLER_REGISTRY  # the global one is untouched
