"""What the loader knows about other libraries' datasets: the parts of their state that is lost.

A dataset's own ``state_dict()`` is saved as it gives it. Where a well-known dataset type is known
to leave something out of that state, the loader says so once, at its first ``state_dict()``,
instead of letting a resume silently differ from the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["keeps_loaded_state", "state_caveat"]

# The class of a Hugging Face streaming dataset's shuffle buffer (``IterableDataset.shuffle``).
_HF_SHUFFLE_BUFFER = "BufferShuffledExamplesIterable"


def state_caveat(dataset: Any) -> str | None:
    """A sentence saying what a resume of `dataset` will not reproduce, or None if nothing known.

    >>> state_caveat(range(3)) is None
    True
    """
    if not _is_hf(dataset):
        return None
    sizes = [
        getattr(part, "buffer_size", None)
        for part in _hf_parts(getattr(dataset, "_ex_iterable", None))
        if type(part).__name__ == _HF_SHUFFLE_BUFFER
    ]
    if not sizes:
        return None
    sizes_text = " and ".join(str(size) for size in sizes)
    return (
        f"StatefulDataLoader: the Hugging Face IterableDataset shuffles through a buffer of "
        f"{sizes_text} examples (IterableDataset.shuffle(buffer_size=...)), and its state_dict() "
        f"does not hold that buffer: after a resume, the examples that were in the buffer when "
        f"the state was taken (up to {sizes_text} per worker) are skipped, and the examples that "
        f"follow come in another order than in the uninterrupted run. For an exact resume, "
        f"shuffle without a buffer, or read the same files with checkpointable.sources "
        f"(ShardedDataset), whose shuffle is restored exactly."
    )


def keeps_loaded_state(dataset: Any) -> bool:
    """Whether a state loaded into `dataset` applies again at every later ``iter()``.

    A Hugging Face ``IterableDataset`` keeps it until its epoch changes (``set_epoch``), where a
    dataset usually restarts at each ``iter()``.

    >>> keeps_loaded_state(range(3))
    False
    """
    return _is_hf(dataset) and callable(getattr(dataset, "load_state_dict", None))


def _is_hf(dataset: Any) -> bool:
    return type(dataset).__module__.startswith("datasets.")


def _hf_parts(part: Any, depth: int = 0) -> Iterator[Any]:
    """The examples iterables a Hugging Face dataset is built of, outermost first."""
    if part is None or depth > 64:
        return
    yield part
    yield from _hf_parts(getattr(part, "ex_iterable", None), depth + 1)
    for child in getattr(part, "ex_iterables", None) or ():
        yield from _hf_parts(child, depth + 1)
