"""`ShardedSampler`: the elastic distributed sampler over a `ShardedDataset`'s window order.

Everything about ranks, progress, padding, ``drop_last``, epochs and the state is
``ResumableDistributedSampler``'s; this class only replaces the epoch's permutation (a
`WindowOrder` instead of ``randperm(n)``), starts the next epoch by itself when a pass ends,
and stores the file list's fingerprint so that a state never resumes over other files.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Protocol

import torch
import torch.distributed as dist

from .._checks import require_bool, require_int, require_seed
from .._errors import ArgumentTypeError
from .._samplers.distributed import ResumableDistributedSampler
from .order import WindowOrder
from .storage import FileRef

__all__ = [
    "BlockLayout",
    "BlockSource",
    "ShardedSampler",
    "check_order",
    "describe_names",
    "digest",
    "file_names",
    "placement",
]


def placement(owner: str, world_size: Any, rank: Any) -> tuple[int | None, int | None]:
    """Check `world_size` and `rank` (for `owner`'s messages); both None: the process
    group's (None, None), or rank 0 of 1 without one."""
    if world_size is not None:
        require_int(world_size, owner, "world_size", minimum=1)
    if rank is not None:
        require_int(rank, owner, "rank", minimum=0)
    grouped = dist.is_available() and dist.is_initialized()
    if world_size is None and rank is None:
        return (None, None) if grouped else (1, 0)
    if world_size is None or rank is None:
        if grouped:
            return world_size, rank
        raise ValueError(
            f"{owner}: pass both rank and world_size, or neither (then they come from "
            f"torch.distributed, or are rank 0 of 1); got {rank=}, {world_size=}"
        )
    if rank >= world_size:
        raise ValueError(f"{owner}: rank must be < world_size, got {rank=}, {world_size=}")
    return world_size, rank


def describe_names(names: list[str]) -> str:
    """The first file names and the number of files, for messages and reprs."""
    shown = ", ".join(names[:3]) + (f", ... ({len(names)} files)" if len(names) > 3 else "")
    return f"[{shown}]"


class BlockLayout(Protocol):
    """What the window order and the fingerprint need of a source's blocks."""

    @property
    def block_rows(self) -> torch.Tensor: ...  # int64: rows per block, in file order
    @property
    def block_first(self) -> torch.Tensor: ...  # int64: global row id of each block's first row
    @property
    def names(self) -> list[str]: ...
    @property
    def names_digest(self) -> str: ...
    @property
    def sizes_digest(self) -> str: ...


def digest(parts: list[str]) -> str:
    """A short fingerprint of `parts` (file names, sizes) for a state."""
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


def file_names(refs: list[FileRef]) -> list[str]:
    """The files' paths relative to their common folder (base names for one file or URLs)."""
    paths = [ref.path for ref in refs]
    common = os.path.commonpath(paths) if len(paths) > 1 and not refs[0].remote else ""
    return [os.path.relpath(p, common) if common else os.path.basename(p) for p in paths]


class BlockSource:
    """A map-style source cut into blocks (`ShardedDataset`, `TokenArrayDataset`): its length,
    its files' description and the index check; ``layout`` feeds `ShardedSampler`."""

    NAME = ""
    UNIT = "rows"  # what an index counts, for the range error
    layout: BlockLayout
    _length: int

    def __len__(self) -> int:
        return self._length

    def describe_files(self) -> str:
        """The first file names (relative to their common folder) and the number of files."""
        return describe_names(self.layout.names)

    def _check_index(self, index: Any) -> None:
        if isinstance(index, bool) or not isinstance(index, int):
            raise ArgumentTypeError(f"{self.NAME}: an index must be an int, got {index!r}")
        if not 0 <= index < self._length:
            raise IndexError(
                f"{self.NAME}: index {index} is out of range for {self._length} {self.UNIT}"
            )


class ShardedSampler(ResumableDistributedSampler):
    """The sampler of a `ShardedDataset` (its ``.sampler``): this rank's global row ids.

    Made by `ShardedDataset`; see there for the order and the state.
    """

    def __init__(
        self,
        dataset: BlockSource,
        num_replicas: int | None,
        rank: int | None,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        window: int,
        lanes: int,
    ) -> None:
        self._sharded = dataset
        self._window = window
        self._lanes = lanes
        super().__init__(dataset, num_replicas, rank, shuffle, seed, drop_last)

    _PASS_ENDS_EPOCH = True

    def _permutation(self, epoch: int) -> Any:
        if not self.shuffle:
            return None
        layout = self._sharded.layout
        return WindowOrder(
            layout.block_rows, layout.block_first, self.seed, epoch, self._window, self._lanes
        )

    def _config(self) -> dict[str, Any]:
        layout = self._sharded.layout
        return {
            **super()._config(),
            "window": self._window,
            "lanes": self._lanes,
            "files": {
                "count": len(layout.names),
                "names": layout.names_digest,
                "sizes": layout.sizes_digest,
            },
        }

    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        """Other files: the message says whether their number, their names or their sizes /
        row counts changed."""
        saved, mine = state["files"], config["files"]
        if saved == mine:
            return None
        if not isinstance(saved, dict) or saved.get("count") != mine["count"]:
            count = saved.get("count") if isinstance(saved, dict) else saved
            what = f"{count} files at save, {mine['count']} now"
        elif saved.get("names") != mine["names"]:
            what = "the file names differ"
        else:
            what = "the same file names, but their sizes or row counts differ"
        return (
            f"{type(self._sharded).__name__}: the state was saved over other files ({what}); "
            f"files now: {self._sharded.describe_files()}"
        )

    def _repr_args(self) -> dict[str, Any]:
        args = super()._repr_args()
        args.pop("files", None)
        return args


def check_order(
    owner: str, shuffle: Any, seed: Any, window: Any, lanes: Any, world_size: Any, rank: Any
) -> tuple[int | None, int | None]:
    """Check the order arguments that the block sources share (`ShardedDataset`,
    `TokenArrayDataset`), in `owner`'s name, before any file is read; returns the placement."""
    require_bool(shuffle, owner, "shuffle")
    require_seed(seed, owner)
    require_int(window, owner, "window", minimum=1)
    require_int(lanes, owner, "lanes", minimum=1)
    return placement(owner, world_size, rank)
