"""Fuzzed states: real saved states of every public stateful class, mutated. Each mutant must
either load and resume exactly as the state it came from, or be refused by ``load_state_dict``
itself with `IncompatibleStateError`, `TypeError` or `ValueError`: never later, never another
exception, never a resume at a silently wrong place."""

from __future__ import annotations

import copy
import functools
import json
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError
from checkpointable import iterators as it
from checkpointable.dataloader import StatefulDataLoader
from checkpointable.samplers import (
    ResumableDistributedSampler,
    ResumableRandomSampler,
    ResumableSequentialSampler,
)
from checkpointable.sources import Mixture, PackedSequences, TokenArrayDataset
from checkpointable.stream import Stream
from checkpointable.testing import items_equal
from tests._loader_data import CountingNoise, Squares, sharded

ALLOWED = (IncompatibleStateError, TypeError, ValueError)
#: mutants per class: 80 in the suite, more with ``make fuzz`` (docs/guarantees.md)
EXAMPLES = int(os.environ.get("CHECKPOINTABLE_FUZZ_EXAMPLES", "80"))
STEPS, AFTER = 5, 6  # the state is taken after STEPS items; AFTER items are compared


def _double(n: int) -> int:
    return 2 * n


def _words(path: Any) -> list[str]:
    return ["a b", "c", "d e f"]


def _mix_source(seed: int) -> Any:
    return it.NativeCheckpointableIterator(list(range(seed * 100, seed * 100 + 30)))


def _sampling(rng: random.Random, n: int) -> tuple[int, int]:
    return (n, rng.randrange(10))


@functools.cache
def _token_file() -> str:
    path = os.path.join(tempfile.mkdtemp(prefix="fuzz-tokens-"), "tokens.bin")
    np.arange(200, dtype=np.uint16).tofile(path)
    return path


def _tokens() -> TokenArrayDataset:
    return TokenArrayDataset(_token_file(), 4, seed=1, block_rows=3, world_size=2, rank=1)


def _mixture() -> Mixture:
    sources = {"a": [[i, i + 1] for i in range(20)], "b": [[-i] for i in range(1, 9)]}
    return Mixture(sources, weights={"a": 2, "b": 1}, seed=3, period=6)


def _native() -> Any:
    return it.NativeCheckpointableIterator(list(range(40)))


@dataclass
class Subject:
    """How to build, advance and read one stateful object."""

    build: Callable[[], Any]
    mode: str = "next"  # "next": next(obj); "epoch": next(iter(obj)); "stream": obj.next()
    #: keys whose values are the user's own state (a dataset's, a recurrence's), passed on as
    #: they are: what they mean is the user's code's business, so they are not mutated
    user: tuple[str, ...] = ()
    #: keys (besides `UNBOUNDED`) of counters without an upper bound in this object
    unbounded: tuple[str, ...] = ()


SUBJECTS: dict[str, Subject] = {
    "NativeCheckpointableIterator": Subject(_native),
    "ChunkedSourceIterator": Subject(lambda: it.ChunkedSourceIterator(list(range(40)), 3, 1)),
    "InfinitePermutationSourceIterator": Subject(
        lambda: it.InfinitePermutationSourceIterator(list(range(7)), seed=3)
    ),
    "RandomAccessSourceIterator": Subject(
        lambda: it.RandomAccessSourceIterator(list(range(50)), seed=3),
        unbounded=("num_items_yielded",),  # it repeats its passes endlessly
    ),
    "RandomIterator": Subject(lambda: it.RandomIterator(seed=4)),
    "MapIterator": Subject(lambda: it.MapIterator(_native(), _double)),
    "FilterIterator": Subject(lambda: it.FilterIterator(_native(), lambda n: n % 3 != 0)),
    "FixedBatchIterator": Subject(lambda: it.FixedBatchIterator(_native(), 3)),
    "SelectManyIterator": Subject(
        lambda: it.SelectManyIterator(it.NativeCheckpointableIterator([[1, 2], [3], [4, 5, 6]] * 5))
    ),
    "WindowedIterator": Subject(lambda: it.WindowedIterator(_native(), 3)),
    "RecurrentIterator": Subject(
        lambda: it.RecurrentIterator(_native(), lambda s, n: (s + n, s + n), 0),
        user=("recurrent_state",),
    ),
    "SamplingRandomMapIterator": Subject(
        lambda: it.SamplingRandomMapIterator(_native(), _sampling, seed=2)
    ),
    "BufferedShuffleIterator": Subject(lambda: it.BufferedShuffleIterator(_native(), 8, 5)),
    "BlockwiseShuffleIterator": Subject(lambda: it.BlockwiseShuffleIterator(_native(), 6, 5)),
    "BucketedReadaheadBatchIterator": Subject(
        lambda: it.BucketedReadaheadBatchIterator(_native(), 10, lambda n: n % 7, 2, seed=1)
    ),
    "ZipIterator": Subject(lambda: it.ZipIterator(_native(), it.MapIterator(_native(), _double))),
    "MultiplexIterator": Subject(
        lambda: it.MultiplexIterator(
            it.NativeCheckpointableIterator([0, 1, 1, 0] * 10), [_native(), _mix_source(1)]
        )
    ),
    "WeightedMixIterator": Subject(
        lambda: it.WeightedMixIterator([_native(), _mix_source(1)], [0.3, 0.7], seed=1),
        unbounded=("draws",),  # draw k of the mix is a pure function of (seed, k), for any k
    ),
    "PrefetchIterator": Subject(lambda: it.PrefetchIterator(_native(), 4, use_threads=True)),
    "ParallelMapIterator": Subject(
        lambda: it.ParallelMapIterator(_native(), _double, 2, 2, use_threads=True)
    ),
    "ResumableRandomSampler": Subject(lambda: ResumableRandomSampler(range(30), seed=2), "epoch"),
    "ResumableSequentialSampler": Subject(lambda: ResumableSequentialSampler(range(30)), "epoch"),
    "ResumableDistributedSampler": Subject(
        lambda: ResumableDistributedSampler(range(30), 2, 1, seed=2), "epoch"
    ),
    "StatefulDataLoader": Subject(
        lambda: StatefulDataLoader(
            Squares(60), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
        ),
        "epoch",
    ),
    "StatefulDataLoader stateful dataset": Subject(
        lambda: StatefulDataLoader(CountingNoise(60), batch_size=4), "epoch", ("sources",)
    ),
    "StatefulDataLoader sharded": Subject(
        lambda: StatefulDataLoader(sharded(60, 3), batch_size=4), "epoch"
    ),
    "Stream": Subject(
        lambda: Stream(
            StatefulDataLoader(
                Squares(60), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(1)
            )
        ),
        "stream",
    ),
    "TokenArrayDataset sampler": Subject(lambda: _tokens().sampler, "epoch"),
    "Mixture sampler": Subject(lambda: _mixture().sampler, "epoch"),
    "PackedSequences shard": Subject(
        lambda: PackedSequences(
            [{"tokens": list(range(n % 7 + 1))} for n in range(30)], 4, eos_id=9, epochs=2
        ).open_shard(1)
    ),
    "StatefulDataLoader mixture packed": Subject(
        lambda: StatefulDataLoader(
            PackedSequences(_mixture(), 3, key=None, num_shards=2, epochs=2), batch_size=2
        ),
        "epoch",
    ),
}


def _take(obj: Any, mode: str, count: int, iterator: list[Any]) -> list[Any]:
    out: list[Any] = []
    for _ in range(count):
        try:
            if mode == "next":
                out.append(next(obj))
            elif mode == "stream":
                out.append(obj.next())
            else:
                if not iterator:
                    iterator.append(iter(obj))
                out.append(next(iterator[0]))
        except StopIteration:
            break
    return out


def _saved(name: str) -> tuple[dict[str, Any], list[Any]]:
    """The state of `name` after STEPS items, and what a fresh object resumes from it with."""
    subject = SUBJECTS[name]
    obj = subject.build()
    _take(obj, subject.mode, STEPS, [])
    state = json.loads(json.dumps(obj.state_dict()))
    fresh = subject.build()
    fresh.load_state_dict(copy.deepcopy(state))
    return state, _take(fresh, subject.mode, AFTER, [])


_CACHE: dict[str, tuple[dict[str, Any], list[Any]]] = {}


def saved(name: str) -> tuple[dict[str, Any], list[Any]]:
    if name not in _CACHE:
        _CACHE[name] = _saved(name)
    return _CACHE[name]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list) and len(value) <= 8:  # long lists (RNG states) as a whole
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


REPLACEMENTS = [None, 2.5, True, "x", "", [], {}, [1, 2], {"type": "X"}]
#: counters that any int >= 0 is a valid value of (an epoch, a position in an endless source)
UNBOUNDED = ("epoch", "iteration")


def mutate(
    state: dict[str, Any],
    data: Any,
    others: list[dict[str, Any]],
    user: tuple[str, ...] = (),
    unbounded: tuple[str, ...] = (),
) -> tuple[Any, str]:
    """A mutant of `state` and what was done (the subtrees under a key in `user` are left)."""
    kind = data.draw(st.sampled_from(["replace", "drop", "truncate", "swap", "other", "version"]))
    mutant = copy.deepcopy(state)
    if kind == "other":
        other = data.draw(st.sampled_from(others))
        return copy.deepcopy(other), f"the state of {other.get('type')}"
    if kind == "version":
        mutant["version"] = data.draw(st.sampled_from([0, 99, "1", None]))
        return mutant, f"version={mutant['version']!r}"
    paths = [p for p in _paths(mutant) if not any(key in user for key in p)]
    path = data.draw(st.sampled_from(paths))
    parent, key = _get(mutant, path[:-1]), path[-1]
    old = parent[key]
    if kind == "drop" and isinstance(parent, dict):
        del parent[key]
        return mutant, f"dropped {path}"
    if kind == "truncate" and isinstance(old, str) and old:
        parent[key] = old[: len(old) // 2]
        return mutant, f"truncated {path}"
    if kind == "truncate" and isinstance(old, list) and old:
        parent[key] = old[: len(old) // 2]
        return mutant, f"truncated {path}"
    if kind == "swap":  # with a differently configured nested state: the positions of two
        # identically configured iterators (two lists of one length) cannot be told apart
        nested = [
            p
            for p in _paths(mutant)
            if isinstance(_get(mutant, p), dict) and p != path and _differs(_get(mutant, p), old)
        ]
        if nested:
            donor = data.draw(st.sampled_from(nested))
            parent[key] = copy.deepcopy(_get(state, donor))
            return mutant, f"{path} replaced by the subtree at {donor}"
    # a value of another type, or an int out of any range (a flipped flag or another in-range
    # number is a valid state of another position, which no check can tell)
    wrong = [r for r in REPLACEMENTS if type(r) is not type(old)]
    if type(old) is int:
        wrong += [-1, -(10**9)]
        if key not in (*UNBOUNDED, *unbounded):
            wrong.append(10**18)
    new = data.draw(st.sampled_from(wrong))
    parent[key] = copy.deepcopy(new)
    return mutant, f"{path}: {old!r:.40} -> {new!r}"


def _differs(one: dict[str, Any], other: Any) -> bool:
    """Whether two nested states differ in type or configuration (not only in position)."""
    if not isinstance(other, dict) or one.get("type") != other.get("type"):
        return True
    return one.keys() != other.keys()


def _check(name: str, data: Any) -> None:
    state, expected = saved(name)
    others = [saved(n)[0] for n in ("NativeCheckpointableIterator", "ResumableRandomSampler")]
    others = [o for o in others if o.get("type") != state.get("type")]
    subject = SUBJECTS[name]
    mutant, what = mutate(state, data, others, subject.user, subject.unbounded)
    fresh = subject.build()
    try:
        fresh.load_state_dict(mutant)
    except ALLOWED as error:
        assert str(error), f"{name}: {what}: an error without a message"
        return
    except Exception as error:
        raise AssertionError(
            f"{name}: {what}: load_state_dict raised {type(error).__name__}: {error}"
        ) from error
    try:
        got = _take(fresh, subject.mode, AFTER, [])
    except Exception as error:
        raise AssertionError(
            f"{name}: {what}: loaded, then failed at the first items with "
            f"{type(error).__name__}: {error}"
        ) from error
    assert items_equal(got, expected), (
        f"{name}: {what}: loaded and resumed elsewhere:\n  expected {expected}\n  got      {got}"
    )


@pytest.mark.parametrize("name", sorted(SUBJECTS))
@settings(max_examples=EXAMPLES, derandomize=EXAMPLES <= 80)
@given(data=st.data())
def test_a_mutated_state_is_refused_at_load_or_resumes_exactly(
    name: str, data: st.DataObject
) -> None:
    _check(name, data)


def test_a_truncated_generator_state_is_refused_at_load() -> None:
    # a generator the script also drew from is stored in full
    generator = torch.Generator().manual_seed(1)
    torch.rand(1, generator=generator)
    loader = StatefulDataLoader(Squares(60), batch_size=4, shuffle=True, generator=generator)
    next(iter(loader))
    state = json.loads(json.dumps(loader.state_dict()))
    strings = [
        p for p in _paths(state) if isinstance(_get(state, p), str) and len(_get(state, p)) > 100
    ]
    assert strings, "no generator state in the loader's state"
    for path in strings:
        mutant = copy.deepcopy(state)
        parent = _get(mutant, path[:-1])
        parent[path[-1]] = parent[path[-1]][:50]
        with pytest.raises(ALLOWED):
            StatefulDataLoader(Squares(60), batch_size=4, shuffle=True).load_state_dict(mutant)
