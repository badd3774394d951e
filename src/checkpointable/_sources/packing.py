"""`PackedSequences`: documents' tokens concatenated and cut into sequences of exactly seq_len."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .._checks import require_int
from .._errors import ArgumentTypeError, IncompatibleStateError
from .._samplers.distributed import ResumableDistributedSampler
from .._state import StateBase, state_int
from ..dataloader import ShardedIterableDataset
from .mixture import Mixture, source_order
from .sampler import placement

__all__ = ["PackedSequences", "PackedShard"]

NAME = "PackedSequences"


class PackedShard(StateBase):
    """One packing stream: shard `shard` of `num_shards` on `rank` of `world_size`.

    It reads the source's documents at positions ``x + j * X`` of each epoch's order (``x =
    rank * num_shards + shard``, ``X = world_size * num_shards``), epoch after epoch, and cuts
    their tokens into sequences of `seq_len`. Made by `PackedSequences`; see there.

    State: ``{"version", "type": "PackedShard", "world_size", "num_shards", "shard",
    "seq_len", "key", "eos_id", "epochs", "source_length", "source", "epoch", "document",
    "offset"}``: the document in progress (its number ``j`` in this shard's walk of the epoch)
    and the tokens of it already delivered; ``source`` is the configuration of the source's
    order (its sampler's seed, files, a mixture's weights), checked on load. Restoring reads
    that one document.
    """

    _POSITION_KEYS = ("epoch", "document", "offset")

    def __init__(self, packed: PackedSequences, shard: int) -> None:
        self._packed = packed
        self._shard = shard
        self._stride = packed.world_size * packed.num_shards
        self._first = packed.rank * packed.num_shards + shard
        n = packed.documents
        self._per_epoch = max(0, -(-(n - self._first) // self._stride))
        self._epoch = 0
        self._document = 0
        self._offset = 0
        self._tokens: np.ndarray[Any, Any] | None = None  # the document in progress, if read
        self._order: tuple[int, Any] | None = None

    def _row(self, epoch: int, document: int) -> int:
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, source_order(self._packed.source, epoch))
        order = self._order[1]
        position = self._first + document * self._stride
        return position if order is None else int(order[position])

    def _read(self) -> np.ndarray[Any, Any]:
        packed = self._packed
        document = packed.source[self._row(self._epoch, self._document)]
        if packed.key is None:
            tokens = document
        else:
            try:
                tokens = document[packed.key]
            except (KeyError, TypeError, IndexError):
                raise KeyError(
                    f"{NAME}: a document has no {packed.key!r} field (a "
                    f"{type(document).__name__}); pass key= the token field, or key=None when a "
                    "document is its tokens"
                ) from None
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.numpy()
        array = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if packed.eos_id is not None:
            array = np.append(array, np.int64(packed.eos_id))
        return array

    def _over(self) -> bool:
        epochs = self._packed.epochs
        return self._per_epoch == 0 or (epochs is not None and self._epoch >= epochs)

    def _next_document(self) -> None:
        self._document += 1
        self._offset = 0
        self._tokens = None
        if self._document >= self._per_epoch:
            self._epoch += 1
            self._document = 0

    def __iter__(self) -> PackedShard:
        return self

    def __next__(self) -> torch.Tensor:
        pieces: list[np.ndarray[Any, Any]] = []
        if not self._move(pieces):
            raise StopIteration
        return torch.from_numpy(np.concatenate(pieces))

    def _move(self, pieces: list[np.ndarray[Any, Any]] | None) -> bool:
        """Move over the next sequence's tokens, adding them to `pieces` (unless None); False
        at the end (a leftover shorter than seq_len is left out)."""
        need = self._packed.seq_len
        while need:
            if self._over():
                return False
            if self._tokens is None:
                self._tokens = self._read()
            take = self._tokens[self._offset : self._offset + need]
            if pieces is not None:
                pieces.append(take)
            need -= len(take)
            self._offset += len(take)
            if self._offset >= len(self._tokens):
                self._next_document()
        return True

    def skip(self, num_items: int) -> int:
        """Skip the next `num_items` sequences exactly as `__next__` would deliver them.

        Where a sequence ends depends on the documents' lengths, so this reads the skipped
        documents (their tokens are counted, never packed into tensors); the state moves as if
        the sequences had been delivered, so a later resume stays exact. This is the
        ``skip(num_items)`` that ``StatefulDataLoader.skip`` calls on its shards. For an O(1)
        skip that reads nothing, see `skip_documents`.

        Returns:
            The sequences skipped: `num_items`, or fewer when the stream ends first.

        Raises:
            TypeError, ValueError: `num_items` is not an int >= 0.
        """
        require_int(num_items, NAME, "num_items", minimum=0)
        for skipped in range(num_items):
            if not self._move(None):
                return skipped
        return num_items

    def skip_documents(self, num_documents: int) -> int:
        """Skip the next `num_documents` documents of this stream without reading them: O(1).

        The rest of the document in progress is dropped and the next sequence starts with the
        first document after the skipped ones; recorded in the state (the position), so a
        later resume stays exact. Returns the number of documents skipped (fewer at the end).

        Raises:
            TypeError, ValueError: `num_documents` is not an int >= 0.
        """
        require_int(num_documents, NAME, "num_documents", minimum=0)
        if self._over() or num_documents == 0:
            return 0
        done = self._epoch * self._per_epoch + self._document
        target = done + num_documents
        epochs = self._packed.epochs
        if epochs is not None:
            target = min(target, epochs * self._per_epoch)
        self._epoch, self._document = divmod(target, self._per_epoch)
        self._offset = 0
        self._tokens = None
        return target - done

    def _config(self) -> dict[str, Any]:
        packed = self._packed
        return {
            "world_size": packed.world_size,
            "num_shards": packed.num_shards,
            "shard": self._shard,
            "seq_len": packed.seq_len,
            "key": packed.key,
            "eos_id": packed.eos_id,
            "epochs": packed.epochs,
            "source_length": packed.documents,
            "source": packed.source_config,
        }

    def _position(self) -> dict[str, Any]:
        """The document in progress and the offset into it: plain ints, never tokens."""
        return {"epoch": self._epoch, "document": self._document, "offset": self._offset}

    def _state_owner(self) -> str:
        return f"{NAME} shard {self._shard}"

    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        """Another world size or number of shards (both sizes named), or another source order."""
        for key in ("world_size", "num_shards"):
            if state[key] != config[key]:
                return (
                    f"{NAME}: the state was saved with {key}={state[key]!r}, this run has "
                    f"{key}={config[key]!r}; packed sequences resume exactly only on the same "
                    "world size and number of shards (any num_workers)"
                )
        if state["source"] != config["source"]:
            return (
                f"{NAME}: the state was saved over another source order ({state['source']!r:.120}); "
                f"this source: {config['source']!r:.120}"
            )
        return None

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checked state of the same shard; reads the document in progress once.

        Raises:
            IncompatibleStateError: a position that does not fit the source.
        """
        name = self._state_owner()
        epoch = state_int(name, state, "epoch")
        document = state_int(name, state, "document")
        offset = state_int(name, state, "offset")
        if self._per_epoch and document >= self._per_epoch:
            raise IncompatibleStateError(
                f"{name}: the state's document {document} is beyond the shard's "
                f"{self._per_epoch} documents per epoch"
            )
        epochs = self._packed.epochs
        if epochs is not None and (epoch > epochs or (epoch == epochs and document + offset)):
            raise IncompatibleStateError(f"{name}: the state's epoch {epoch} is beyond {epochs}")
        self._epoch, self._document, self._offset = epoch, document, offset
        self._tokens = None
        if offset and not self._over():
            self._tokens = self._read()
            if offset >= len(self._tokens):
                raise IncompatibleStateError(
                    f"{name}: the state's offset {offset} is beyond the document's "
                    f"{len(self._tokens)} tokens"
                )


def source_config(source: Any) -> dict[str, Any] | None:
    """The configuration that fixes `source`'s order, as plain data (None: index order)."""
    sampler = getattr(source, "sampler", None)
    if not isinstance(sampler, ResumableDistributedSampler):
        return None
    config = {"type": type(sampler).__name__, **sampler._config()}
    config.pop("drop_last", None)  # the packing streams never pad nor drop
    if isinstance(source, Mixture):
        config["schedule"] = source.schedule.entries()
    return config


def _open_shard(packed: PackedSequences, shard: int, num_shards: int) -> PackedShard:
    return PackedShard(packed, shard)


class PackedSequences(ShardedIterableDataset):
    """Documents' tokens concatenated and cut into sequences of exactly `seq_len` tokens.

    The source is a map-style dataset of documents (a `ShardedDataset` of JSONL or Parquet,
    a `Mixture` of them, a list of dicts): document ``d``'s tokens are ``d[key]`` (or ``d``
    itself with ``key=None``), followed by `eos_id` when it is given. Each rank packs its own
    share of the source's epoch order in `num_shards` independent streams (`PackedShard`):
    stream ``x`` of ``X = world_size * num_shards`` reads positions ``x + j * X``. A
    document's leftover carries into the stream's next sequence; sequences are int64 tensors.
    Epochs follow one another (``epochs=None``: endless); with `epochs`, a stream's final
    leftover shorter than `seq_len` is left out.

    In a `StatefulDataLoader` the loader decides which stream each batch comes from (see
    `ShardedIterableDataset`), so a state resumes exactly with **any** ``num_workers``. A
    different **world size** (or `num_shards`) is refused with `IncompatibleStateError`
    naming both sizes: the streams pack at different rates (documents differ in length), so
    no prefix of the source order is consumed that another deal could continue from. To change
    the world size, pack documents offline (e.g. to a `TokenArrayDataset`), whose resume is
    elastic. A stream's ``skip(n)`` skips `n` sequences exactly (reading the documents they
    span; ``StatefulDataLoader.skip`` uses it), ``skip_documents(n)`` `n` documents in O(1).

    Args:
        source: a map-style dataset of documents.
        seq_len: tokens per sequence, >= 1.
        key: the documents' token field; None: the document is the tokens.
        eos_id: a token appended to each document (the separator), or None.
        num_shards: packing streams per rank (>= 1); more than ``num_workers`` keeps every
            worker busy.
        epochs: source epochs to pack, or None for endless.
        rank, world_size: as `ShardedDataset`.

    Raises:
        TypeError, ValueError: a bad argument (named), e.g. ``seq_len < 1``.

    State: per stream, in the loader's state (`PackedShard`): the source position (epoch and
    document) and the offset into the document in progress, never tokens; restoring re-reads
    that one document.

    >>> docs = [{"tokens": [1, 2, 3]}, {"tokens": [4, 5]}, {"tokens": [6, 7, 8, 9]}]
    >>> packed = PackedSequences(docs, 3, eos_id=0, num_shards=1, epochs=1)
    >>> [s.tolist() for s in packed]
    [[1, 2, 3], [0, 4, 5], [0, 6, 7], [8, 9, 0]]
    """

    def __init__(
        self,
        source: Any,
        seq_len: int,
        *,
        key: str | None = "tokens",
        eos_id: int | None = None,
        num_shards: int = 4,
        epochs: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise ArgumentTypeError(
                f"{NAME}: source must be a map-style dataset of documents (len and []), got "
                f"{type(source).__name__}"
            )
        self.source = source
        self.seq_len = require_int(seq_len, NAME, "seq_len", minimum=1)
        if key is not None and not isinstance(key, str):
            raise ArgumentTypeError(f"{NAME}: key must be a str or None, got {key!r}")
        self.key = key
        self.eos_id = None if eos_id is None else require_int(eos_id, NAME, "eos_id", minimum=0)
        self.epochs = None if epochs is None else require_int(epochs, NAME, "epochs", minimum=1)
        require_int(num_shards, NAME, "num_shards", minimum=1)
        world, place = placement(NAME, world_size, rank)
        self.world_size = dist.get_world_size() if world is None else world
        self.rank = dist.get_rank() if place is None else place
        #: what fixes the source's order (its sampler's configuration, a mixture's schedule),
        #: checked on load: None for a plain dataset (read in index order)
        self.source_config = source_config(source)
        #: documents per epoch of the source (a "stop" mixture's epoch ends before its len())
        self.documents = source.epoch_draws() if isinstance(source, Mixture) else len(source)
        super().__init__(partial(_open_shard, self), num_shards)

    def open_shard(self, shard_index: int) -> PackedShard:
        """Stream `shard_index` of this rank, at its start."""
        return PackedShard(self, shard_index)

    def __repr__(self) -> str:
        return (
            f"{NAME}(source={type(self.source).__name__}, seq_len={self.seq_len}, "
            f"key={self.key!r}, eos_id={self.eos_id}, num_shards={self.num_shards}, "
            f"epochs={self.epochs}, rank={self.rank}, world_size={self.world_size})"
        )
