"""`ShardedSampler`: the elastic distributed sampler over a `ShardedDataset`'s window order.

Everything about ranks, progress, padding, ``drop_last``, epochs and the state is
``ResumableDistributedSampler``'s; this class only replaces the epoch's permutation (a
`WindowOrder` instead of ``randperm(n)``), starts the next epoch by itself when a pass ends,
and stores the file list's fingerprint so that a state never resumes over other files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from .._errors import IncompatibleStateError
from .._samplers.distributed import ResumableDistributedSampler
from .order import WindowOrder

__all__ = ["BlockLayout", "BlockSource", "ShardedSampler"]


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


class BlockSource(Protocol):
    """A map-style source cut into blocks: `ShardedDataset`, `TokenArrayDataset`."""

    @property
    def layout(self) -> BlockLayout: ...

    def __len__(self) -> int: ...

    def describe_files(self) -> str: ...


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

    def _permutation(self, epoch: int) -> Any:
        if not self.shuffle:
            return None
        layout = self._sharded.layout
        return WindowOrder(
            layout.block_rows, layout.block_first, self.seed, epoch, self._window, self._lanes
        )

    def __iter__(self) -> Iterator[int]:
        if self._finished:  # a pass ran out: the next pass is the next epoch
            self._epoch += 1
            self._restart()
        return super().__iter__()

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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state of a `ShardedDataset` over the same files.

        Raises:
            IncompatibleStateError: another sampler's state, other files (the message says
                whether their number, their names or their sizes / row counts changed), or
                another seed, shuffle, window, lanes or drop_last.
        """
        saved = state_dict.get("files") if isinstance(state_dict, dict) else None
        mine = self._config()["files"]
        if isinstance(saved, dict) and saved != mine:
            if saved.get("count") != mine["count"]:
                what = f"{saved.get('count')} files at save, {mine['count']} now"
            elif saved.get("names") != mine["names"]:
                what = "the file names differ"
            else:
                what = "the same file names, but their sizes or row counts differ"
            raise IncompatibleStateError(
                f"{type(self._sharded).__name__}: the state was saved over other files ({what}); "
                f"files now: {self._sharded.describe_files()}"
            )
        super().load_state_dict(state_dict)

    def _repr_args(self) -> dict[str, Any]:
        args = super()._repr_args()
        args.pop("files", None)
        return args
