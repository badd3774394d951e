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
import tarfile
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .storage import FileRef, open_binary, optional_module, read_range

__all__ = ["FORMATS", "FileIndex", "JsonBlock", "detect_format", "index_file", "read_block"]

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
) -> Sequence[Any]:
    """The rows of block `block` of `ref`: a list, or a `JsonBlock` that parses on indexing."""
    if kind == "parquet":
        return _read_parquet(ref, block, columns, cache)
    if kind == "tar":
        end = index.starts[block + 1] if block + 1 < len(index.starts) else index.end
        return _read_tar(ref, index.starts[block], end, index.rows[block])
    return _read_jsonl(ref, index, block)


# ---------------------------------------------------------------------------------- Parquet
def _parquet() -> Any:
    needs = "Parquet files need pyarrow: pip install 'checkpointable[parquet]'"
    return optional_module("pyarrow.parquet", needs)


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
    # one reader per file and thread: a ParquetFile read from two threads at once fails
    # ("ReadRangeCache did not find matching cache entry") or crashes
    key = (ref.path, threading.get_ident())
    reader = cache.get(key)
    if reader is None:
        for old in list(cache)[: max(len(cache) - 63, 0)]:  # list(): other threads insert
            cache.pop(old, None)
        reader = cache[key] = pq.ParquetFile(open_binary(ref) if ref.remote else ref.path)
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
        needs = f"{ref.path} is zstd-compressed; reading it needs zstandard: pip install zstandard"
        reader = optional_module("zstandard", needs).ZstdDecompressor().stream_reader(handle)
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


def _read_jsonl(ref: FileRef, index: FileIndex, block: int) -> JsonBlock:
    rows = index.rows[block]
    if compression(ref.path) is not None:
        found = list(_lines(ref, skip=True, limit=rows))
        return JsonBlock(ref.path, [line for _, _, line in found], [n for _, n, _ in found])
    start = index.starts[block]
    end = index.starts[block + 1] if block + 1 < len(index.starts) else ref.size
    lines = _split_lines(read_range(ref, start, end))
    first = index.lines[block]
    head = lines[:rows]
    if len(head) == rows and all(line.strip() for line in head):  # no blank line: numbers follow
        return JsonBlock(ref.path, head, None, first)
    kept = [(first + i, line) for i, line in enumerate(lines) if line.strip()][:rows]
    return JsonBlock(ref.path, [line for _, line in kept], [n for n, _ in kept])


_DECODER = json.JSONDecoder()


def _split_lines(data: bytes) -> list[Any]:
    """The lines of a block as str: one decode per block, so that each row parses from str
    (``json.loads(bytes)`` decodes each line); as bytes when the block is not UTF-8 (the
    row of the bad line then says so)."""
    try:
        return data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return data.split(b"\n")


class JsonBlock(Sequence[Any]):
    """A block of JSONL lines, each parsed when its row is read (once per delivery).

    `numbers` gives each line's 1-based line number in the file (None: consecutive from
    `first`), for the error that names a bad line.
    """

    __slots__ = ("first", "lines", "numbers", "path")

    def __init__(
        self, path: str, lines: Sequence[str | bytes], numbers: list[int] | None, first: int = 1
    ) -> None:
        self.path, self.lines, self.numbers, self.first = path, lines, numbers, first

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, offset: Any) -> Any:
        try:
            line = self.lines[offset]
            return _DECODER.decode(line) if isinstance(line, str) else json.loads(line)
        except ValueError as error:
            number = self.numbers[offset] if self.numbers is not None else self.first + offset
            raise CorruptShardError(
                f"{OWNER}: {self.path}, line {number}: not valid JSON ({error})"
            ) from error


# ---------------------------------------------------------------------------------- tar
def split_name(name: str) -> tuple[str, str]:
    """WebDataset's key and extension: the key ends at the first dot of the base name."""
    slash = name.rfind("/") + 1
    dot = name.find(".", slash)
    return (name, "") if dot < 0 else (name[:dot], name[dot + 1 :])


_ZERO = bytes(512)


def _octal(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256 for large sizes
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _checked(header: bytes, offset: int) -> None:
    checksum = sum(header[:148]) + 256 + sum(header[156:])
    stored = _octal(header[148:156])
    if stored != checksum and stored != checksum - 256 * sum(b > 127 for b in header):
        raise tarfile.ReadError(f"bad header checksum at byte {offset}")


def tar_members(
    read: Callable[[int, int], bytes], size: int, verify: bool = True
) -> Iterator[tuple[int, str, int, int]]:
    """(offset of the member's first header, name, offset of its data, data size) of every
    regular file of a tar, reading only headers (ustar, GNU long names, pax ``path``/``size``).

    `read(offset, count)` returns bytes of the tar. `verify` checks each header's checksum
    (the index does; a block read, over headers the index checked, skips it: it is most of the
    cost of parsing small members).

    Raises:
        tarfile.ReadError: a header is truncated or fails its checksum, or data is cut short.
    """
    offset, start = 0, None
    long_name: str | None = None
    pax: dict[str, str] = {}
    while offset + 512 <= size:
        header = read(offset, 512)
        if len(header) < 512:
            raise tarfile.ReadError(f"truncated header at byte {offset}")
        if header == _ZERO:
            return
        if verify:
            _checked(header, offset)
        start = offset if start is None else start
        try:
            member = _octal(header[124:136])
        except ValueError:
            raise tarfile.ReadError(f"bad size field in the header at byte {offset}") from None
        kind = header[156:157]
        data = offset + 512
        if kind in (b"L", b"x", b"g"):
            body = read(data, member)
            if kind == b"L":
                long_name = body.split(b"\0", 1)[0].decode()
            elif kind == b"x":
                pax = _pax_records(body)
            offset = data + -(-member // 512) * 512
            if kind == b"g":
                start = None
            continue
        name = header[:100].split(b"\0", 1)[0].decode()
        if header[257:262] == b"ustar" and header[345:346] != b"\0":
            name = header[345:500].split(b"\0", 1)[0].decode() + "/" + name
        if long_name is not None or pax:
            name = pax.get("path", long_name or name)
            member = int(pax["size"]) if "size" in pax else member
        if data + member > size:
            raise tarfile.ReadError(f"member {name!r} is truncated")
        if kind in (b"0", b"\0", b"7"):
            yield start, name, data, member
        offset = data + -(-member // 512) * 512
        start, long_name, pax = None, None, {}
    if offset != size:  # a partial header, or the last member's padding cut short
        raise tarfile.ReadError(f"the file ends inside the member or header at byte {offset}")


def _reader(handle: IO[bytes]) -> Callable[[int, int], bytes]:
    def read(offset: int, count: int) -> bytes:
        handle.seek(offset)
        return handle.read(count)

    return read


def _pax_records(body: bytes) -> dict[str, str]:
    records, position = {}, 0
    while position < len(body) and body[position : position + 1] != b"\0":
        length = int(body[position:].split(b" ", 1)[0])
        record = body[position : position + length].split(b" ", 1)[1].rstrip(b"\n")
        key, _, value = record.partition(b"=")
        records[key.decode()] = value.decode()
        position += length
    return records


def _index_tar(ref: FileRef, block_rows: int, skip: bool) -> FileIndex:
    index = FileIndex()
    key, samples, sample_start = None, 0, 0
    try:
        with open_binary(ref) as handle:
            for start, name, data, member in tar_members(_reader(handle), ref.size):
                name_key, _ = split_name(name)
                if name_key != key:
                    if samples % block_rows == 0:
                        index.starts.append(start)
                        index.rows.append(0)
                    key, sample_start = name_key, start
                    samples += 1
                    index.rows[-1] += 1
                index.end = data + -(-member // 512) * 512
    except tarfile.TarError as error:
        if not skip:
            raise CorruptShardError(
                f"{OWNER}: {ref.path} is a corrupt tar file after {samples} samples: {error}"
            ) from error
        if index.rows:  # the last sample may be incomplete: leave it out
            index.rows[-1] -= 1
            index.end = sample_start
            if index.rows[-1] == 0:
                index.rows.pop()
                index.starts.pop()
        index.skipped += 1
    return index


def _read_tar(ref: FileRef, start: int, end: int, rows: int) -> list[Any]:
    data = read_range(ref, start, end)
    out: list[dict[str, Any]] = []
    try:
        members = tar_members(lambda at, count: data[at : at + count], len(data), verify=False)
        for _, name, offset, member in members:
            key, ext = split_name(name)
            if not out or out[-1]["__key__"] != key:
                if len(out) == rows:
                    break
                out.append({"__key__": key})
            out[-1][ext] = data[offset : offset + member]
    except tarfile.TarError as error:
        raise CorruptShardError(
            f"{OWNER}: {ref.path}: the tar member after sample {len(out)} of the block at byte "
            f"{start} cannot be read: {error}"
        ) from error
    return out
