"""The mosaic streaming measure of bench_sources.py, run in its own environment (.venv-mosaic).

mosaicml-streaming needs numpy<2.2, which the bench environment cannot have, so
bench_sources.py runs this script with ``.venv-mosaic/bin/python`` (``make bench`` builds it
from ``benchmarks/requirements-mosaic.txt``) and reads one JSON line from its stdout.

``python mosaic_peer.py OUT_DIR BATCH SEED WORKERS FILE.parquet...``: converts the rows of the
Parquet files to mosaic's MDS format in OUT_DIR, then reads one shuffled epoch through a
``DataLoader`` with WORKERS workers. The clock starts before the conversion (mosaic cannot
read the files as they are) and after the imports (as for every library of the benchmark).
Mosaic's image datasets (``streaming.vision``, ``streaming.multimodal``) are replaced by empty
modules: they import torchvision, whose PyPI wheel needs the CUDA torch (see below).
Prints ``{"rows": N, "seconds": S, "convert_seconds": C, "version": V}``.
"""

from __future__ import annotations

import json
import sys
import time
import types

# mosaic's package imports its image datasets (streaming.vision), which import torchvision; on
# PyPI torchvision's Linux wheel is built for torch's CUDA build and cannot load beside the CPU
# torch of this machine. The benchmark reads text rows only, so those datasets are left out.
for _name in ("streaming.vision", "streaming.multimodal"):
    sys.modules[_name] = types.ModuleType(_name)


def main(argv: list[str]) -> None:
    out, batch, seed, workers, files = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), argv[4:]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]
    import streaming
    from streaming import MDSWriter, StreamingDataset
    from streaming.base.util import clean_stale_shared_memory
    from torch.utils.data import DataLoader

    clean_stale_shared_memory()
    start = time.perf_counter()
    with MDSWriter(out=out, columns={"id": "int", "text": "str"}) as writer:
        for path in files:
            for row in pq.read_table(path).to_pylist():
                writer.write(row)
    converted = time.perf_counter()
    dataset = StreamingDataset(local=out, shuffle=True, shuffle_seed=seed, batch_size=batch)
    loader = DataLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=list)
    rows = sum(len(part) for part in loader)
    seconds = time.perf_counter() - start
    result = {
        "rows": rows,
        "seconds": seconds,
        "convert_seconds": converted - start,
        "version": streaming.__version__,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
