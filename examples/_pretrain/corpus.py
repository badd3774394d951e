"""The example's two corpora, from the ``.py`` files of Python's standard library.

"modules" holds the standard library's top-level modules, "packages" the modules of its
packages (``json/``, ``email/``, ...; the tests left out). The files are taken in sorted order
up to a byte budget, so every machine with the same Python builds the same corpora.

Tokenizer: byte-level, token ``b`` is byte ``b`` of the UTF-8 text, and `EOS` (256) ends a
document. Each corpus is written once as JSONL shards (``{"id": path, "tokens": [...]}`` per
document), then packed by `PackedSequences` (documents concatenated with `EOS` between them)
into one flat ``uint16`` token array, ``tokens.npy``, that training reads as fixed-length
windows through `TokenArrayDataset`. Packing offline keeps the training data elastic: windows
of a token array resume on any world size, where online packing streams are tied to one.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np

from checkpointable import PackedSequences, ShardedDataset

EOS = 256  # the end-of-document token; bytes are 0..255
VOCAB = 257
CORPORA = ("modules", "packages")
SHARDS = 2  # JSONL shards per corpus
PACK_LEN = 1024  # tokens per packed sequence when writing the token array


def stdlib_files(corpus: str, budget: int) -> list[Path]:
    """The first files of `corpus` (sorted) whose sizes add up to at most `budget` bytes."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if corpus == "modules":
        candidates = sorted(root.glob("*.py"))
    else:
        candidates = sorted(
            path
            for path in root.glob("*/**/*.py")
            if path.relative_to(root).parts[0] not in ("test", "site-packages", "idlelib")
            and "tests" not in path.parts
        )
    chosen, total = [], 0
    for path in candidates:
        size = path.stat().st_size
        if 0 < size <= budget - total:
            chosen.append(path)
            total += size
    if not chosen:
        raise SystemExit(f"no .py files found for the corpus {corpus!r} under {root}")
    return chosen


def write_corpus(folder: Path, corpus: str, budget: int) -> Path:
    """Write `corpus` as JSONL shards, then pack it into ``tokens.npy``; return that file.

    Nothing is rewritten when ``tokens.npy`` exists (the corpora are written once).
    """
    target = folder / corpus
    array_path = target / "tokens.npy"
    if array_path.exists():
        return array_path
    target.mkdir(parents=True, exist_ok=True)
    root = Path(sysconfig.get_paths()["stdlib"])
    files = stdlib_files(corpus, budget)
    shards = [target / f"docs-{n:04d}.jsonl" for n in range(SHARDS)]
    writers = [shard.open("w") for shard in shards]
    for number, path in enumerate(files):
        tokens = list(path.read_text(encoding="utf-8", errors="replace").encode())
        record = {"id": str(path.relative_to(root)), "tokens": tokens}
        writers[number % SHARDS].write(json.dumps(record) + "\n")
    for writer in writers:
        writer.close()
    documents = ShardedDataset(shards, shuffle=False, world_size=1, rank=0)
    packed = PackedSequences(
        documents, PACK_LEN, eos_id=EOS, num_shards=1, epochs=1, world_size=1, rank=0
    )
    sequences = [sequence.numpy() for sequence in packed]
    partial = array_path.with_suffix(".partial.npy")
    np.save(partial, np.concatenate(sequences).astype(np.uint16))
    partial.rename(array_path)  # complete or absent
    return array_path
