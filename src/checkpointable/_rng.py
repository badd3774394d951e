"""Random generators' states as plain data: the one encoding every state of the package uses.

Two kinds, each a dict naming its ``"kind"``:

* ``{"kind": "torch", "seed": s, "draws": k}``: a ``torch.Generator`` seeded with
  ``manual_seed(s)`` (its ``initial_seed()``) and since then drawn from only by this package,
  which counts its own draws: `k` is the number of 32-bit outputs of the generator's Mersenne
  Twister used so far. Restoring seeds a generator with `s` and draws `k` outputs again, so the
  replay is bounded: at most `MAX_REPLAY_DRAWS` (2**23, a few tens of milliseconds); a generator
  drawn further, or drawn from by anyone else (the user, a sampler of their own), or whose draws
  this package cannot count, is stored in full. Whether the short form is right is checked when
  the state is written, by comparing the generator's state with the one this package saw right
  after its last draw.
* ``{"kind": "torch", "data": <base64 of get_state()>}``: any other torch generator state
  (~6.7 KB of text for the CPU generator).
* ``{"kind": "python", "data": <base64 of the 625 uint32 of random.Random.getstate()>,
  "gauss": <gauss_next>}``: a Python ``random.Random`` state (~3.4 KB of text instead of a list
  of 625 ints).

Format version 2 stored Python states as ``[version, [625 ints], gauss_next]`` lists and torch
states as bare base64 text: both are still read.
"""

from __future__ import annotations

import base64
import binascii
import random
import struct
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ._errors import IncompatibleStateError

T = TypeVar("T")

if TYPE_CHECKING:  # torch is imported by the functions that need it: `random` states do not
    import torch

__all__ = [
    "MAX_REPLAY_DRAWS",
    "decode_python_state",
    "decode_torch_state",
    "draw_seed",
    "encode_python_state",
    "encode_torch_generator",
    "encode_torch_state",
    "permutation",
    "randint",
    "restore_torch_generator",
]

#: The most draws a short ``{"seed", "draws"}`` torch state may ask to replay on load.
MAX_REPLAY_DRAWS = 2**23
#: `torch.randperm(n)` draws n - 1 32-bit outputs (checked up to this size; larger ones, which
#: torch draws differently above 2**32 / 20, are not counted and stored in full).
_PERM_32BIT_LIMIT = 2**24
_MT_WORDS = 625  # the Mersenne Twister's 624 words and its position


class _Count:
    """What this package drew from one generator: its seed, the 32-bit outputs drawn since, and
    the generator's state right after the last draw (None: not countable any more)."""

    __slots__ = ("draws", "seed", "snapshot")

    def __init__(self, seed: int, draws: int, snapshot: torch.Tensor | None) -> None:
        self.seed, self.draws, self.snapshot = seed, draws, snapshot


_COUNTS: weakref.WeakKeyDictionary[torch.Generator, _Count] = weakref.WeakKeyDictionary()


def _fresh_state(seed: int) -> torch.Tensor:
    import torch

    return torch.Generator().manual_seed(seed).get_state()


def _count(generator: torch.Generator) -> _Count:
    """The count of `generator`, started now (at 0 draws if it is freshly seeded, else as not
    countable) when this package has not drawn from it yet."""
    import torch

    count = _COUNTS.get(generator)
    if count is None:
        seed, state = generator.initial_seed(), generator.get_state()
        fresh = torch.equal(state, _fresh_state(seed))
        count = _Count(seed, 0, state if fresh else None)
        _COUNTS[generator] = count
    return count


def _counted(generator: torch.Generator, draws: int, draw: Callable[[], T]) -> T:
    """``draw()``, a draw of `draws` 32-bit outputs from `generator` by this package: counted
    while the count holds (-1: a draw that cannot be counted)."""
    import torch

    count = _count(generator)
    if count.snapshot is not None:
        if not torch.equal(generator.get_state(), count.snapshot) or draws < 0:
            count.snapshot = None  # drawn by someone else before this draw: stored in full now
        else:
            count.draws += draws
    result = draw()
    if count.snapshot is not None:
        count.snapshot = generator.get_state()
    return result


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A 64-bit seed drawn from `generator` (the global RNG when None), as torch's DataLoader
    draws its workers' base seed and a ``RandomSampler`` its seed; a draw of 2 outputs."""
    import torch

    def draw() -> int:
        return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())

    return draw() if generator is None else _counted(generator, 2, draw)


def permutation(n: int, generator: torch.Generator) -> torch.Tensor:
    """``torch.randperm(n, generator=generator)``, counted (n - 1 outputs below 2**32 / 20)."""
    import torch

    draws = n - 1 if 0 < n < _PERM_32BIT_LIMIT else -1
    return _counted(generator, draws, lambda: torch.randperm(n, generator=generator))


def randint(high: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``torch.randint(high=high, size=(size,))`` as int64, counted (one output each below
    2**28, two up to 2**31, as torch 2.x draws them; larger bounds are not counted)."""
    import torch

    return _counted(
        generator,
        size * _words_per_int(high),
        lambda: torch.randint(high=high, size=(size,), dtype=torch.int64, generator=generator),
    )


def _words_per_int(high: int) -> int:
    if 0 < high < 2**28:
        return 1
    return 2 if high <= 2**31 else -1


def encode_torch_generator(generator: torch.Generator) -> dict[str, Any]:
    """`generator`'s state: ``{"kind": "torch", "seed", "draws"}`` when it was seeded and only
    drawn by this package (at most `MAX_REPLAY_DRAWS`), else the full state."""
    import torch

    count = _count(generator)
    snapshot = count.snapshot
    if (
        snapshot is not None
        and count.draws <= MAX_REPLAY_DRAWS
        and generator.initial_seed() == count.seed
        and torch.equal(generator.get_state(), snapshot)
    ):
        return {"kind": "torch", "seed": count.seed, "draws": count.draws}
    return encode_torch_state(generator.get_state())


def encode_torch_state(state: torch.Tensor) -> dict[str, Any]:
    """A torch RNG state tensor (``get_state()``, ``torch.get_rng_state()``) in full."""
    try:
        raw = state.numpy().tobytes()
    except RuntimeError:  # torch built without numpy support
        raw = bytes(state.tolist())
    return {"kind": "torch", "data": base64.b64encode(raw).decode("ascii")}


def decode_torch_state(value: Any, owner: str, name: str = "generator_state") -> torch.Tensor:
    """The state tensor that `value` (from `encode_torch_generator` or `encode_torch_state`, or
    format 2's bare base64 text) stands for, checked now rather than at the next epoch."""
    import torch

    if isinstance(value, dict) and value.get("kind") == "torch" and set(value) != {"kind", "data"}:
        seed, draws = _short_torch(value, owner, name)
        return _replayed(seed, draws).get_state()
    text = value.get("data") if isinstance(value, dict) and value.get("kind") == "torch" else value
    try:
        raw = base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise IncompatibleStateError(
            f"{owner}: the state's {name!r} must be a torch generator state as written by "
            f"state_dict() ({{'kind': 'torch', ...}}), got {str(value)[:60]!r}"
        ) from None
    state = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:  # what Generator.set_state would refuse later (a truncated state), refused now
        torch.Generator().set_state(state)
    except RuntimeError as error:
        raise IncompatibleStateError(
            f"{owner}: the state's {name!r} is not a state of torch's CPU generator ({error}); "
            "it was truncated or changed after state_dict() wrote it"
        ) from None
    return state


def restore_torch_generator(
    generator: torch.Generator, value: Any, owner: str, name: str = "generator_state"
) -> None:
    """Give `generator` the state `value` stands for; a short state keeps being counted."""

    if isinstance(value, dict) and value.get("kind") == "torch" and set(value) != {"kind", "data"}:
        seed, draws = _short_torch(value, owner, name)
        _replayed(seed, draws, generator)
        _COUNTS[generator] = _Count(seed, draws, generator.get_state())
        return
    generator.set_state(decode_torch_state(value, owner, name))
    _COUNTS.pop(generator, None)


def _short_torch(value: dict[str, Any], owner: str, name: str) -> tuple[int, int]:
    seed, draws = value.get("seed"), value.get("draws")
    if (
        set(value) != {"kind", "seed", "draws"}
        or type(seed) is not int
        or not 0 <= seed < 2**64
        or type(draws) is not int
        or not 0 <= draws <= MAX_REPLAY_DRAWS
    ):
        raise IncompatibleStateError(
            f"{owner}: the state's {name!r} must be {{'kind': 'torch', 'seed': int, 'draws': "
            f"int in [0, {MAX_REPLAY_DRAWS}]}} or {{'kind': 'torch', 'data': str}}, got "
            f"{str(value)[:80]}"
        )
    return seed, draws


def _replayed(seed: int, draws: int, generator: torch.Generator | None = None) -> torch.Generator:
    import torch

    generator = (torch.Generator() if generator is None else generator).manual_seed(seed)
    if draws:  # randperm(k + 1) draws exactly k outputs
        torch.randperm(draws + 1, generator=generator)
    return generator


_PACK = struct.Struct(f"<{_MT_WORDS}I")


def encode_python_state(state: tuple[Any, ...]) -> dict[str, Any]:
    """``random.Random.getstate()`` as ``{"kind": "python", "data", "gauss"}``.

    >>> import json, random
    >>> saved = json.loads(json.dumps(encode_python_state(random.Random(1).getstate())))
    >>> restored = random.Random()
    >>> restored.setstate(decode_python_state(saved, "example"))
    >>> restored.random() == random.Random(1).random()
    True
    """
    _version, internal, gauss = state
    data = base64.b64encode(_PACK.pack(*internal)).decode("ascii")
    return {"kind": "python", "data": data, "gauss": gauss}


def decode_python_state(value: Any, owner: str, name: str = "random_state") -> tuple[Any, ...]:
    """The ``random.Random`` state `value` stands for (`encode_python_state`, or format 2's
    ``[version, [625 ints], gauss_next]``), checked now."""
    state: tuple[Any, ...] | None = None
    if isinstance(value, dict) and set(value) == {"kind", "data", "gauss"}:
        try:
            raw = base64.b64decode(str(value["data"]).encode("ascii"), validate=True)
            state = (3, _PACK.unpack(raw), value["gauss"])
        except (binascii.Error, UnicodeEncodeError, ValueError, struct.error):
            state = None
        if value["kind"] != "python":
            state = None
    elif (
        isinstance(value, list | tuple)
        and len(value) == 3
        and isinstance(value[1], list | tuple)
        and all(type(x) is int for x in value[1])
    ):
        state = (value[0], tuple(value[1]), value[2])
    if state is None:
        raise IncompatibleStateError(
            f"{owner}: {name!r} must be a Python random state as written by state_dict() "
            f"({{'kind': 'python', 'data': str, 'gauss': float or None}}), got {str(value)[:60]}"
        )
    try:  # what Random.setstate would refuse later, refused now
        random.Random().setstate(state)
    except (TypeError, ValueError, OverflowError) as error:
        raise IncompatibleStateError(
            f"{owner}: {name!r} is not a state of Python's random generator ({error}); it was "
            "truncated or changed after state_dict() wrote it"
        ) from None
    return state
