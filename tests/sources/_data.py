"""Tiny shard files of every format for the source tests; row ``i`` holds ``{"id": i}``."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

FORMATS = ["jsonl", "jsonl.gz", "jsonl.zst", "parquet", "tar"]


def write_shards(folder: Path, kind: str, sizes: list[int], row_group: int = 4) -> list[str]:
    """Write one file per entry of `sizes` (rows per file); global ids run across the files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, first = [], 0
    for number, size in enumerate(sizes):
        ids = list(range(first, first + size))
        first += size
        path = folder / f"part-{number:03d}.{kind}"
        write_file(path, kind, ids, row_group)
        paths.append(str(path))
    return paths


def jsonl_bytes(ids: list[int]) -> bytes:
    return "".join(json.dumps({"id": i, "text": f"row {i}"}) + "\n" for i in ids).encode()


def write_file(path: Path, kind: str, ids: list[int], row_group: int = 4) -> None:
    if kind == "jsonl":
        path.write_bytes(jsonl_bytes(ids))
    elif kind == "jsonl.gz":
        path.write_bytes(gzip.compress(jsonl_bytes(ids)))
    elif kind == "jsonl.zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(ids)))
    elif kind == "parquet":
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        table = pa.table({"id": ids, "text": [f"row {i}" for i in ids]})
        pq.write_table(table, path, row_group_size=row_group)
    elif kind == "tar":
        with tarfile.open(path, "w") as archive:
            for i in ids:
                for ext, data in (("json", json.dumps({"id": i}).encode()), ("txt", b"x" * i)):
                    info = tarfile.TarInfo(f"sample{i:05d}.{ext}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    else:
        raise ValueError(kind)


def row_id(row: dict) -> int:
    """The id of a row of any format."""
    if "__key__" in row:
        return int(json.loads(row["json"])["id"])
    return int(row["id"])
