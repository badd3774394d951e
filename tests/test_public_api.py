"""The public API: flat, sorted, complete, and every stateful class has a resumability case."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import cast

import pytest

import checkpointable

PUBLIC_MODULES = [
    "checkpointable",
    "checkpointable.dataloader",
    "checkpointable.datasets",
    "checkpointable.iterators",
    "checkpointable.samplers",
    "checkpointable.sources",
    "checkpointable.stream",
]

# infinibatch's public names (the seed): `from checkpointable.iterators import *` must give them.
SEED_ITERATOR_NAMES = {
    "CheckpointableIterator",
    "NativeCheckpointableIterator",
    "create_source_iterator",
    "ChunkedSourceIterator",
    "InfinitePermutationSourceIterator",
    "MultiplexIterator",
    "SelectManyIterator",
    "BufferedShuffleIterator",
    "MapIterator",
    "ParallelMapIterator",
    "ZipIterator",
    "WindowedIterator",
    "FixedBatchIterator",
    "RandomIterator",
    "RecurrentIterator",
    "SamplingRandomMapIterator",
    "BlockwiseShuffleIterator",
    "PrefetchIterator",
    "BucketedReadaheadBatchIterator",
}

# Public classes with state_dict that need no resumability case of their own, and why.
NOT_ITERATED = {
    "Stateful": "the protocol itself",
    "CheckpointableIterator": "abstract base class",
}


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions, each alphabetical."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_sorted_and_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__all__ == sorted(module.__all__, key=_isort_key)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module_name", PUBLIC_MODULES[1:])
def test_every_public_name_is_also_top_level(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = set(module.__all__) - set(checkpointable.__all__)
    assert not missing


def test_star_import_gives_every_seed_name() -> None:
    namespace: dict[str, object] = {}
    exec("from checkpointable.iterators import *", namespace)
    assert set(namespace) >= SEED_ITERATOR_NAMES


def test_iterators_are_real_classes() -> None:
    from checkpointable import iterators

    for name in SEED_ITERATOR_NAMES - {"create_source_iterator"}:
        assert inspect.isclass(getattr(iterators, name)), name


def _resumable_marks() -> set[str]:
    """Class names given to @pytest.mark.resumable(...) anywhere in the tests."""
    names: set[str] = set()
    for path in Path(__file__).parent.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "resumable"
            ):
                names.update(
                    cast(str, arg.value) for arg in node.args if isinstance(arg, ast.Constant)
                )
    return names


def _stateful() -> set[str]:
    """The public classes with ``state_dict`` and ``load_state_dict``."""
    return {
        name
        for name in checkpointable.__all__
        if inspect.isclass(obj := getattr(checkpointable, name))
        and hasattr(obj, "state_dict")
        and hasattr(obj, "load_state_dict")
    }


def test_every_public_stateful_class_has_a_resumability_case() -> None:
    uncovered = _stateful() - _resumable_marks() - set(NOT_ITERATED)
    assert not uncovered, f"no @pytest.mark.resumable case for {sorted(uncovered)}"


def test_every_public_stateful_class_is_fuzzed() -> None:
    from tests.test_state_fuzz import SUBJECTS

    bases = {*NOT_ITERATED, "ResumableSampler"}  # a subclass's states are fuzzed
    uncovered = _stateful() - bases - {name.split()[0] for name in SUBJECTS}
    assert not uncovered, f"not fuzzed (tests/test_state_fuzz.py): {sorted(uncovered)}"


def test_the_torch_free_parts_do_not_import_torch() -> None:
    """Iterator pipelines (and each spawn worker running one) start without importing torch."""
    import subprocess
    import sys

    code = (
        "import sys, checkpointable, checkpointable.iterators, checkpointable.datasets;"
        "print('torch' in sys.modules)"
    )
    src = str(Path(checkpointable.__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.stdout.strip() == "False", done.stderr
