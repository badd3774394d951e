"""A training loop with `Stream` that is killed mid-epoch and resumes at exactly the next batch.

Run: ``python examples/stream_resume.py``. The first run stops after 7 batches and saves one
checkpoint (the model and ``stream.state_dict()``); the second run loads it and finishes the
loop. The batches of the two runs together are those of one uninterrupted run.
"""

from __future__ import annotations

import io

import torch

from checkpointable import Stream
from checkpointable.iterators import FixedBatchIterator, InfinitePermutationSourceIterator


def make_loader() -> FixedBatchIterator:
    """Endless shuffled passes over 10 samples, in batches of 4: a stateful loader."""
    return FixedBatchIterator(InfinitePermutationSourceIterator(list(range(10)), seed=0), 4)


def train(checkpoint: bytes | None, stop_after: int | None) -> tuple[list[list[int]], bytes]:
    """Run 3 epochs of 5 batches; return the batches seen and a checkpoint of the end point."""
    model = torch.nn.Linear(1, 1)
    stream = Stream(make_loader())
    if checkpoint is not None:
        saved = torch.load(io.BytesIO(checkpoint), weights_only=True)
        model.load_state_dict(saved["model"])
        stream.load_state_dict(saved["stream"])
    seen = []
    for epoch in stream.epochs(3, epoch_size=5, progress_bar=False):
        for batch in epoch:
            seen.append(batch)  # a real loop would train the model on the batch here
            if stream.iteration == stop_after:
                break
        if stream.iteration == stop_after:
            break
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "stream": stream.state_dict()}, buffer)
    return seen, buffer.getvalue()


def main() -> None:
    full, _ = train(None, None)
    first, checkpoint = train(None, stop_after=7)
    second, _ = train(checkpoint, None)
    print(f"first run: {len(first)} batches, resumed run: {len(second)} batches")
    assert first + second == full, "the resumed run differs from the uninterrupted one"
    print("resumed exactly: the two runs together equal one uninterrupted run")


if __name__ == "__main__":
    main()
