"""The reader of `StatefulDataLoader` states of formats 2 and 3 (the release before format 4).

Format 3 was one flat dict, every entry under its long name::

    {"version": 3, "type": "StatefulDataLoader", "dataset_kind", "dataset_length",
     "batch_size", "drop_last", "sampler", "num_workers", "num_shards", "epoch", "in_epoch",
     "batches", "delivered_beyond", "sampler_position": {"seed", "generator_state",
     "sampler_state", "exhausted"}, "base_seed", "shared_seed",
     "next_seeds": {"base_seed", "sampler_seed"}, "loader_generator_state", "dataset_states",
     "streams", "next_stream", "skips": {"pending", "total", "log"}}

with torch generator states as bare base64 text (which `checkpointable._rng` still reads).
Format 2 is format 3 without "skips". `upgrade` rewrites either as format 5 (without its
version), for the one reader of `state`; it checks the shape it needs and leaves the values'
checks to that reader.
"""

from __future__ import annotations

from typing import Any

from .._errors import IncompatibleStateError
from .state_layout import CONFIG, POSITION, fingerprint

__all__ = ["OLD_VERSIONS", "upgrade"]

#: The older formats read.
OLD_VERSIONS = (2, 3)
_KEYS = (
    "dataset_kind",
    "dataset_length",
    "batch_size",
    "drop_last",
    "sampler",
    "num_workers",
    "num_shards",
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
)
_NESTED = {
    "sampler_position": ("seed", "generator_state", "sampler_state", "exhausted"),
    "next_seeds": ("base_seed", "sampler_seed"),
    "skips": ("pending", "total", "log"),
}


def upgrade(state: Any, owner: str) -> Any:
    """A format 2 or 3 loader `state` as format 5, without its version; anything else as it is."""
    version = state.get("version") if isinstance(state, dict) else None
    if version not in OLD_VERSIONS or state.get("type") != "StatefulDataLoader":
        return state
    keys = (*_KEYS, "skips") if version == 3 else _KEYS
    missing = [key for key in keys if key not in state]
    unknown = sorted(set(state) - {*keys, "type", "version"})
    if missing or unknown:
        raise IncompatibleStateError(
            f"{owner}: the format-{version} state lacks the key(s) {missing} or has unexpected "
            f"key(s) {unknown}"
        )
    old = dict(state)
    old.setdefault("skips", {"pending": 0, "total": 0, "log": []})
    for key, names in _NESTED.items():
        value = old[key]
        if not isinstance(value, dict) or set(value) != set(names):
            raise IncompatibleStateError(
                f"{owner}: the format-{version} state's {key!r} must be a dict of {list(names)}, "
                f"got {value!r:.80}"
            )
    kind = old["dataset_kind"]
    if kind not in CONFIG:
        raise IncompatibleStateError(
            f"{owner}: the format-{version} state's dataset_kind must be one of "
            f"{sorted(CONFIG)}, got {kind!r:.40}"
        )
    config = [
        kind,
        *(
            fingerprint(old[field.name]) if field.fingerprinted else old[field.name]
            for field in CONFIG[kind]
        ),
    ]
    position, seeds, skips = old["sampler_position"], old["next_seeds"], old["skips"]
    flat = {
        **old,
        "seed": position["seed"],
        "generator_state": position["generator_state"],
        "sampler_state": position["sampler_state"],
        "sampler_exhausted": position["exhausted"],
        "next_base_seed": seeds["base_seed"],
        "next_sampler_seed": seeds["sampler_seed"],
        "skip_pending": skips["pending"],
        "skip_total": skips["total"],
        "skip_log": skips["log"],
    }
    out: dict[str, Any] = {"type": state["type"], "config": config}
    for key, fields in POSITION.items():
        out[key] = [flat[field.name] for field in fields]
    return out
