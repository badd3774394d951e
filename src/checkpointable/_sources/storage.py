"""Where shard files live: local paths, or URLs read through ``fsspec`` with ranged reads.

A local path is read with ``open``; anything with a scheme (``s3://``, ``gs://``, ``memory://``)
goes through ``fsspec`` (the ``checkpointable[s3]`` extra installs it with ``s3fs``). A block
is read with one ranged request (``cat_file(path, start, end)``), so object storage serves it
in one round trip, and a whole file is never downloaded to read one block.
"""

from __future__ import annotations

import glob as globlib
import importlib
import os
from dataclasses import dataclass, field
from typing import IO, Any

from .._errors import ArgumentTypeError

__all__ = ["FileRef", "expand_files", "open_binary", "optional_module", "read_range"]

OWNER = "ShardedDataset"


@dataclass(frozen=True)
class FileRef:
    """One shard file: its path or URL and its size in bytes."""

    path: str
    size: int
    options: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def remote(self) -> bool:
        return is_url(self.path)


def is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def optional_module(name: str, needs: str) -> Any:
    """``import name``, or an `ImportError` saying what `needs` it and how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(f"{OWNER}: {needs}") from error


def _filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    needs = f"reading {url!r} needs fsspec (and s3fs for s3://): pip install 'checkpointable[s3]'"
    fs, path = optional_module("fsspec.core", needs).url_to_fs(url, **options)
    return fs, path


def expand_files(files: Any, options: dict[str, Any] | None = None) -> list[FileRef]:
    """The shard files named by `files` (a path, a glob, or a list of them), with their sizes.

    `options` are ``fsspec`` storage options for URLs (credentials, ``endpoint_url``...).

    Raises:
        TypeError: `files` is not a str, a path or a list of them.
        ValueError: the list is empty.
        FileNotFoundError: a file does not exist, or a glob matches nothing (named).
    """
    if isinstance(files, str | os.PathLike):
        patterns = [os.fspath(files)]
    elif isinstance(files, list | tuple) and all(isinstance(f, str | os.PathLike) for f in files):
        patterns = [os.fspath(f) for f in files]
    else:
        raise ArgumentTypeError(
            f"{OWNER}: files must be a path, a URL, a glob or a list of them, got "
            f"{files!r} ({type(files).__name__})"
        )
    if not patterns:
        raise ValueError(f"{OWNER}: files must name at least one file, got an empty list")
    found: list[FileRef] = []
    for pattern in patterns:
        found.extend(_expand_one(pattern, options or {}))
    return found


def _expand_one(pattern: str, options: dict[str, Any]) -> list[FileRef]:
    magic = globlib.has_magic(pattern)
    if is_url(pattern):
        fs, path = _filesystem(pattern, options)
        protocol = pattern.split("://", 1)[0]
        names = sorted(fs.glob(path)) if magic else [path]
        refs = []
        for name in names:
            try:
                info = fs.info(name)
            except FileNotFoundError:
                raise FileNotFoundError(f"{OWNER}: no such file: {pattern!r}") from None
            if info.get("type") == "directory":
                continue
            refs.append(FileRef(f"{protocol}://{name}", int(info["size"]), options))
    else:
        local = pattern.removeprefix("file://")
        names = sorted(globlib.glob(local, recursive=True)) if magic else [local]
        refs = []
        for name in names:
            if not os.path.exists(name):
                raise FileNotFoundError(f"{OWNER}: no such file: {name!r}")
            if os.path.isfile(name):
                refs.append(FileRef(name, os.path.getsize(name)))
    if not refs:
        raise FileNotFoundError(f"{OWNER}: the glob {pattern!r} matches no file")
    return refs


def open_binary(ref: FileRef) -> IO[bytes]:
    """A seekable binary file object for `ref` (ranged reads on object storage)."""
    if not ref.remote:
        return open(ref.path, "rb")
    fs, path = _filesystem(ref.path, ref.options)
    handle: IO[bytes] = fs.open(path, "rb")
    return handle


def read_range(ref: FileRef, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the file: one ranged request on object storage."""
    if not ref.remote:
        with open(ref.path, "rb") as handle:
            handle.seek(start)
            return handle.read(end - start)
    fs, path = _filesystem(ref.path, ref.options)
    data: bytes = fs.cat_file(path, start=start, end=end)
    return data
