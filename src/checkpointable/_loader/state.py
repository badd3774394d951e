"""The loader's position, kept in the main process, and its plain-data state.

`LoaderState` is updated as batches are delivered (never by a round trip to the workers) and
written by `to_dict` in a few microseconds: our own parts are plain data, the user's dataset and
sampler states are stored as they give them. The layout is documented key by key in
``docs/state_format.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from .._errors import IncompatibleStateError
from .._state import check_config, check_state, state_int
from .rng import decode_generator_state

__all__ = ["LOADER_STATE_VERSION", "STATE_TYPE", "LoaderState"]

STATE_TYPE = "StatefulDataLoader"
#: The loader's own format version: 3 added "skips" (`StatefulDataLoader.skip`). A version-2
#: state (before skips) is read as one without skips.
LOADER_STATE_VERSION = 3
#: Skips kept in the state's log (the oldest are dropped; "total" counts them all).
SKIP_LOG_LENGTH = 32
_OWNER = "StatefulDataLoader.load_state_dict"
_CONFIG_KEYS = (
    "dataset_kind",
    "dataset_length",
    "batch_size",
    "drop_last",
    "sampler",
    "num_workers",
    "num_shards",
)
_POSITION_KEYS = (
    "epoch",
    "in_epoch",
    "batches",
    "delivered_beyond",
    "sampler_position",
    "base_seed",
    "shared_seed",
    "next_seeds",
    "loader_generator_state",
    "dataset_states",
    "streams",
    "next_stream",
    "skips",
)
#: The configuration a state must match, per dataset kind (the rest is what a resume may change).
_CHECKED_CONFIG = {
    "map": ("dataset_length", "batch_size", "drop_last", "sampler"),
    "iterable": ("batch_size", "drop_last"),
    "sharded": ("num_shards", "batch_size", "drop_last"),
}
_SAMPLER_KEYS = ("seed", "generator_state", "sampler_state", "exhausted")
_WORKER_KEYS = ("state", "fresh")
_STREAM_KEYS = ("state", "iterator_state", "fresh", "replay", "ended")


class _Pending:
    """Marks a fresh entry whose state (that of the loader's own copy) is read when needed."""

    def __repr__(self) -> str:
        return "<pending>"


PENDING = _Pending()


class LoaderState:
    """Where a loader is: epoch, batches delivered, sampler position, seeds, per-source states.

    Args:
        config: the configuration stored in the state and compared on load (`_CONFIG_KEYS`).
        num_entries: per-worker dataset entries (map style with a stateful dataset), or 0.
        num_streams: streams of an iterable-style dataset (workers or shards), or 0.
        stream_stateful: whether the streams' sources have their own state.
        fresh_state: ``fresh_state(i)`` reads the state that entry `i` starts from (the loader's
            own copy of the dataset, or a freshly made shard); called only when written.
    """

    def __init__(
        self,
        config: dict[str, Any],
        num_entries: int,
        num_streams: int,
        stream_stateful: bool,
        fresh_state: Callable[[int], Any],
    ) -> None:
        self.config = config
        self.epoch = 0
        self.in_epoch = False
        self.batches = 0  # delivered in the epoch; with out-of-order delivery, the low watermark
        self.beyond: set[int] = set()  # positions delivered above the watermark
        self.seed: int | None = None
        self.generator_state: str | None = None
        self.sampler_state: Any = None
        # The epoch's index lists ran out while the tasks up to the watermark were drawn.
        self.sampler_exhausted = False
        self.base_seed: int | None = None
        self.shared_seed: int | None = None  # an IterDataPipe's seed for this epoch's shuffles
        #: The next epoch's seeds, drawn from the global RNG when a state was written at an
        #: epoch boundary: {"base_seed", "sampler_seed"} (each None when not drawn), or None.
        self.next_seeds: dict[str, int | None] | None = None
        self.loader_generator_state: str | None = None
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

    def to_dict(self) -> dict[str, Any]:
        """The state as plain data (the user's own states as they gave them)."""
        if self.refresh is not None:
            self.refresh()
        states = self.dataset_states
        return {
            "version": LOADER_STATE_VERSION,
            "type": STATE_TYPE,
            **self.config,
            "epoch": self.epoch,
            "in_epoch": self.in_epoch,
            "batches": self.batches,
            "delivered_beyond": sorted(self.beyond),
            "sampler_position": {
                "seed": self.seed,
                "generator_state": self.generator_state,
                "sampler_state": self.sampler_state,
                "exhausted": self.sampler_exhausted,
            },
            "base_seed": self.base_seed,
            "shared_seed": self.shared_seed,
            # always both keys (None: not drawn), so that the layout never changes
            "next_seeds": dict(self.next_seeds or {"base_seed": None, "sampler_seed": None}),
            "loader_generator_state": self.loader_generator_state,
            "dataset_states": None
            if states is None
            else [self._entry(i, e) for i, e in enumerate(states)],
            "streams": [self._entry(i, e) for i, e in enumerate(self.streams)],
            "next_stream": self.next_stream,
            "skips": {
                "pending": self.skip_pending,
                "total": self.skip_total,
                "log": [list(entry) for entry in self.skip_log],
            },
        }

    def record_skip(self, epoch: int, batch: int, count: int) -> None:
        """Log a skip of `count` batches from batch `batch` of epoch `epoch`."""
        self.skip_total += count
        self.skip_log = [*self.skip_log, [epoch, batch, count]][-SKIP_LOG_LENGTH:]

    def _entry(self, index: int, entry: dict[str, Any]) -> dict[str, Any]:
        if entry["state"] is PENDING:
            entry["state"] = self._fresh_state(index)
        return dict(entry)

    def load(self, state: Any) -> None:
        """Check `state` against this loader's configuration and take its position.

        Raises:
            IncompatibleStateError: the state was written by another kind of object or format
                version, or for another dataset kind, length, batch size, sampler, number of
                shards, or (plain iterable-style datasets) number of workers.
        """
        state = _current_format(state)
        state = check_state(state, STATE_TYPE, (*_CONFIG_KEYS, *_POSITION_KEYS), _OWNER)
        config = self.config
        check_config(_OWNER, state, dataset_kind=config["dataset_kind"])
        kind = config["dataset_kind"]
        check_config(_OWNER, state, **{key: config[key] for key in _CHECKED_CONFIG[kind]})
        if kind == "iterable" and state["num_workers"] != config["num_workers"]:
            raise IncompatibleStateError(
                f"{_OWNER}: the state was saved with num_workers={state['num_workers']!r}, but "
                f"this loader has num_workers={config['num_workers']}; the state of a plain "
                "IterableDataset is one state per worker copy and cannot be split or merged: "
                "load it with the same num_workers, or make the dataset a "
                "ShardedIterableDataset, whose states load with any num_workers"
            )
        epoch = state_int(_OWNER, state, "epoch")
        batches = state_int(_OWNER, state, "batches")
        in_epoch = _bool(state, "in_epoch")
        beyond = state["delivered_beyond"]
        if not isinstance(beyond, list) or not all(type(p) is int and p > batches for p in beyond):
            raise IncompatibleStateError(
                f"{_OWNER}: the state's 'delivered_beyond' must be a list of ints > batches "
                f"({batches}), got {beyond!r:.80}"
            )
        position = check_state(
            {"type": "sampler_position", **_dict(state, "sampler_position")},
            "sampler_position",
            _SAMPLER_KEYS,
            _OWNER,
        )
        seed, generator_state = position["seed"], position["generator_state"]
        base_seed = state["base_seed"]
        loader_generator_state = state["loader_generator_state"]
        for name, value, kinds in (
            ("seed", seed, (int,)),
            ("generator_state", generator_state, (str,)),
            ("base_seed", base_seed, (int,)),
            ("shared_seed", state["shared_seed"], (int,)),
            ("loader_generator_state", loader_generator_state, (str,)),
        ):
            if value is not None and type(value) not in kinds:
                raise IncompatibleStateError(
                    f"{_OWNER}: the state's {name!r} must be {kinds[0].__name__} or None, "
                    f"got {value!r:.60}"
                )
            if value is not None and kinds == (str,):
                decode_generator_state(value, _OWNER)  # refused now, not at the next epoch
        next_seeds = state["next_seeds"]
        if (
            not isinstance(next_seeds, dict)
            or set(next_seeds) != {"base_seed", "sampler_seed"}
            or any(v is not None and type(v) is not int for v in next_seeds.values())
        ):
            raise IncompatibleStateError(
                f"{_OWNER}: the state's 'next_seeds' must be a dict of 'base_seed' and "
                f"'sampler_seed' (ints or None), got {next_seeds!r:.80}"
            )
        dataset_states = self._load_workers(state)
        streams = self._load_streams(state)
        skips = _load_skips(state)
        next_stream = state_int(_OWNER, state, "next_stream")
        if next_stream >= max(len(streams), 1):
            raise IncompatibleStateError(
                f"{_OWNER}: the state's next_stream {next_stream} is not one of its "
                f"{len(streams)} streams"
            )
        self.epoch, self.in_epoch, self.batches, self.beyond = epoch, in_epoch, batches, set(beyond)
        self.seed, self.generator_state = seed, generator_state
        self.sampler_state = position["sampler_state"]
        self.sampler_exhausted = _bool(position, "exhausted")
        self.base_seed = base_seed
        self.shared_seed = state["shared_seed"]
        drawn = any(value is not None for value in next_seeds.values())
        self.next_seeds = dict(next_seeds) if drawn else None
        self.loader_generator_state = loader_generator_state
        self.dataset_states, self.streams, self.next_stream = dataset_states, streams, next_stream
        self.skip_pending, self.skip_total, self.skip_log = skips

    def _load_workers(self, state: dict[str, Any]) -> list[dict[str, Any]] | None:
        saved = state["dataset_states"]
        if not self._num_entries:
            return None
        if saved is None:
            warnings.warn(
                "StatefulDataLoader.load_state_dict: the state holds no dataset state (the "
                "dataset had no state_dict when it was saved); the workers start from the "
                "dataset as it is",
                stacklevel=3,
            )
            return self.fresh_workers()
        entries = [
            _entry(item, _WORKER_KEYS, "dataset_states") for item in _list(saved, "dataset_states")
        ]
        if len(entries) != self._num_entries:
            warnings.warn(
                f"StatefulDataLoader.load_state_dict: the state was saved with "
                f"num_workers={state['num_workers']} and this loader has "
                f"num_workers={self.config['num_workers']}: the sample order continues exactly, "
                "but the dataset's per-worker states (e.g. augmentation RNGs) are not restored; "
                "the new workers start from the dataset as it is, seeded afresh",
                stacklevel=3,
            )
            return self.fresh_workers()
        return entries

    def _load_streams(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        entries = [
            _entry(item, _STREAM_KEYS, "streams") for item in _list(state["streams"], "streams")
        ]
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


def _current_format(state: Any) -> Any:
    """`state` without its version, read as the current format: a version-2 state (before
    skips) gets no skips; any other version than 2 or 3 is refused, naming both."""
    if not isinstance(state, dict) or state.get("type") != STATE_TYPE:
        return state  # check_state names what is wrong
    version = state.get("version", LOADER_STATE_VERSION)
    if version == 2 and "skips" not in state:  # 2: the loader's version before skips
        return {**state, "version": 2, "skips": _NO_SKIPS}
    if version != LOADER_STATE_VERSION:
        raise IncompatibleStateError(
            f"{_OWNER}: the state has format version {version!r}, this release of "
            f"checkpointable reads StatefulDataLoader states of versions 2 and "
            f"{LOADER_STATE_VERSION}"
        )
    return {key: value for key, value in state.items() if key != "version"}


_NO_SKIPS: dict[str, Any] = {"pending": 0, "total": 0, "log": []}


def _load_skips(state: dict[str, Any]) -> tuple[int, int, list[list[int]]]:
    skips = check_state(
        {"type": "skips", **_dict(state, "skips")}, "skips", ("pending", "total", "log"), _OWNER
    )
    pending = state_int(_OWNER, skips, "pending")
    total = state_int(_OWNER, skips, "total")
    log = skips["log"]
    if not isinstance(log, list) or not all(
        isinstance(entry, list)
        and len(entry) == 3
        and all(type(value) is int and value >= 0 for value in entry)
        for entry in log
    ):
        raise IncompatibleStateError(
            f"{_OWNER}: the state's skips 'log' must be a list of [epoch, batch, count] "
            f"lists of ints >= 0, got {log!r:.80}"
        )
    return pending, total, [list(entry) for entry in log]


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


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise IncompatibleStateError(
            f"{_OWNER}: the state's {where!r} must be a list, got {value!r:.60}"
        )
    return value


def _dict(state: dict[str, Any], key: str) -> dict[str, Any]:
    value = state[key]
    if not isinstance(value, dict):
        raise IncompatibleStateError(
            f"{_OWNER}: the state's {key!r} must be a dict, got {value!r:.60}"
        )
    return value


def _bool(state: dict[str, Any], key: str) -> bool:
    value = state[key]
    if type(value) is not bool:
        raise IncompatibleStateError(f"{_OWNER}: the state's {key!r} must be a bool, got {value!r}")
    return value
