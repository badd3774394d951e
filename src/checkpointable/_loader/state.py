"""The loader's position, kept in the main process, and its plain-data state.

`LoaderState` is updated as batches are delivered (never by a round trip to the workers) and
written by `state_dict` in a few microseconds: our own parts are plain data, the nested dataset
and sampler states are stored as `StateBase.nested_state` gives them (the package's objects'
without a ``"version"``, another package's as it gives it). The layout is `StateBase`'s, with the
configuration as one list and the position as one list per group (`state_layout`); it is
documented key by key in ``docs/state_format.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from .._errors import IncompatibleStateError
from .._rng import decode_torch_state
from .._state import StateBase
from .state_layout import CONFIG, POSITION, Field, fingerprint
from .state_v3 import OLD_VERSIONS, upgrade

__all__ = ["LOADER_STATE_VERSION", "LoaderState"]

#: The loader's own format version: 5 nests the package's objects' states without their
#: "version" (`StateBase.nested_state`), 4 is the compact layout of `state_layout` (3 added
#: "skips", `StatefulDataLoader.skip`); versions 2 and 3 are read by `state_v3`.
LOADER_STATE_VERSION = 5
#: Skips kept in the state's log (the oldest are dropped; "total" counts them all).
SKIP_LOG_LENGTH = 32
_OWNER = "StatefulDataLoader.load_state_dict"
#: Per group of the position: its key and what reads its entries from a `LoaderState`.
_READERS = tuple(
    (key, attrgetter(*(field.source for field in fields))) for key, fields in POSITION.items()
)
_WORKER_KEYS = ("state", "fresh")
_STREAM_KEYS = ("state", "iterator_state", "fresh", "replay", "ended")


class _Pending:
    """Marks a fresh entry whose state (that of the loader's own copy) is read when needed."""

    def __repr__(self) -> str:
        return "<pending>"


PENDING = _Pending()


class LoaderState(StateBase):
    """Where a loader is: epoch, batches delivered, sampler position, seeds, per-source states.

    Args:
        config: the loader's configuration, by name (``dataset_kind`` and `state_layout.CONFIG`);
            the state stores and checks the entries of its kind.
        num_entries: per-worker dataset entries (map style with a stateful dataset), or 0.
        num_streams: streams of an iterable-style dataset (workers or shards), or 0.
        stream_stateful: whether the streams' sources have their own state.
        fresh_state: ``fresh_state(i)`` reads the state that entry `i` starts from (the loader's
            own copy of the dataset, or a freshly made shard); called only when written.
    """

    _STATE_TYPE = "StatefulDataLoader"
    _VERSIONS = (*OLD_VERSIONS, 4, LOADER_STATE_VERSION)  # 4: as 5, nested versions accepted
    _POSITION_KEYS = tuple(POSITION)

    def __init__(
        self,
        config: dict[str, Any],
        num_entries: int,
        num_streams: int,
        stream_stateful: bool,
        fresh_state: Callable[[int], Any],
    ) -> None:
        self.config = config
        kind = config["dataset_kind"]
        #: The "config" group as written: the kind, then `CONFIG` [kind] (long ones fingerprinted).
        self._saved_config: list[Any] = [
            kind,
            *(
                fingerprint(config[field.name]) if field.fingerprinted else config[field.name]
                for field in CONFIG[kind]
            ),
        ]
        self.epoch = 0
        self.in_epoch = False
        self.batches = 0  # delivered in the epoch; with out-of-order delivery, the low watermark
        self.beyond: set[int] = set()  # positions delivered above the watermark
        self.seed: int | None = None
        self.generator_state: dict[str, Any] | str | None = None
        self.sampler_state: Any = None
        # The epoch's index lists ran out while the tasks up to the watermark were drawn.
        self.sampler_exhausted = False
        self.base_seed: int | None = None
        self.shared_seed: int | None = None  # an IterDataPipe's seed for this epoch's shuffles
        #: The next epoch's seeds, drawn from the global RNG when a state was written at an
        #: epoch boundary: {"base_seed", "sampler_seed"} (each None when not drawn), or None.
        self.next_seeds: dict[str, int | None] | None = None
        self.loader_generator_state: dict[str, Any] | str | None = None
        self._num_entries = num_entries
        self._stream_stateful = stream_stateful
        self.dataset_states: list[dict[str, Any]] | None = (
            self.fresh_workers() if num_entries else None
        )
        self.streams: list[dict[str, Any]] = self.fresh_streams(num_streams)
        self.next_stream = 0
        self._fresh_state = fresh_state
        #: Batches still to cut from the start of the next epoch(s) (`StatefulDataLoader.skip`).
        self.skip_pending = 0
        #: Batches skipped in all, and the latest skips as [epoch, batch, count].
        self.skip_total = 0
        self.skip_log: list[list[int]] = []
        #: Called before writing the state: reads the generators' states and, without workers,
        #: the user's states from the live main-process objects.
        self.refresh: Callable[[], None] | None = None

    def fresh_workers(self) -> list[dict[str, Any]]:
        return [{"state": PENDING, "fresh": True} for _ in range(self._num_entries)]

    def fresh_streams(self, count: int) -> list[dict[str, Any]]:
        state = PENDING if self._stream_stateful else None
        return [
            {"state": state, "iterator_state": None, "fresh": True, "replay": 0, "ended": False}
            for _ in range(count)
        ]

    def take_snapshot(self, index: int, snapshot: dict[str, Any]) -> None:
        """Batcher `index` delivered a batch with this snapshot (see `batcher.Batcher`)."""
        entry = self.streams[index]
        entry["state"], entry["iterator_state"] = snapshot["state"], snapshot["iterator_state"]
        entry["fresh"], entry["replay"] = False, 0

    def snapshot(self, index: int) -> dict[str, Any]:
        """What stream `index` starts from: its saved snapshot and the epoch's shared seed."""
        entry = self.streams[index]
        return {
            "state": entry["state"],
            "iterator_state": entry["iterator_state"],
            "shared_seed": self.shared_seed,
        }

    def start_epoch(self, carry: bool) -> None:
        """Begin a fresh epoch; `carry` keeps the workers' states (persistent workers)."""
        self.in_epoch = True
        self.batches = 0
        self.beyond = set()
        self.seed = None
        self.generator_state = None
        self.sampler_exhausted = False
        self.next_stream = 0
        if not carry:
            if self.dataset_states is not None:
                self.dataset_states = self.fresh_workers()
            self.streams = self.fresh_streams(len(self.streams))
        else:  # a persistent worker's dataset copy lives on; its iterator is a new one
            for entry in self.streams:
                entry["replay"] = 0
                entry["ended"] = False
                entry["iterator_state"] = None

    def end_epoch(self) -> None:
        self.in_epoch = False
        self.epoch += 1

    def deliver(self, position: int) -> None:
        """Record that the task at `position` of the epoch was delivered (any order)."""
        if position == self.batches:
            self.batches += 1
            beyond = self.beyond
            while self.batches in beyond:
                beyond.remove(self.batches)
                self.batches += 1
        else:
            self.beyond.add(position)

    def _config(self) -> dict[str, Any]:
        return {"config": self._saved_config.copy()}

    def _position(self) -> dict[str, Any]:
        """One list per group of `state_layout` (built here, never between two calls)."""
        if self.refresh is not None:
            self.refresh()
        return {key: list(read(self)) for key, read in _READERS}

    def _state_owner(self) -> str:
        return _OWNER

    @property
    def delivered_beyond(self) -> list[int]:
        return sorted(self.beyond) if self.beyond else []

    @property
    def next_base_seed(self) -> int | None:
        return None if self.next_seeds is None else self.next_seeds.get("base_seed")

    @property
    def next_sampler_seed(self) -> int | None:
        return None if self.next_seeds is None else self.next_seeds.get("sampler_seed")

    @property
    def dataset_entries(self) -> list[dict[str, Any]] | None:
        states = self.dataset_states
        return None if states is None else [self._entry(i, e) for i, e in enumerate(states)]

    @property
    def stream_entries(self) -> list[dict[str, Any]]:
        return [self._entry(i, e) for i, e in enumerate(self.streams)] if self.streams else []

    @property
    def skip_log_copy(self) -> list[list[int]]:
        return [list(entry) for entry in self.skip_log]

    def record_skip(self, epoch: int, batch: int, count: int) -> None:
        """Log a skip of `count` batches from batch `batch` of epoch `epoch`."""
        self.skip_total += count
        self.skip_log = [*self.skip_log, [epoch, batch, count]][-SKIP_LOG_LENGTH:]

    def _entry(self, index: int, entry: dict[str, Any]) -> dict[str, Any]:
        if entry["state"] is PENDING:
            entry["state"] = self._fresh_state(index)
        return dict(entry)

    def _check(self, state_dict: Any) -> dict[str, Any]:
        """`StateBase`'s checks, after rewriting a format 2 or 3 state as the current one."""
        return super()._check(upgrade(state_dict, _OWNER))

    def _restore(self, state: dict[str, Any]) -> None:
        """Take the position of a state whose configuration matches this loader's.

        Raises:
            IncompatibleStateError: a position entry is not what `state_layout` allows.
        """
        values: dict[str, Any] = {}
        for key, fields in POSITION.items():
            values.update(_group(state, key, fields))
        batches, beyond = values["batches"], values["delivered_beyond"]
        if not all(p > batches for p in beyond):
            raise IncompatibleStateError(
                f"{_OWNER}: the state's 'delivered_beyond' must be a list of ints > batches "
                f"({batches}), got {beyond!r:.80}"
            )
        for name in ("generator_state", "loader_generator_state"):
            if values[name] is not None:  # refused now, not at the next epoch
                decode_torch_state(values[name], _OWNER, name)
        dataset_states = self._load_workers(values["dataset_states"])
        streams = self._load_streams(values["streams"])
        next_stream = values["next_stream"]
        if next_stream >= max(len(streams), 1):
            raise IncompatibleStateError(
                f"{_OWNER}: the state's next_stream {next_stream} is not one of its "
                f"{len(streams)} streams"
            )
        self.epoch, self.in_epoch, self.batches = values["epoch"], values["in_epoch"], batches
        self.beyond = set(beyond)
        self.seed, self.generator_state = values["seed"], values["generator_state"]
        self.sampler_state = values["sampler_state"]
        self.sampler_exhausted = values["sampler_exhausted"]
        self.base_seed, self.shared_seed = values["base_seed"], values["shared_seed"]
        base, sampler = values["next_base_seed"], values["next_sampler_seed"]
        drawn = base is not None or sampler is not None
        self.next_seeds = {"base_seed": base, "sampler_seed": sampler} if drawn else None
        self.loader_generator_state = values["loader_generator_state"]
        self.dataset_states, self.streams, self.next_stream = dataset_states, streams, next_stream
        self.skip_pending, self.skip_total = values["skip_pending"], values["skip_total"]
        self.skip_log = [list(entry) for entry in values["skip_log"]]

    def _config_mismatch(self, state: dict[str, Any], config: dict[str, Any]) -> str | None:
        """Name the first entry of the state's 'config' that differs from ours (None for one
        that is not a list of this kind's length: the generic message shows both lists)."""
        saved, ours = state["config"], config["config"]
        malformed = not isinstance(saved, list) or not saved
        if malformed or (saved[0] == ours[0] and len(saved) != len(ours)):
            return None
        fields = (Field("dataset_kind", (str,)), *CONFIG[ours[0]])
        field, found, expected = next(
            entry for entry in zip(fields, saved, ours, strict=False) if entry[1] != entry[2]
        )
        value = self.config[field.name]
        if field.name == "num_workers":
            return (
                f"{_OWNER}: the state was saved with num_workers={found!r}, but this loader "
                f"has num_workers={value}; the state of a plain IterableDataset is one state "
                "per worker copy and cannot be split or merged: load it with the same "
                "num_workers, or make the dataset a ShardedIterableDataset, whose states "
                "load with any num_workers"
            )
        if field.fingerprinted:
            return (
                f"{_OWNER}: the state was saved with another {field.name} (fingerprint "
                f"{found!r}) than this loader's {field.name}={value!r} (fingerprint "
                f"{expected!r})"
            )
        return (
            f"{_OWNER}: the state was saved with {field.name}={found!r}, but this object "
            f"has {field.name}={value!r}"
        )

    def _load_workers(self, saved: list[Any] | None) -> list[dict[str, Any]] | None:
        if not self._num_entries:
            return None
        if saved is None:
            warnings.warn(
                "StatefulDataLoader.load_state_dict: the state holds no dataset state (the "
                "dataset had no state_dict when it was saved); the workers start from the "
                "dataset as it is",
                stacklevel=6,  # the script calling StatefulDataLoader.load_state_dict
            )
            return self.fresh_workers()
        entries = [_entry(item, _WORKER_KEYS, "dataset_states") for item in saved]
        if len(entries) != self._num_entries:
            warnings.warn(
                f"StatefulDataLoader.load_state_dict: the state was saved with "
                f"num_workers={len(entries)} and this loader has "
                f"num_workers={self.config['num_workers']}: the sample order continues exactly, "
                "but the dataset's per-worker states (e.g. augmentation RNGs) are not restored; "
                "the new workers start from the dataset as it is, seeded afresh",
                stacklevel=6,  # the script calling StatefulDataLoader.load_state_dict
            )
            return self.fresh_workers()
        return entries

    def _load_streams(self, saved: list[Any]) -> list[dict[str, Any]]:
        entries = [_entry(item, _STREAM_KEYS, "streams") for item in saved]
        if len(entries) != len(self.streams):
            raise IncompatibleStateError(
                f"{_OWNER}: the state has {len(entries)} streams, this loader reads "
                f"{len(self.streams)}"
            )
        for entry in entries:
            if type(entry["replay"]) is not int or entry["replay"] < 0:
                raise IncompatibleStateError(
                    f"{_OWNER}: a stream's 'replay' must be an int >= 0, got {entry['replay']!r}"
                )
        return entries


def _group(state: dict[str, Any], key: str, fields: tuple[Field, ...]) -> dict[str, Any]:
    """The entries of group `key`, by name, after checking each against its field."""
    values = state[key]
    if not isinstance(values, list) or len(values) != len(fields):
        names = [field.name for field in fields]
        raise IncompatibleStateError(
            f"{_OWNER}: the state's {key!r} must be a list of {names}, got {values!r:.80}"
        )
    out = {}
    for field, value in zip(fields, values, strict=True):
        if field.types != (object,) and (
            type(value) not in field.types or (field.check is not None and not field.check(value))
        ):
            kinds = " or ".join(t.__name__ for t in field.types).replace("NoneType", "None")
            raise IncompatibleStateError(
                f"{_OWNER}: the state's {field.name!r} ({key}[{fields.index(field)}]) must be "
                f"{kinds}{'' if field.check is None else ' ' + str(field.check.__doc__)}, got "
                f"{value!r:.60}"
            )
        out[field.name] = value
    return out


def _entry(item: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(item, dict) or set(item) != set(keys):
        raise IncompatibleStateError(
            f"{_OWNER}: each entry of {where!r} must be a dict with the keys {list(keys)}, "
            f"got {item!r:.80}"
        )
    for key in ("fresh", "ended"):
        if key in item and type(item[key]) is not bool:
            raise IncompatibleStateError(
                f"{_OWNER}: {where}[...][{key!r}] must be a bool, got {item[key]!r}"
            )
    return dict(item)
