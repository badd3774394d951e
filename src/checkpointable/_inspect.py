"""``checkpointable inspect``: print the data-loading state a checkpoint holds, readably.

A checkpoint is a JSON file, a ``torch.save`` file (a Lightning ``.ckpt`` too) or a
``torch.distributed.checkpoint`` (DCP) folder, read without running code from it
(`_inspect_files`). The states of this package are found anywhere in it (they carry a
``"type"`` key naming one of our classes); each is printed with a "where" paragraph in words,
then every field, long lists summarised, and its size; ``--json`` prints the same as JSON. A DCP
folder also shows which rank's file holds each state. A file without any such state says so.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ._checks import short_repr
from ._errors import IncompatibleStateError
from ._inspect_files import Checkpoint, CheckpointError, load_checkpoint
from ._loader.state_layout import fingerprint, long_form
from ._loader.state_v3 import upgrade

__all__ = ["describe", "find_states", "format_state", "load_checkpoint", "main"]

# What our own states say in "type": the package's classes.
_KNOWN_SUFFIXES = ("Iterator", "Sampler", "DataLoader", "Stream", "Dataset")


def find_states(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(key path, state)`` for each outermost state of this package inside `value`."""
    if isinstance(value, dict):
        kind = value.get("type")
        if isinstance(kind, str) and kind.endswith(_KNOWN_SUFFIXES):
            yield path or "<root>", value
            return
        for key, item in value.items():
            yield from find_states(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_states(item, f"{path}[{index}]")


def select(value: Any, key: str) -> Any:
    """Follow a dotted key path such as ``stream.loader`` (list items as numbers)."""
    for part in key.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            available = list(value) if isinstance(value, dict) else type(value).__name__
            raise CheckpointError(f"no key {part!r} in {key!r}; available: {available}")
    return value


def format_state(state: Any, indent: str = "  ") -> list[str]:
    """Every field of `state` as indented lines, long lists of scalars summarised."""
    lines: list[str] = []
    _format(state, indent, "", lines)
    return lines


def _format(value: Any, indent: str, prefix: str, lines: list[str]) -> None:
    if not isinstance(value, dict | list):
        lines.append(f"{prefix}{_scalar(value)}")
        return
    for index, item in value.items() if isinstance(value, dict) else enumerate(value):
        key = index if isinstance(value, dict) else f"[{index}]"
        if isinstance(item, dict | list) and item and not _is_scalar_list(item):
            lines.append(f"{prefix}{key}{_header(item)}:")
            _format(item, indent, prefix + indent, lines)
        else:
            lines.append(f"{prefix}{key}: {_scalar(item)}")


def describe(state: dict[str, Any]) -> list[str]:
    """The position a state records, in sentences that explain their numbers."""
    kind = state.get("type")
    if kind == "StatefulDataLoader":
        return _describe_loader(state)
    if kind == "Stream":
        return _describe_stream(state)
    if isinstance(state.get("position"), int) and isinstance(state.get("epoch"), int):
        return _describe_sampler(state)
    return []


def _describe_stream(state: dict[str, Any]) -> list[str]:
    epoch, iteration = state.get("epoch"), state.get("iteration")
    lines = [
        f"the Stream's loop is at epoch {epoch} (its epochs() counts from 1; 0: none begun) and "
        f"iteration {iteration} (items served since the start)"
    ]
    items, size = state.get("epoch_items"), state.get("epoch_size")
    if state.get("in_epoch") is True and isinstance(items, int):
        if size is None:
            lines.append(f"inside epoch {epoch}: {items} items served; it has no size limit")
        elif items >= size:
            lines.append(
                f"inside epoch {epoch}: all {size} of its items served; the loop ends this epoch "
                f"at its next step without serving another item"
            )
        else:
            lines.append(f"inside epoch {epoch}: {items} of its {size} items served")
    elif state.get("in_epoch") is False and isinstance(epoch, int):
        lines.append(f"between epochs: the next step of epochs() begins epoch {epoch + 1}")
    if state.get("data_over"):
        lines.append("the data is over: a resumed epochs() loop ends, as the uninterrupted one")
    loader = state.get("loader")
    if isinstance(loader, dict):
        lines.append(f"its loader ({loader.get('type')}):")
        lines += ["  " + line for line in describe(loader)]
        named = _loader_entries(loader) if loader.get("type") == "StatefulDataLoader" else loader
        passes = named.get("epoch")
        if isinstance(epoch, int) and isinstance(passes, int) and epoch - 1 != passes:
            lines.append(
                f"the Stream's epoch {epoch} is not the loader's pass {passes}: the Stream counts "
                f"the epochs of its loop from 1 (epoch_size items each), the loader its passes "
                f"over the data from 0"
            )
    return lines


def _describe_loader(saved: dict[str, Any]) -> list[str]:
    state = _loader_entries(saved)
    passes, batches = state.get("epoch"), state.get("batches")
    total = _batches_per_pass(state)
    if state.get("in_epoch") and total is not None and batches == total and isinstance(passes, int):
        lines = [
            f"inside pass {passes} over the data (passes counted from 0): all {total} batches of "
            f"it delivered; the pass ends at the next step, then pass {passes + 1} begins"
        ]
    elif state.get("in_epoch"):
        of = f" of its {total}" if total is not None else ""
        lines = [
            f"inside pass {passes} over the data (passes counted from 0): {batches}{of} batches "
            f"delivered; the next iter(loader) continues with the one after them"
        ]
    else:
        lines = [f"between passes: {passes} passes over the data done; the next iter(loader) "
                 f"starts pass {passes} (counted from 0)"]  # fmt: skip
    beyond = state.get("delivered_beyond")
    if beyond:
        lines.append(f"and {len(beyond)} later batches delivered out of order (in_order=False)")
    lines += _describe_skips(state)
    kind = state.get("dataset_kind")
    count = state.get("num_workers")
    workers = f"{count} worker" if count == 1 else f"{count} workers"
    if kind == "iterable":
        lines.append(f"saved with {workers}; it loads only with num_workers={count}")
    elif kind is not None:
        lines.append("it loads with any num_workers")
    entries = state.get("dataset_states")
    if isinstance(entries, list) and entries:
        lines.append(f"{len(entries)} per-worker dataset states (the dataset's own state_dict())")
    streams = state.get("streams")
    if isinstance(streams, list) and streams:
        each = "shard" if kind == "sharded" else "worker"
        lines.append(f"{len(streams)} streams, one per {each}, each with its own position")
    sampler = state.get("sampler_state")
    if isinstance(sampler, dict):
        lines.append(f"its sampler ({sampler.get('type')}):")
        lines += ["  " + line for line in describe(sampler)]
    return lines


def _loader_entries(state: dict[str, Any]) -> dict[str, Any]:
    """A loader state's entries by name (`state_layout.long_form`; an older format is read as
    the loader reads it, and a damaged one as far as it goes)."""
    try:
        state = {"version": state.get("version"), **upgrade(state, "inspect")}
    except IncompatibleStateError:
        return state
    return long_form(state)


def _describe_skips(skips: dict[str, Any]) -> list[str]:
    """The batches left out by ``StatefulDataLoader.skip`` (counted among the delivered ones)."""
    if not skips.get("skip_total"):
        return []
    saved = skips.get("skip_log")
    log: list[Any] = saved if isinstance(saved, list) else []
    where = "; ".join(
        f"pass {entry[0]} from batch {entry[1]}: {entry[2]}"
        for entry in log
        if isinstance(entry, list) and len(entry) == 3
    )
    lines = [
        f"skipped {skips['skip_total']} batches with skip(), counted as delivered, never read"
        + (f" (latest {len(log)}: {where})" if where else "")
    ]
    pending = skips.get("skip_pending")
    if pending:
        lines.append(f"{pending} more batches to skip at the start of the next pass(es)")
    return lines


def _batches_per_pass(state: dict[str, Any]) -> int | None:
    """A map-style pass's number of batches, when the state says (not with a user's sampler)."""
    length, size = state.get("dataset_length"), state.get("batch_size")
    own_sampler = state.get("sampler_state") is not None
    if not isinstance(length, int) or not isinstance(size, int) or size < 1 or own_sampler:
        return None
    sampler = _sampler_text(str(state.get("sampler", "")), length)
    if sampler.startswith(("RandomSampler", "SequentialSampler")):
        samples = re.search(r"num_samples=(\d+)", sampler)
        length = int(samples.group(1)) if samples else length
        return length // size if state.get("drop_last") else -(-length // size)
    return None


def _sampler_text(sampler: str, length: int) -> str:
    """The description of torch's usual samplers over the whole dataset that a format-4 or 5
    state's sampler fingerprint stands for (the fingerprint itself for any other sampler)."""
    for text in (
        "SequentialSampler",
        f"RandomSampler(replacement=False, num_samples={length})",
        f"RandomSampler(replacement=True, num_samples={length})",
    ):
        if fingerprint(text) == sampler:
            return text
    return sampler


def _describe_sampler(state: dict[str, Any]) -> list[str]:
    epoch, position, length = state["epoch"], state["position"], state.get("dataset_length")
    lines = [f"epoch {epoch} (set_epoch): {position} samples of it yielded by this sampler"]
    progress = state.get("progress")
    if isinstance(progress, int):
        of = f" of the {length}" if isinstance(length, int) else ""
        lines.append(
            f"{progress}{of} samples of the epoch consumed over all ranks (a resume "
            f"on any number of ranks continues from there)"
        )
    return lines


def _header(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return f" ({value['type']})"
    return ""


def _is_scalar_list(value: Any) -> bool:
    return _is_random_state(value) or (
        isinstance(value, list) and all(not isinstance(x, dict | list) for x in value)
    )


def _is_random_state(value: Any) -> bool:
    """A random generator's state as `checkpointable._rng` stores it (or format 2's
    ``[version, [625 ints], gauss]`` list): shown on one line."""
    if isinstance(value, dict):
        return value.get("kind") in ("python", "torch") and set(value) in _RNG_LAYOUTS
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[1], list)
        and len(value[1]) == 625
        and all(type(x) is int for x in value[1])
    )


_RNG_LAYOUTS = (
    {"kind", "data", "gauss"},
    {"kind", "data"},
    {"kind", "seed", "draws"},
)


def _random_state(value: Any) -> str:
    if isinstance(value, list):
        words = value[1]
        return f"<random.Random state v{value[0]}: 625 words {words[1]}, {words[2]}, ...>"
    if value["kind"] == "python":
        return f"<random.Random state: {len(str(value['data']))} chars of base64>"
    if "seed" in value:
        return f"<torch generator: seed {value['seed']}, {value['draws']} draws since>"
    return f"<torch generator state: {len(str(value['data']))} chars of base64>"


def _scalar(value: Any) -> str:
    if _is_random_state(value):
        return _random_state(value)
    if isinstance(value, list):
        if len(value) > 8:
            kinds = sorted({type(x).__name__ for x in value})
            return f"[{len(value)} x {'/'.join(kinds)}: {short_repr(value[:3], 100)[:-1]}, ...]"
        return short_repr(value, 100)
    if isinstance(value, dict):
        return "{}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<tensor {tuple(value.shape)} {value.dtype}> (not plain data)"
    return short_repr(value, 100)


def main(
    path: str, key: str | None = None, out: TextIO | None = None, as_json: bool = False
) -> int:
    """Print the states in the checkpoint at `path`; return the exit status.

    0: states shown; 1: the checkpoint holds no data-loading state; 2: it cannot be read.
    """
    out = out or sys.stdout
    try:
        checkpoint = load_checkpoint(path)
        data = checkpoint.data if key is None else select(checkpoint.data, key)
    except CheckpointError as error:
        print(f"checkpointable inspect: {error}", file=sys.stderr)
        return 2
    states = list(find_states(data, key or ""))
    if not states and key is not None and isinstance(data, dict):
        states = [(key, data)]  # a plain dict asked for with --key: show it anyway
    report = _report(path, checkpoint, states)
    if as_json:
        print(json.dumps(report, indent=2, default=_scalar), file=out)
    elif not states:
        print(
            f"{path}: no data-loading state. It holds {_contents(data)}, but no state of "
            f'checkpointable (a dict whose "type" names one of its classes). To resume the data '
            f"exactly, save stream.state_dict() or loader.state_dict() in the checkpoint too.",
            file=out,
        )
    else:
        _print(report, states, out)
    return 0 if states else 1


def _report(path: str, checkpoint: Checkpoint, states: list[tuple[str, Any]]) -> dict[str, Any]:
    """Everything inspect says, as JSON-ready data."""
    entries = []
    for where, state in states:
        entries.append(
            {
                "key": where,
                "type": state.get("type"),
                "version": state.get("version"),
                "json_bytes": _json_bytes(state),
                "where": describe(state),
                "written_by_rank": _writer(checkpoint, where),
                "state": state,
            }
        )
    report: dict[str, Any] = {"path": str(path), "format": checkpoint.kind, "states": entries}
    if checkpoint.kind == "dcp":
        report["ranks"] = {
            str(rank): [e["key"] for e in entries if e["written_by_rank"] == rank]
            for rank in checkpoint.ranks
        }
    return report


def _print(report: dict[str, Any], states: list[tuple[str, Any]], out: TextIO) -> None:
    if report["format"] == "dcp":
        ranks = ", ".join(str(rank) for rank in report["ranks"])
        print(f"{report['path']}: a torch.distributed.checkpoint folder written by ranks "
              f"{ranks}", file=out)  # fmt: skip
    for entry, (_, state) in zip(report["states"], states, strict=True):
        size = f"{entry['json_bytes']} bytes as JSON" if entry["json_bytes"] is not None else (
            "not JSON-serialisable (holds non-plain data)")  # fmt: skip
        print(f"{entry['key']}: {entry['type'] or 'state'} (version "
              f"{entry['version'] if entry['version'] is not None else '-'}, {size})", file=out)  # fmt: skip
        if entry["written_by_rank"] is not None:
            print(f"  stored once, in rank {entry['written_by_rank']}'s file: every rank that "
                  f"loads {entry['key']!r} gets this copy", file=out)  # fmt: skip
        if entry["where"]:
            print("  where:", file=out)
            for line in entry["where"]:
                depth = len(line) - len(line.lstrip(" "))
                print(f"    {' ' * depth}- {line.lstrip(' ')}", file=out)
        for line in format_state(state):
            print("  " + line, file=out)
    if report["format"] == "dcp":
        print("per rank:", file=out)
        for rank, keys in report["ranks"].items():
            held = ", ".join(keys) if keys else "no data-loading state"
            print(f"  rank {rank}: {held}", file=out)
        print("  (DCP stores one copy of a key that every rank saves, so a state that differs "
              "between ranks needs a key per rank, e.g. f\"loader_rank{rank}\")", file=out)  # fmt: skip


def _writer(checkpoint: Checkpoint, where: str) -> int | None:
    """The rank whose DCP file holds the state at `where`, if one rank holds all of it."""
    if checkpoint.kind != "dcp":
        return None
    prefix = where.replace("[", ".").replace("]", "")
    ranks = {
        rank
        for fqn, rank in checkpoint.writers.items()
        if fqn == prefix or fqn.startswith(prefix + ".")
    }
    return ranks.pop() if len(ranks) == 1 else None


def _contents(data: Any) -> str:
    """A few words on what a checkpoint without a data state holds."""
    if isinstance(data, dict):
        keys = list(data)
        tensors = sum(1 for v in data.values() if hasattr(v, "shape") and hasattr(v, "dtype"))
        shown = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
        what = f"{len(keys)} keys ({shown})"
        return what + (f", {tensors} of them tensors" if tensors else "")
    return f"a {type(data).__name__}"


def _json_bytes(state: Any) -> int | None:
    try:
        return len(json.dumps(state))
    except (TypeError, ValueError):
        return None
