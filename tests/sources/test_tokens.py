"""TokenArrayDataset: memmapped token windows, the sharded order, elastic resume, skips."""

from __future__ import annotations

import functools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from checkpointable import IncompatibleStateError, StatefulDataLoader, TokenArrayDataset
from checkpointable.testing import assert_resumable

SEQ = 4


def write_tokens(folder: Path, sizes: list[int]) -> str:
    """Files of consecutive tokens: token t of the corpus is t, so a window names itself."""
    start = 0
    for number, size in enumerate(sizes):
        tokens = np.arange(start, start + size)
        if number % 2:
            np.save(folder / f"part{number}.npy", tokens.astype(np.int32))
        else:
            tokens.astype(np.uint16).tofile(folder / f"part{number}.bin")
        start += size
    return str(folder / "part*")


def window_id(window: torch.Tensor) -> int:
    return int(window[0])


def _loader(pattern: str, num_workers: int, world: int = 1, rank: int = 0) -> StatefulDataLoader:
    dataset = TokenArrayDataset(
        pattern, SEQ, "uint16", seed=3, block_rows=2, window=2, world_size=world, rank=rank
    )
    return StatefulDataLoader(
        dataset, batch_size=3, sampler=dataset.sampler, num_workers=num_workers
    )


def test_windows_in_file_order_and_shuffled_epochs(tmp_path: Path) -> None:
    pattern = write_tokens(tmp_path, [10, 9, 8])  # 2 + 2 + 2 windows; tails left out
    plain = TokenArrayDataset(pattern, SEQ, shuffle=False)
    assert [plain[i].tolist() for i in range(len(plain))][:3] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [10, 11, 12, 13],
    ]
    assert plain[0].dtype == torch.int64
    shuffled = TokenArrayDataset(pattern, SEQ, seed=1, block_rows=1)
    first, second = list(shuffled.sampler), list(shuffled.sampler)  # a new pass: next epoch
    assert sorted(first) == sorted(second) == list(range(6))
    assert shuffled.sampler.epoch == 1


@pytest.mark.resumable("TokenArrayDataset")
@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumable_through_the_loader(tmp_path: Path, num_workers: int) -> None:
    pattern = write_tokens(tmp_path, [41, 30, 25])
    positions = None if num_workers == 0 else [1, 4, 7]
    items = assert_resumable(
        functools.partial(_loader, pattern, num_workers), epochs=2, positions=positions
    )
    ids = [window_id(w) for batch in items for w in batch]
    assert len(ids) == 2 * len(set(ids)) == 2 * 23


@pytest.mark.parametrize(("before", "after"), [(2, 0), (0, 1)])
def test_resume_with_another_number_of_workers(tmp_path: Path, before: int, after: int) -> None:
    pattern = write_tokens(tmp_path, [50, 33])
    full = [window_id(w) for batch in _loader(pattern, 0) for w in batch]
    loader = _loader(pattern, before)
    batches = iter(loader)
    head = [window_id(w) for _ in range(3) for w in next(batches)]
    state = loader.state_dict()
    del batches
    resumed = _loader(pattern, after)
    resumed.load_state_dict(state)
    assert head + [window_id(w) for batch in resumed for w in batch] == full


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), min_size=1, max_size=3).filter(lambda s: max(s) >= SEQ),
    seed=st.integers(0, 2**31),
    worlds=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    fraction=st.floats(0, 1),
    skip=st.integers(0, 3),
)
def test_every_window_once_over_n_then_m_ranks(
    tmp_path_factory: pytest.TempPathFactory,
    sizes: list[int],
    seed: int,
    worlds: tuple[int, int],
    fraction: float,
    skip: int,
) -> None:
    pattern = write_tokens(tmp_path_factory.mktemp("tokens"), sizes)

    def ranks(world: int) -> list[TokenArrayDataset]:
        return [
            TokenArrayDataset(pattern, SEQ, seed=seed, block_rows=2, world_size=world, rank=r)
            for r in range(world)
        ]

    first = ranks(worlds[0])
    n = len(first[0])
    canonical = list(ranks(1)[0].sampler)
    per_rank = int(n // worlds[0] * fraction)
    iterators = [iter(d.sampler) for d in first]
    seen = [next(i) for i in iterators for _ in range(per_rank)]
    skipped = [d.sampler.advance(skip) for d in first]  # recorded in the state
    state = json.loads(json.dumps(first[0].sampler.state_dict()))
    assert all(d.sampler.state_dict() == state for d in first)
    rest = []
    for dataset in ranks(worlds[1]):
        dataset.sampler.load_state_dict(state)
        rest += list(dataset.sampler)
    progress = len(seen) + min(skipped[0] * worlds[0], n - len(seen))
    assert state["progress"] == progress
    assert set(canonical[: len(seen)] + canonical[progress:]) <= set(seen + rest)
    assert len(rest) == worlds[1] * -(-(n - progress) // worlds[1])  # padding: < M repeats
    assert len(Counter(seen)) == len(seen)


def test_advance_skips_without_reading_and_a_resume_keeps_it(tmp_path: Path) -> None:
    pattern = write_tokens(tmp_path, [64])
    dataset = TokenArrayDataset(pattern, SEQ, seed=5)
    full = list(dataset.sampler)
    dataset = TokenArrayDataset(pattern, SEQ, seed=5)
    assert dataset.sampler.advance(5) == 5
    state = dataset.sampler.state_dict()
    assert state["position"] == 5
    resumed = TokenArrayDataset(pattern, SEQ, seed=5)
    resumed.sampler.load_state_dict(state)
    assert list(resumed.sampler) == full[5:]
    assert resumed.sampler.advance(100) == 16  # after a finished pass: the next epoch, capped
    assert resumed.sampler.epoch == 1 and resumed.sampler.position == 16


def test_bad_input_is_named(tmp_path: Path) -> None:
    pattern = write_tokens(tmp_path, [12])
    with pytest.raises(ValueError, match="seq_len must be a positive int, got seq_len=0"):
        TokenArrayDataset(pattern, 0)
    with pytest.raises(TypeError, match="seq_len must be an int"):
        TokenArrayDataset(pattern, 2.5)  # type: ignore[arg-type]
    (tmp_path / "odd.bin").write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match=r"odd\.bin \(7 bytes\) is not a multiple of the uint16"):
        TokenArrayDataset(str(tmp_path / "odd.bin"), 2)
    with pytest.raises(ValueError, match="dtype must be an integer type"):
        TokenArrayDataset(pattern, 2, "float32")
    np.save(tmp_path / "flat.npy", np.zeros((2, 3), dtype=np.int32))
    with pytest.raises(ValueError, match=r"flat\.npy holds an array of shape \(2, 3\)"):
        TokenArrayDataset(str(tmp_path / "flat.npy"), 2)
    with pytest.raises(ValueError, match="no sequence of seq_len=99"):
        TokenArrayDataset(pattern, 99)
    with pytest.raises(FileNotFoundError):
        TokenArrayDataset(str(tmp_path / "none*.bin"), 2)
    with pytest.raises(ValueError, match="num_samples must be an int >= 0"):
        TokenArrayDataset(pattern, 2).sampler.advance(-1)
    with pytest.raises(ValueError, match=r"TokenArrayDataset: rank must be < world_size"):
        TokenArrayDataset(pattern, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"TokenArrayDataset: window must be a positive int"):
        TokenArrayDataset(pattern, 2, window=0)


def test_state_over_other_files_or_seq_len_is_refused(tmp_path: Path) -> None:
    pattern = write_tokens(tmp_path, [40])
    state = TokenArrayDataset(pattern, SEQ).sampler.state_dict()
    assert len(json.dumps(state)) < 400
    with pytest.raises(IncompatibleStateError, match="TokenArrayDataset: the state was saved"):
        TokenArrayDataset(pattern, 5).sampler.load_state_dict(state)


def test_every_resumable_sampler_advances() -> None:
    from checkpointable import ResumableRandomSampler, ResumableSequentialSampler

    for build in (
        lambda: ResumableRandomSampler(range(12), seed=4),
        lambda: ResumableSequentialSampler(range(12)),
    ):
        full = list(build())
        sampler = build()
        it = iter(sampler)
        head = [next(it) for _ in range(3)]
        assert sampler.advance(4) == 4
        resumed = build()
        resumed.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
        assert head + list(sampler) == full[:3] + full[7:] == head + list(resumed)
