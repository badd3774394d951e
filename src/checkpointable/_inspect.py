"""``checkpointable inspect``: print the data-loading state a checkpoint holds, readably.

A checkpoint is read as JSON or with ``torch.load(weights_only=True)``, which never runs code
from the file. The states of this package are found anywhere in it (they carry a ``"type"``
key); each is printed as a tree with every field, long lists summarised, and its size.
"""

from __future__ import annotations

import json
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

__all__ = ["find_states", "format_state", "load_checkpoint", "main", "summary"]

# What our own states say in "type": the package's classes.
_KNOWN_SUFFIXES = ("Iterator", "Sampler", "DataLoader", "Stream", "Dataset")


class CheckpointError(Exception):
    """The file cannot be read as a checkpoint; the message says why and what to do."""


def load_checkpoint(path: str | Path) -> Any:
    """Read a JSON or ``torch.save`` file without unpickling any code."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    if data[:1] in (b"{", b"["):
        try:
            return json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} looks like JSON but does not parse: {error}") from None
    import io

    import torch

    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{path} holds objects that need code to load, and inspect never runs code from a "
            f"file (torch.load(weights_only=True)). Save plain data (a state_dict) instead of "
            f"objects. torch said: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # zip/format errors: not a torch file
        raise CheckpointError(f"{path} is neither JSON nor a torch.save file: {error}") from None


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
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item and not _is_scalar_list(item):
                lines.append(f"{prefix}{key}:{_header(item)}")
                _format(item, indent, prefix + indent, lines)
            else:
                lines.append(f"{prefix}{key}: {_scalar(item)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, dict | list) and item and not _is_scalar_list(item):
                lines.append(f"{prefix}[{index}]:{_header(item)}")
                _format(item, indent, prefix + indent, lines)
            else:
                lines.append(f"{prefix}[{index}]: {_scalar(item)}")
    else:
        lines.append(f"{prefix}{_scalar(value)}")


def summary(state: dict[str, Any]) -> str:
    """The position a state records, in words: epoch, iteration, place in the epoch, entries."""
    parts: list[str] = []
    if isinstance(state.get("epoch"), int):
        parts.append(f"epoch {state['epoch']}")
    if isinstance(state.get("iteration"), int):
        parts.append(f"iteration {state['iteration']}")
    if state.get("in_epoch") is False:
        parts.append("between epochs")
    elif isinstance(state.get("epoch_items"), int):
        size = state.get("epoch_size")
        parts.append(f"item {state['epoch_items']} of {size or 'an endless'} in the epoch")
    elif isinstance(state.get("batches"), int):
        parts.append(f"{state['batches']} batches of the epoch delivered")
    if isinstance(state.get("position"), int):
        parts.append(f"{state['position']} samples of the epoch drawn")
    if isinstance(state.get("progress"), int):
        parts.append(f"global progress {state['progress']} (all ranks)")
    for key, what in (("dataset_states", "per-worker dataset states"), ("streams", "streams")):
        entries = state.get(key)
        if isinstance(entries, list) and entries:
            parts.append(f"{len(entries)} {what}")
    loader = state.get("loader")
    if isinstance(loader, dict) and summary(loader):
        parts.append(f"loader at {summary(loader)}")
    return ", ".join(parts)


def _header(value: Any) -> str:
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return f"  ({value['type']})"
    return ""


def _is_scalar_list(value: Any) -> bool:
    return _is_random_state(value) or (
        isinstance(value, list) and all(not isinstance(x, dict | list) for x in value)
    )


def _is_random_state(value: Any) -> bool:
    """A ``random.Random`` state as the package stores it: [version, [625 ints], gauss]."""
    return (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[1], list)
        and len(value[1]) == 625
        and all(type(x) is int for x in value[1])
    )


def _scalar(value: Any) -> str:
    if _is_random_state(value):
        words = value[1]
        return f"<random.Random state v{value[0]}: 625 words {words[1]}, {words[2]}, ...>"
    if isinstance(value, list):
        if len(value) > 8:
            kinds = sorted({type(x).__name__ for x in value})
            return f"[{len(value)} x {'/'.join(kinds)}: {_short(value[:3])[:-1]}, ...]"
        return _short(value)
    if isinstance(value, dict):
        return "{}"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"<tensor {tuple(value.shape)} {value.dtype}> (not plain data)"
    return _short(value)


def _short(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(state: Any) -> str:
    try:
        return f"{len(json.dumps(state))} bytes as JSON"
    except (TypeError, ValueError):
        return "not JSON-serialisable (holds non-plain data)"


def main(path: str, key: str | None = None, out: TextIO | None = None) -> int:
    """Print the states in the checkpoint at `path`; return the exit status."""
    out = out or sys.stdout
    try:
        data = load_checkpoint(path)
        if key is not None:
            data = select(data, key)
    except CheckpointError as error:
        print(f"checkpointable inspect: {error}", file=sys.stderr)
        return 2
    states = list(find_states(data, key or ""))
    if not states:
        if not isinstance(data, dict):
            print(f"checkpointable inspect: no data-loading state in {path}", file=sys.stderr)
            return 1
        states = [(key or "<root>", data)]  # a plain dict given with --key: show it anyway
    for where, state in states:
        kind = state.get("type", "state")
        version = state.get("version", "-")
        print(f"{where}: {kind} (version {version}, {_size(state)})", file=out)
        position = summary(state)
        if position:
            print(f"  where: {position}", file=out)
        for line in format_state(state):
            print("  " + line, file=out)
    return 0
