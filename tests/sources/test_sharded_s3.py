"""ShardedDataset over s3:// URLs: a real S3-compatible server (moto's server mode) on localhost,
read with s3fs through fsspec."""

from __future__ import annotations

import functools
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from checkpointable import ShardedDataset, StatefulDataLoader
from checkpointable.testing import assert_resumable

from ._data import row_id, write_shards

s3fs = pytest.importorskip(
    "s3fs", reason="s3fs is not installed (pip install 'checkpointable[s3]')"
)
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed")

SIZES = [6, 4, 7]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = free_port()
    try:
        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        server.start()
    except Exception as error:  # the only reason to skip: no server on this machine
        pytest.skip(f"moto's S3 server could not start on 127.0.0.1:{port}: {error}")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def bucket(endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A bucket holding 3 shards of each format; returns the storage options."""
    options = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("shards")
    local = tmp_path_factory.mktemp("upload")
    for kind in ("jsonl", "parquet", "tar", "jsonl.gz"):
        for path in write_shards(local / kind, kind, SIZES, row_group=2):
            fs.put(path, f"shards/{kind}/{path.rsplit('/', 1)[1]}")
    return options


def _loader(pattern: str, options: dict, num_workers: int) -> StatefulDataLoader:
    dataset = ShardedDataset(pattern, seed=3, window=2, block_rows=2, storage_options=options)
    return StatefulDataLoader(
        dataset, batch_size=3, sampler=dataset.sampler, collate_fn=list, num_workers=num_workers
    )


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "tar", "jsonl.gz"])
def test_s3_shards_read_in_order(bucket: dict[str, Any], kind: str) -> None:
    dataset = ShardedDataset(
        f"s3://shards/{kind}/*.{kind}", shuffle=False, block_rows=2, storage_options=bucket
    )
    assert dataset.layout.files[0].path == f"s3://shards/{kind}/part-000.{kind}"
    assert [row_id(dataset[i]) for i in dataset.sampler] == list(range(sum(SIZES)))


@pytest.mark.resumable("ShardedDataset")
@pytest.mark.parametrize(("kind", "num_workers"), [("parquet", 0), ("jsonl", 2)])
def test_s3_resumable_through_the_loader(
    bucket: dict[str, Any], kind: str, num_workers: int
) -> None:
    pattern = f"s3://shards/{kind}/*.{kind}"
    positions = None if num_workers == 0 else [1, 6, 9]
    items = assert_resumable(
        functools.partial(_loader, pattern, bucket, num_workers), epochs=2, positions=positions
    )
    assert sorted(row_id(r) for batch in items[:6] for r in batch) == list(range(sum(SIZES)))


def test_s3_missing_object_is_named(bucket: dict[str, Any]) -> None:
    with pytest.raises(FileNotFoundError, match=r"s3://shards/nope\.jsonl"):
        ShardedDataset("s3://shards/nope.jsonl", storage_options=bucket)
    with pytest.raises(FileNotFoundError, match="matches no file"):
        ShardedDataset("s3://shards/jsonl/*.parquet", storage_options=bucket)


def test_s3_next_block_is_prefetched_in_the_background(bucket: dict[str, Any]) -> None:
    dataset = ShardedDataset(
        "s3://shards/jsonl/*.jsonl", shuffle=False, block_rows=2, storage_options=bucket
    )
    assert [row_id(row) for row in dataset.__getitems__([0, 1])] == [0, 1]
    pending = dataset._pending[1]  # block 1 is being read by a thread while block 0 is used
    assert [row_id(row) for row in pending.result()] == [2, 3]
    assert [row_id(row) for row in dataset.__getitems__([2, 3])] == [2, 3]
    assert 1 not in dataset._pending and 2 in dataset._pending
