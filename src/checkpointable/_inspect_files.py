"""Reading checkpoints for ``checkpointable inspect``: JSON, ``torch.save`` files and DCP folders.

Nothing is run from a file: a ``torch.save`` file is read with ``torch.load(weights_only=True)``;
a ``torch.distributed.checkpoint`` (DCP) folder's ``.metadata`` is unpickled with an allow-list of
DCP's own metadata classes, and each non-tensor item is read from its byte range with
``torch.load(weights_only=True)``. Tensors are not read: their shape and dtype are shown.
"""

from __future__ import annotations

import io
import itertools
import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Checkpoint", "CheckpointError", "TensorRecord", "load_checkpoint"]

# What a DCP .metadata pickle may name: DCP's metadata classes and the torch values they hold.
_DCP_MODULES = ("torch.distributed.checkpoint.",)
_ALLOWED = {
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("pathlib", "PosixPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PureWindowsPath"),
    ("collections", "OrderedDict"),
}
_RANK_FILE = re.compile(r"^__(\d+)_")


@dataclass(frozen=True)
class TensorRecord:
    """A tensor of a DCP checkpoint, described by its metadata (its data is not read)."""

    shape: tuple[int, ...]
    dtype: str


class CheckpointError(Exception):
    """The file cannot be read as a checkpoint; the message says why and what to do."""


@dataclass
class Checkpoint:
    """What a checkpoint holds, as plain data, and where each part came from."""

    data: Any
    kind: str  # "json", "torch" or "dcp"
    #: DCP only: the rank whose file holds each item, by dotted key ("stream.loader.epoch").
    writers: dict[str, int] = field(default_factory=dict)
    #: DCP only: the ranks that wrote files.
    ranks: list[int] = field(default_factory=list)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a JSON file, a ``torch.save`` file or a DCP folder without running code from it."""
    path = Path(path)
    if path.is_dir():
        if not (path / ".metadata").is_file():
            raise CheckpointError(
                f"{path} is a folder without a .metadata file: not a torch.distributed.checkpoint "
                f"(DCP) checkpoint. Give a checkpoint file or a DCP checkpoint folder."
            )
        return _load_dcp(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    if data[:1] in (b"{", b"["):
        try:
            return Checkpoint(json.loads(data), "json")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{path} looks like JSON but does not parse: {error}") from None
    return Checkpoint(_torch_load(data, str(path)), "torch")


def _torch_load(data: bytes, where: str) -> Any:
    import torch

    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{where} holds objects that need code to load, and inspect never runs code from a "
            f"file (torch.load(weights_only=True)). Save plain data (a state_dict) instead of "
            f"objects. torch said: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # zip/format errors: not a torch file
        raise CheckpointError(f"{where} is neither JSON nor a torch.save file: {error}") from None


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP metadata only: its own classes, torch sizes, dtypes and layouts, paths."""

    def find_class(self, module: str, name: str) -> Any:
        import torch

        allowed = (module, name) in _ALLOWED or module.startswith(_DCP_MODULES)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            allowed = True
        if not allowed:
            raise CheckpointError(
                f"the DCP .metadata names {module}.{name}, which is not part of DCP's metadata; "
                f"inspect does not unpickle it (it never runs code from a file)"
            )
        return super().find_class(module, name)


def _load_dcp(folder: Path) -> Checkpoint:
    try:
        with open(folder / ".metadata", "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        items = metadata.state_dict_metadata
        storage = metadata.storage_data
        paths = metadata.planner_data or {}
    except (OSError, pickle.UnpicklingError, AttributeError, EOFError) as error:
        raise CheckpointError(f"cannot read {folder / '.metadata'}: {error}") from None
    data: dict[str, Any] = {}
    writers: dict[str, int] = {}
    files: dict[str, bytes] = {}
    for index, info in storage.items():
        fqn = index.fqn
        found = _RANK_FILE.match(info.relative_path)
        if found:
            writers.setdefault(fqn, int(found.group(1)))
        meta = items.get(fqn)
        if meta is None or hasattr(meta, "chunks"):  # a tensor (or a shard of one)
            continue
        if getattr(info, "transform_descriptors", None):
            value: Any = f"<stored with transforms {list(info.transform_descriptors)}: not read>"
        else:
            if info.relative_path not in files:
                files[info.relative_path] = (folder / info.relative_path).read_bytes()
            chunk = files[info.relative_path][info.offset : info.offset + info.length]
            value = _torch_load(chunk, f"{folder / info.relative_path} ({fqn})")
        _put(data, paths.get(fqn, (fqn,)), value)
    for fqn, meta in items.items():
        if hasattr(meta, "chunks"):
            dtype = str(meta.properties.dtype)
            _put(data, paths.get(fqn, (fqn,)), TensorRecord(tuple(meta.size), dtype))
    ranks = sorted(set(writers.values()))
    return Checkpoint(data, "dcp", writers, ranks)


def _put(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    """Place `value` at `path` (str keys: dicts, int keys: lists) in the nested `data`."""
    node: Any = data
    for key, following in itertools.pairwise(path):
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(node, list):
            while len(node) <= key:
                node.append(None)
            if node[key] is None:
                node[key] = empty
            node = node[key]
        else:
            node = node.setdefault(str(key), empty)
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
        node[last] = value
    else:
        node[str(last)] = value
