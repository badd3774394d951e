"""The shard formats: how a file is cut into blocks, and how a block is read.

A *block* is the unit of reading: a Parquet row group; ``block_rows`` lines of a plain JSONL
file (found by one scan at construction, which records each block's byte offset); a whole
compressed JSONL file (``.gz`` and ``.zst`` streams cannot be entered in the middle); or
``block_rows`` samples of a WebDataset ``.tar`` shard (a byte range of whole members).
Restoring a position reads the one block holding it, never the rows before it.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .storage import FileRef, open_binary, read_range

__all__ = ["FORMATS", "FileIndex", "detect_format", "index_file", "read_block"]

OWNER = "ShardedDataset"
FORMATS = ("parquet", "jsonl", "tar")


class CorruptShardError(ValueError):
    """A shard file cannot be read; the message names the file and the line, row or member."""


@dataclass
class FileIndex:
    """A file's blocks: rows per block, and where each starts (bytes, line or row group)."""

    rows: list[int] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # byte offset, or row-group number
    lines: list[int] = field(default_factory=list)  # JSONL: 1-based line of the first row
    end: int = 0  # tar: byte offset where the last block ends
    skipped: int = 0  # rows or tails left out (errors="skip")


def detect_format(path: str, format: str | None) -> str:
    """The format named by `format`, or by the file's extension."""
    if format is not None:
        return format
    name = path.lower()
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".tar"):
        return "tar"
    raise ValueError(
        f"{OWNER}: cannot tell the format of {path!r} from its extension (.parquet, .jsonl, "
        f".jsonl.gz, .jsonl.zst, .tar); pass format= one of {list(FORMATS)}"
    )


def compression(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".gz"):
        return "gz"
    if name.endswith(".zst"):
        return "zst"
    return None


def index_file(ref: FileRef, kind: str, block_rows: int, skip: bool) -> FileIndex:
    """Cut `ref` into blocks (reads a Parquet footer, or scans a JSONL or tar file once)."""
    if kind == "parquet":
        return _index_parquet(ref, skip)
    if kind == "tar":
        return _index_tar(ref, block_rows, skip)
    return _index_jsonl(ref, block_rows, skip)


def read_block(
    ref: FileRef, kind: str, index: FileIndex, block: int, columns: list[str] | None, cache: dict
) -> list[Any]:
    """The rows of block `block` of `ref` (JSONL rows stay raw bytes until `parse_row`)."""
    if kind == "parquet":
        return _read_parquet(ref, block, columns, cache)
    if kind == "tar":
        end = index.starts[block + 1] if block + 1 < len(index.starts) else index.end
        return _read_tar(ref, index.starts[block], end, index.rows[block])
    return _read_jsonl(ref, index, block)


# ---------------------------------------------------------------------------------- Parquet
def _parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            f"{OWNER}: Parquet files need pyarrow: pip install 'checkpointable[parquet]'"
        ) from error
    return pq


def _index_parquet(ref: FileRef, skip: bool) -> FileIndex:
    pq = _parquet()
    try:
        with open_binary(ref) as handle:
            meta = pq.ParquetFile(handle).metadata
            rows = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    except Exception as error:
        if not skip:
            raise CorruptShardError(
                f"{OWNER}: {ref.path} is not a readable Parquet file: {error}"
            ) from error
        return FileIndex(skipped=1)
    kept = [i for i, n in enumerate(rows) if n > 0]
    return FileIndex(rows=[rows[i] for i in kept], starts=kept)


def _read_parquet(ref: FileRef, block: int, columns: list[str] | None, cache: dict) -> list[Any]:
    pq = _parquet()
    reader = cache.get(ref.path)
    if reader is None:
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        reader = cache[ref.path] = pq.ParquetFile(open_binary(ref))
    try:
        table = reader.read_row_group(block, columns=columns)
    except KeyError as error:
        raise ValueError(
            f"{OWNER}: columns={columns!r}: {ref.path} has no column {error}"
        ) from None
    except Exception as error:
        raise CorruptShardError(
            f"{OWNER}: {ref.path}: row group {block} cannot be read: {error}"
        ) from error
    rows: list[Any] = table.to_pylist()
    return rows


# ---------------------------------------------------------------------------------- JSONL
def _decompressed(ref: FileRef, handle: IO[bytes]) -> IO[bytes]:
    kind = compression(ref.path)
    if kind == "gz":
        return gzip.GzipFile(fileobj=handle)  # type: ignore[return-value]
    if kind == "zst":
        try:
            import zstandard
        except ImportError as error:
            raise ImportError(
                f"{OWNER}: {ref.path} is zstd-compressed; reading it needs zstandard: "
                "pip install zstandard"
            ) from error
        reader = zstandard.ZstdDecompressor().stream_reader(handle)
        return io.BufferedReader(reader)
    return handle


def _lines(
    ref: FileRef, skip: bool, limit: int | None = None, faults: list[str] | None = None
) -> Iterator[tuple[int, int, bytes]]:
    """(byte offset, 1-based line number, line) of every non-blank line of the file.

    A truncated compressed stream raises `CorruptShardError`, or with ``errors="skip"`` ends
    the lines (the partial last line is left out) and adds a note to `faults`.
    """
    with open_binary(ref) as raw:
        stream = _decompressed(ref, raw)
        offset, number, taken = 0, 0, 0
        while limit is None or taken < limit:
            try:
                line = stream.readline()
            except (EOFError, OSError, ValueError) as error:
                if skip:
                    if faults is not None:
                        faults.append(f"{ref.path}: truncated after line {number}")
                    return
                raise CorruptShardError(
                    f"{OWNER}: {ref.path}: the compressed stream is corrupt or truncated after "
                    f"line {number} ({type(error).__name__}: {error})"
                ) from error
            if not line:
                return
            number += 1
            if line.strip():
                taken += 1
                yield offset, number, line
            offset += len(line)


def _index_jsonl(ref: FileRef, block_rows: int, skip: bool) -> FileIndex:
    index = FileIndex()
    whole = compression(ref.path) is not None  # a compressed file is one block
    faults: list[str] = []
    for count, (offset, number, _) in enumerate(_lines(ref, skip, faults=faults)):
        if count == 0 or (not whole and count % block_rows == 0):
            index.starts.append(offset)
            index.lines.append(number)
            index.rows.append(0)
        index.rows[-1] += 1
    index.skipped = len(faults)
    return index


def _read_jsonl(ref: FileRef, index: FileIndex, block: int) -> list[Any]:
    rows = index.rows[block]
    if compression(ref.path) is not None:
        lines = _lines(ref, skip=True, limit=rows)
        return [JsonRow(ref.path, number, line) for _, number, line in lines]
    start = index.starts[block]
    end = index.starts[block + 1] if block + 1 < len(index.starts) else ref.size
    data = read_range(ref, start, end)
    out: list[Any] = []
    number = index.lines[block]
    for line in io.BytesIO(data):
        if line.strip():
            out.append(JsonRow(ref.path, number, line))
        number += 1
    return out[:rows]


@dataclass(frozen=True)
class JsonRow:
    """A JSONL line not parsed yet: parsed by the reader of the row, once."""

    path: str
    line: int
    text: bytes


def parse_row(row: Any) -> Any:
    """The row itself; a `JsonRow` is parsed here, with an error naming the file and line."""
    if type(row) is not JsonRow:
        return row
    try:
        return json.loads(row.text)
    except ValueError as error:
        raise CorruptShardError(
            f"{OWNER}: {row.path}, line {row.line}: not valid JSON ({error})"
        ) from error


# ---------------------------------------------------------------------------------- tar
def split_name(name: str) -> tuple[str, str]:
    """WebDataset's key and extension: the key ends at the first dot of the base name."""
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return os.path.join(folder, stem) if folder else stem, ext if dot else ""


def _index_tar(ref: FileRef, block_rows: int, skip: bool) -> FileIndex:
    index = FileIndex()
    key, samples = None, 0
    try:
        with open_binary(ref) as handle, tarfile.open(fileobj=handle, mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > ref.size:
                    raise tarfile.ReadError(f"member {info.name!r} is truncated")
                name_key, _ = split_name(info.name)
                if name_key != key:
                    if samples % block_rows == 0:
                        index.starts.append(info.offset)
                        index.rows.append(0)
                    key = name_key
                    samples += 1
                    index.rows[-1] += 1
                index.end = info.offset_data + -(-info.size // 512) * 512
    except tarfile.TarError as error:
        if not skip:
            raise CorruptShardError(
                f"{OWNER}: {ref.path} is a corrupt tar file after {samples} samples: {error}"
            ) from error
        if index.rows:  # the last sample may be incomplete: leave it out
            index.rows[-1] -= 1
            index.end = _start_of_last_sample(ref, index)
            if index.rows[-1] == 0:
                index.rows.pop()
                index.starts.pop()
        index.skipped += 1
    return index


def _start_of_last_sample(ref: FileRef, index: FileIndex) -> int:
    """Where the incomplete last sample of a truncated tar begins (the block's end)."""
    data = read_range(ref, index.starts[-1], ref.size)
    seen = 0
    position = index.starts[-1]
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
        key = None
        try:
            for info in archive:
                if not info.isfile():
                    continue
                name_key, _ = split_name(info.name)
                if name_key != key:
                    if seen == index.rows[-1]:
                        return index.starts[-1] + info.offset
                    key = name_key
                    seen += 1
        except tarfile.TarError:
            pass
    return position + len(data)


def _read_tar(ref: FileRef, start: int, end: int, rows: int) -> list[Any]:
    data = read_range(ref, start, end)
    out: list[dict[str, Any]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                key, ext = split_name(info.name)
                if not out or out[-1]["__key__"] != key:
                    if len(out) == rows:
                        break
                    out.append({"__key__": key})
                member = archive.extractfile(info)
                out[-1][ext] = member.read() if member is not None else b""
    except tarfile.TarError as error:
        raise CorruptShardError(
            f"{OWNER}: {ref.path}: the tar member after sample {len(out)} of the block at byte "
            f"{start} cannot be read: {error}"
        ) from error
    return out
