"""`TokenArrayDataset`: flat token arrays (``.npy``, raw ``.bin``) as fixed-length sequences."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.utils.data

from .._checks import require_int
from .._errors import ArgumentTypeError
from .sampler import BlockSource, ShardedSampler, check_order, digest, file_names
from .storage import FileRef, expand_files

__all__ = ["TokenArrayDataset"]

NAME = "TokenArrayDataset"


@dataclass
class TokenLayout:
    """Every file's tokens and sequences, its blocks of sequences, and the fingerprint."""

    paths: list[str]
    dtypes: list[np.dtype[Any]]
    offsets: list[int]  # byte offset of the tokens (an .npy header), 0 for raw files
    tokens: list[int]
    first: list[int]  # global id of each file's first sequence (and the total at the end)
    block_rows: torch.Tensor
    block_first: torch.Tensor
    names: list[str]
    names_digest: str
    sizes_digest: str


def _inspect_file(ref: FileRef, dtype: np.dtype[Any]) -> tuple[np.dtype[Any], int, int]:
    """(dtype, byte offset, number of tokens) of a token file, with errors naming it."""
    if ref.remote:
        raise ValueError(f"{NAME}: token files must be local (read with numpy.memmap): {ref.path}")
    if ref.path.endswith(".npy"):
        array = np.load(ref.path, mmap_mode="r")
        if array.ndim != 1:
            raise ValueError(
                f"{NAME}: {ref.path} holds an array of shape {array.shape}; a token file is 1-D"
            )
        if array.dtype.kind not in "iu":
            raise ValueError(f"{NAME}: {ref.path} holds {array.dtype} values, not integer tokens")
        return array.dtype, int(array.offset), int(array.shape[0])
    if ref.size % dtype.itemsize:
        raise ValueError(
            f"{NAME}: the size of {ref.path} ({ref.size} bytes) is not a multiple of the "
            f"{dtype} size ({dtype.itemsize} bytes): a wrong dtype, or a truncated file"
        )
    return dtype, 0, ref.size // dtype.itemsize


def _build_layout(
    refs: list[FileRef], dtype: np.dtype[Any], seq_len: int, block: int
) -> TokenLayout:
    dtypes, offsets, tokens, first, rows = [], [], [], [0], []
    for ref in refs:
        kind, offset, count = _inspect_file(ref, dtype)
        dtypes.append(kind)
        offsets.append(offset)
        tokens.append(count)
        sequences = count // seq_len
        first.append(first[-1] + sequences)
        rows += [block] * (sequences // block) + ([sequences % block] if sequences % block else [])
    block_rows = torch.tensor(rows, dtype=torch.int64)
    names = file_names(refs)
    sizes = [f"{ref.size}:{count}:{seq_len}" for ref, count in zip(refs, tokens, strict=True)]
    return TokenLayout(
        [ref.path for ref in refs],
        dtypes,
        offsets,
        tokens,
        first,
        block_rows,
        torch.cumsum(block_rows, 0) - block_rows,
        names,
        digest(names),
        digest(sizes),
    )


class TokenArrayDataset(BlockSource, torch.utils.data.Dataset[torch.Tensor]):
    """Flat token arrays as one map-style dataset of ``seq_len``-token sequences.

    Each file (a 1-D integer ``.npy``, or a raw ``.bin`` / any other file of `dtype` values, as
    written by ``array.tofile``) is read through ``numpy.memmap`` and cut into consecutive,
    non-overlapping windows of `seq_len` tokens; a file's tail shorter than `seq_len` is left
    out (documents do not span files). Item ``i`` is an int64 tensor of `seq_len` tokens (for
    next-token targets, use ``seq_len = context + 1``). Pass it with its sampler::

        dataset = TokenArrayDataset("data/*.bin", seq_len=2049, dtype="uint16")
        loader = StatefulDataLoader(dataset, batch_size=8, sampler=dataset.sampler)

    The order, the ranks and the state are `ShardedDataset`'s, through the same sampler
    (``ShardedSampler``): consecutive windows form blocks of `block_rows`; with
    ``shuffle=True`` each epoch permutes the blocks and the windows inside each window of
    `window` blocks from ``(seed, epoch)``, a pure function of the position; rank ``r`` of
    ``R`` reads positions ``r + j * R``, and a state loads on any world size and any
    ``num_workers`` and continues with every sequence of the epoch exactly once over all ranks.
    ``dataset.sampler.advance(n)`` skips `n` sequences per rank without reading them.

    Args:
        files: a path or glob, or a list of them (local files).
        seq_len: tokens per sequence, >= 1.
        dtype: the token type of raw files (``.npy`` files carry their own), e.g. ``"uint16"``.
        shuffle, seed, window, lanes, rank, world_size, drop_last: as `ShardedDataset`.
        block_rows: sequences per block of the shuffle (>= 1).

    Raises:
        TypeError, ValueError: an argument has the wrong type or value (named); a raw file's
            size is not a multiple of the dtype's size, or an ``.npy`` file is not a 1-D
            integer array (the file is named).
        FileNotFoundError: a file does not exist or a glob matches nothing.

    State (of ``dataset.sampler``, < 1 KB): ``ShardedSampler``'s, ``{"version", "type",
    "epoch", "dataset_length", "seed", "shuffle", "drop_last", "window", "lanes", "files",
    "progress", "position"}``; restoring sets ints and reads nothing before the position.

    >>> import os, tempfile, numpy
    >>> path = os.path.join(tempfile.mkdtemp(), "tokens.bin")
    >>> numpy.arange(10, dtype=numpy.uint16).tofile(path)
    >>> data = TokenArrayDataset(path, seq_len=3, dtype="uint16", shuffle=False)
    >>> len(data), data[2].tolist()
    (3, [6, 7, 8])
    """

    NAME, UNIT = NAME, "sequences"
    layout: TokenLayout

    def __init__(
        self,
        files: Any,
        seq_len: int,
        dtype: Any = "uint16",
        *,
        shuffle: bool = True,
        seed: int = 0,
        window: int = 16,
        lanes: int = 1,
        block_rows: int = 256,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.seq_len = require_int(seq_len, NAME, "seq_len", minimum=1)
        try:
            kind = np.dtype(dtype)
        except TypeError as error:
            raise ArgumentTypeError(
                f"{NAME}: dtype must be a numpy dtype, got {dtype!r}"
            ) from error
        if kind.kind not in "iu":
            raise ValueError(f"{NAME}: dtype must be an integer type, got dtype={kind}")
        self.dtype = kind
        world_size, rank = check_order(NAME, shuffle, seed, window, lanes, world_size, rank)
        self.block_rows = require_int(block_rows, NAME, "block_rows", minimum=1)
        self.layout = _build_layout(expand_files(files), kind, self.seq_len, self.block_rows)
        self._length = self.layout.first[-1]
        if self._length == 0:
            raise ValueError(
                f"{NAME}: the files hold no sequence of seq_len={self.seq_len} tokens: "
                f"{self.describe_files()}"
            )
        self._arrays: dict[int, np.ndarray[Any, Any]] = {}
        self.sampler = ShardedSampler(
            self, world_size, rank, shuffle, seed, drop_last, window, lanes
        )

    def _array(self, number: int) -> np.ndarray[Any, Any]:
        array = self._arrays.get(number)
        if array is None:
            layout = self.layout
            array = np.memmap(
                layout.paths[number],
                dtype=layout.dtypes[number],
                mode="r",
                offset=layout.offsets[number],
                shape=(layout.tokens[number],),
            )
            self._arrays[number] = array
        return array

    def __getitem__(self, index: int) -> torch.Tensor:
        self._check_index(index)
        first = self.layout.first
        number = bisect_right(first, index) - 1
        start = (index - first[number]) * self.seq_len
        window = self._array(number)[start : start + self.seq_len]
        return torch.from_numpy(window.astype(np.int64))

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        return [self[index] for index in indices]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = {}  # a memmap pickles as a copy of the data: reopen instead
        return state

    def __repr__(self) -> str:
        return (
            f"{NAME}(files={self.describe_files()}, seq_len={self.seq_len}, dtype={self.dtype}, "
            f"sequences={self._length}, block_rows={self.block_rows}, sampler={self.sampler!r})"
        )
