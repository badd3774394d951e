"""Samplers: save and restore mid-epoch, and the hot path, against the peers in one run.

Metrics, for an epoch of 1e7 samples (1e6 in quick mode) and a resume at positions 1e3 and 1e6
(1e5 in quick mode):

- ``restore+first s``: from a saved state to the first index of the rest of the epoch.
  Peers: helios' regeneration (``randperm(n).tolist()`` then slicing from ``start_iter *
  batch_size``; helios-ml itself is not installed because it pulls torchvision, onnx and
  opencv, so ``helios_resume`` below reproduces its documented ``__iter__`` step for step),
  torch's ``RandomSampler`` fast-forwarded (iterate and discard), and torchdata's stateful
  ``RandomSampler`` (its ``load_state_dict`` replays the epoch up to the position).
- ``state_dict us`` and ``state bytes`` against torchdata's stateful sampler iterator.
- ``flat in position``: ours at the far position against ours at the near one (goal ~1x).
- ``items/s``: iterating a whole epoch, ours against torch's ``RandomSampler`` and
  ``DistributedSampler`` (the cost of tracking the position on the hot path).
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from functools import partial
from itertools import islice
from typing import Any, cast

import torch
from _common import Row, median_seconds, print_rows
from torch.utils.data import Dataset, DistributedSampler, RandomSampler

from checkpointable.samplers import ResumableDistributedSampler, ResumableRandomSampler

SEED = 17
HELIOS = "helios 2.0.1 regeneration (reproduced)"
TORCH_FF = f"torch {torch.__version__.split('+')[0]} RandomSampler + fast-forward"


def ours_state(n: int, position: int) -> dict:
    sampler = ResumableRandomSampler(range(n), seed=SEED)
    it = iter(sampler)
    next(islice(it, position - 1, None))  # yield `position` samples
    return sampler.state_dict()


def ours_resume(n: int, state: dict) -> int:
    sampler = ResumableRandomSampler(range(n), seed=SEED)
    sampler.load_state_dict(state)
    return next(iter(sampler))


def helios_resume(n: int, start_iter: int, batch_size: int = 1, epoch: int = 0) -> int:
    """helios' ResumableRandomSampler.__iter__ after ``sampler.start_iter = start_iter``."""
    generator = torch.Generator()
    generator.manual_seed(epoch + SEED)
    indices: list[int] = torch.randperm(n, generator=generator).tolist()
    indices = indices[start_iter * batch_size :]
    return next(iter(indices))


def torch_fast_forward(n: int, position: int) -> int:
    sampler = RandomSampler(range(n), generator=torch.Generator().manual_seed(SEED))
    it = iter(sampler)
    for _ in islice(it, position):
        pass
    return next(it)


def torchdata_iterator(n: int) -> Any:
    from torchdata.stateful_dataloader.sampler import RandomSampler as StatefulRandomSampler

    sampler = StatefulRandomSampler(range(n), generator=torch.Generator().manual_seed(SEED))
    return iter(sampler)


def torchdata_state(n: int, position: int) -> dict:
    it = torchdata_iterator(n)
    for _ in islice(it, position):
        pass
    state: dict[str, Any] = it.state_dict()
    return state


def torchdata_resume(n: int, state: dict) -> int:
    it = torchdata_iterator(n)
    it.load_state_dict(state)
    first: int = next(it)
    return first


def state_bytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(buffer.getvalue())


def items_per_second(make: Callable[[], object], n: int, repeat: int) -> float:
    def run() -> None:
        for _ in make():  # type: ignore[attr-defined]
            pass

    return n / median_seconds(run, repeat=repeat)


def run(quick: bool = False) -> list[Row]:
    n = 10**6 if quick else 10**7
    positions = (10**3, 10**5) if quick else (10**3, 10**6)
    repeat = 3
    rows: list[Row] = []
    name = f"samplers: random, epoch of {n:.0e}"
    try:
        import torchdata

        torchdata_name = f"torchdata {torchdata.__version__.split('+')[0]} stateful RandomSampler"
    except ImportError:
        torchdata_name = ""
    restore = {}
    for position in positions:
        where = f"{name}, resume at {position:.0e}"
        state = ours_state(n, position)
        assert ours_resume(n, state) == helios_resume(n, position)  # the same order
        restore[position] = median_seconds(partial(ours_resume, n, state), repeat)
        ours = restore[position]
        helios = median_seconds(partial(helios_resume, n, position), repeat)
        rows.append(Row(where, "restore+first s", ours, helios, HELIOS, False, "flat, < peer"))
        torch_ff = median_seconds(partial(torch_fast_forward, n, position), repeat)
        rows.append(Row(where, "restore+first s", ours, torch_ff, TORCH_FF, False, "< peer"))
        if torchdata_name:
            peer_state = torchdata_state(n, position)
            peer = median_seconds(partial(torchdata_resume, n, peer_state), repeat)
            rows.append(Row(where, "restore+first s", ours, peer, torchdata_name, False, "< peer"))
    near, far = positions
    rows.append(
        Row(
            f"{name}, resume at {far:.0e} vs {near:.0e}",
            "flat in position",
            restore[far],
            restore[near],
            f"ours at {near:.0e}",
            False,
            "~1.0x",
        )
    )
    # state_dict on a live sampler mid-epoch, and its size
    sampler = ResumableRandomSampler(range(n), seed=SEED)
    it = iter(sampler)
    next(islice(it, positions[0], None))
    ours_us = median_seconds(sampler.state_dict, repeat=5, number=1000) * 1e6
    ours_bytes = state_bytes(sampler.state_dict())
    assert len(json.dumps(sampler.state_dict())) < 200
    if torchdata_name:
        peer_it = torchdata_iterator(n)
        next(islice(peer_it, positions[0], None))
        peer_us = median_seconds(peer_it.state_dict, repeat=5, number=1000) * 1e6
        where = f"{name}, mid-epoch"
        # the peer returns the tensor it holds (no copy); ours builds a fresh dict of ints
        rows.append(Row(where, "state_dict us", ours_us, peer_us, torchdata_name, False, "< 10 us"))
        rows.append(
            Row(
                where,
                "state bytes",
                ours_bytes,
                state_bytes(peer_it.state_dict()),
                torchdata_name,
                False,
                "< peer",
            )
        )
    # the hot path: a whole epoch
    m = n // 10
    ours_rate = items_per_second(lambda: ResumableRandomSampler(range(m), seed=SEED), m, repeat)
    torch_rate = items_per_second(
        lambda: RandomSampler(range(m), generator=torch.Generator().manual_seed(SEED)), m, repeat
    )
    rows.append(
        Row(
            f"samplers: random, iterate an epoch of {m:.0e}",
            "items/s",
            ours_rate,
            torch_rate,
            f"torch {torch.__version__.split('+')[0]} RandomSampler",
            True,
            ">= 1.0x",
        )
    )
    ours_rate = items_per_second(
        lambda: ResumableDistributedSampler(range(m), 2, 1), m // 2, repeat
    )
    torch_rate = items_per_second(
        lambda: DistributedSampler(cast("Dataset[int]", range(m)), 2, 1), m // 2, repeat
    )
    rows.append(
        Row(
            f"samplers: distributed rank 1 of 2, iterate an epoch of {m:.0e}",
            "items/s",
            ours_rate,
            torch_rate,
            f"torch {torch.__version__.split('+')[0]} DistributedSampler",
            True,
            ">= 1.0x",
        )
    )
    # distributed restore at the far position, against torch's sampler fast-forwarded
    ranks = 2
    dist_ours = ResumableDistributedSampler(range(n), ranks, 1, seed=SEED)
    next(islice(iter(dist_ours), far // ranks - 1, None))
    dist_state = dist_ours.state_dict()

    def dist_resume() -> int:
        sampler = ResumableDistributedSampler(range(n), ranks, 1, seed=SEED)
        sampler.load_state_dict(dist_state)
        return next(iter(sampler))

    def dist_fast_forward() -> int:
        # torch's sampler only takes len(dataset): a range will do
        sampler: DistributedSampler[int] = DistributedSampler(
            cast("Dataset[int]", range(n)), ranks, 1, seed=SEED
        )
        it = iter(sampler)
        for _ in islice(it, far // ranks):
            pass
        return next(it)

    assert dist_resume() == dist_fast_forward()
    rows.append(
        Row(
            f"samplers: distributed, epoch of {n:.0e}, resume at {far:.0e}",
            "restore+first s",
            median_seconds(dist_resume, repeat),
            median_seconds(dist_fast_forward, repeat),
            f"torch {torch.__version__.split('+')[0]} DistributedSampler + fast-forward",
            False,
            "< peer",
        )
    )
    return rows


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
