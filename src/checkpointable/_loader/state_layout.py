"""The layout of a `StatefulDataLoader` state (format 5), as tables: one mechanism writes and
reads every part of it.

A state is ``{"version": 5, "type": "StatefulDataLoader", <group>: [values], ...}``: each
group is a list whose entries are the `Field` s of its table, in order (lists, not dicts, so
that no key is repeated: the default map-style state pickles to ~190 bytes). The first group,
``"config"``, is the dataset kind followed by `CONFIG` [kind]: what the loader computes from its
arguments and checks on load, naming what differs; a long value (the sampler's description) is
stored as a fingerprint (`fingerprint`). The other groups are the position (`POSITION`).
``docs/state_format.md`` documents each entry; `long_form` names them, for ``checkpointable
inspect`` and for messages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CONFIG", "POSITION", "Field", "fingerprint", "long_form"]


@dataclass(frozen=True)
class Field:
    """One entry of a group: its long `name` (the `LoaderState` attribute or config key), the
    types it may hold, and whether it is stored as a fingerprint."""

    name: str
    types: tuple[type, ...]
    fingerprinted: bool = False
    check: Callable[[Any], bool] | None = None  # a further rule on the value (types hold)
    #: the `LoaderState` attribute that gives the value to write (default: `name`)
    attr: str | None = None

    @property
    def source(self) -> str:
        return self.attr or self.name


_INT = (int,)
_OPT_INT = (int, type(None))
_BOOL = (bool,)
_RNG = (dict, str, type(None))  # `checkpointable._rng`'s encoding (str: format 3's text)


def _non_negative(value: Any) -> bool:
    """>= 0"""
    return value is None or value >= 0


def _int_list(value: Any) -> bool:
    """of ints >= 0"""
    return all(type(item) is int and item >= 0 for item in value)


def _skip_log(value: Any) -> bool:
    """of [epoch, batch, count] lists of ints >= 0"""
    return all(isinstance(entry, list) and len(entry) == 3 and _int_list(entry) for entry in value)


#: What a state must match, per dataset kind (after the kind itself, ``config[0]``).
CONFIG: dict[str, tuple[Field, ...]] = {
    "map": (
        Field("dataset_length", _OPT_INT),
        Field("batch_size", _OPT_INT),
        Field("drop_last", _BOOL),
        Field("sampler", (str, type(None)), fingerprinted=True),
    ),
    "iterable": (
        Field("batch_size", _OPT_INT),
        Field("drop_last", _BOOL),
        Field("num_workers", _INT),
    ),
    "sharded": (
        Field("num_shards", _INT),
        Field("batch_size", _OPT_INT),
        Field("drop_last", _BOOL),
    ),
}

#: The position's groups: key in the state -> its entries, in order.
POSITION: dict[str, tuple[Field, ...]] = {
    "position": (
        Field("epoch", _INT, check=_non_negative),
        Field("in_epoch", _BOOL),
        Field("batches", _INT, check=_non_negative),
        Field("delivered_beyond", (list,), check=_int_list),
    ),
    "order": (
        Field("seed", _OPT_INT),
        Field("generator_state", _RNG),
        Field("sampler_state", (object,)),
        Field("sampler_exhausted", _BOOL),
    ),
    "seeds": (
        Field("base_seed", _OPT_INT),
        Field("shared_seed", _OPT_INT),
        Field("next_base_seed", _OPT_INT),
        Field("next_sampler_seed", _OPT_INT),
        Field("loader_generator_state", _RNG),
    ),
    "sources": (
        Field("dataset_states", (list, type(None)), attr="dataset_entries"),
        Field("streams", (list,), attr="stream_entries"),
        Field("next_stream", _INT, check=_non_negative),
    ),
    "skips": (
        Field("skip_pending", _INT, check=_non_negative),
        Field("skip_total", _INT, check=_non_negative),
        Field("skip_log", (list,), check=_skip_log, attr="skip_log_copy"),
    ),
}


def fingerprint(value: Any) -> str:
    """A short stand-in for a long configuration value: 8 bytes of blake2b of its repr, as hex.

    >>> fingerprint("RandomSampler(replacement=False, num_samples=1000)")
    'e72aed998448582f'
    """
    return hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()


def long_form(state: dict[str, Any]) -> dict[str, Any]:
    """A format-4 or 5 state with each entry under its long name (fingerprints as they are);
    entries a damaged state lacks are left out."""
    out: dict[str, Any] = {"version": state.get("version"), "type": state.get("type")}
    config = state.get("config")
    if isinstance(config, list) and config and config[0] in CONFIG:
        out["dataset_kind"] = config[0]
        for field, value in zip(CONFIG[config[0]], config[1:], strict=False):
            out[field.name] = value
    for key, fields in POSITION.items():
        values = state.get(key)
        if isinstance(values, list):
            for field, value in zip(fields, values, strict=False):
                out[field.name] = value
    return out
