"""RNG states as plain data: base64 text of the state tensors of torch's generators."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import torch

from .._errors import IncompatibleStateError

__all__ = ["decode_generator_state", "encode_generator_state", "encode_rng_state"]


def encode_generator_state(generator: torch.Generator) -> str:
    """A `torch.Generator`'s state as a base64 str (plain data; ~6.7 KB for the CPU generator)."""
    return encode_rng_state(generator.get_state())


def encode_rng_state(state: torch.Tensor) -> str:
    """An RNG state tensor (``get_state()``, ``torch.get_rng_state()``) as a base64 str."""
    try:
        raw = state.numpy().tobytes()
    except RuntimeError:  # torch built without numpy support
        raw = bytes(state.tolist())
    return base64.b64encode(raw).decode("ascii")


def decode_generator_state(text: Any, owner: str = "StatefulDataLoader") -> torch.Tensor:
    """Inverse of `encode_generator_state`, with a clear error for anything else."""
    try:
        raw = base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise IncompatibleStateError(
            f"{owner}: the state's 'generator_state' must be the base64 text written by "
            f"state_dict(), got {str(text)[:40]!r}"
        ) from None
    state = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:  # what Generator.set_state would refuse later (a truncated state), refused now
        torch.Generator().set_state(state)
    except RuntimeError as error:
        raise IncompatibleStateError(
            f"{owner}: the state's 'generator_state' is not a state of torch's CPU generator "
            f"({error}); it was truncated or changed after state_dict() wrote it"
        ) from None
    return state
