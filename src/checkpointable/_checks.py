"""Argument validation: one place, one exception class per kind of mistake.

Every public constructor and method checks its arguments here, so the same mistake gets the
same error everywhere: a wrong type raises `ArgumentTypeError` (a `TypeError`, and the
`ValueError` that infinibatch raised), a wrong value raises `ValueError`; each message names
the owner, the argument, the rule and the value; `short_repr` and `close` are the small helpers
that messages and callers share. This module imports no torch (the iterator pipelines and their
spawn workers run without it).
"""

from __future__ import annotations

from typing import Any

from ._errors import ArgumentTypeError

__all__ = [
    "SEED_RANGE",
    "check_sharding",
    "close",
    "require_bool",
    "require_callable",
    "require_int",
    "require_optional_int",
    "require_positive",
    "require_seed",
    "short_repr",
]

#: The seeds that ``torch.Generator.manual_seed`` accepts.
SEED_RANGE = range(-(2**63), 2**64)


def _wrong_type(owner: str, name: str, kind: str, value: Any) -> ArgumentTypeError:
    return ArgumentTypeError(
        f"{owner}: {name} must be {kind}, got {value!r} ({type(value).__name__})"
    )


def require_int(
    value: Any, owner: str, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Return `value` if it is an int (not a bool) in ``[minimum, maximum]``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(owner, name, "an int", value)
    if minimum is not None and value < minimum:
        rule = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{owner}: {name} must be {rule}, got {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{owner}: {name} must be an int <= {maximum}, got {name}={value}")
    return int(value)


def require_optional_int(value: Any, owner: str, name: str) -> int | None:
    """Return `value` if it is None or an int (not a bool), else raise."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise _wrong_type(owner, name, "an int or None", value)


def require_positive(value: Any, owner: str, name: str) -> int:
    """Return `value` if it is an int >= 1, else raise."""
    return require_int(value, owner, name, minimum=1)


def require_bool(value: Any, owner: str, name: str) -> bool:
    """Return `value` if it is a bool, else raise `ArgumentTypeError`."""
    if not isinstance(value, bool):
        raise _wrong_type(owner, name, "a bool", value)
    return value


def require_seed(seed: Any, owner: str) -> int:
    """Return `seed` if ``torch.Generator.manual_seed`` accepts it, else raise."""
    require_int(seed, owner, "seed")
    if seed not in SEED_RANGE:
        raise ValueError(
            f"{owner}: seed must be in [-2**63, 2**64) as torch.Generator.manual_seed requires, "
            f"got {seed=}"
        )
    return int(seed)


def require_callable(value: Any, owner: str, name: str, optional: bool = False) -> Any:
    """Return `value` if it is callable (or None when `optional`), else raise."""
    if (value is None and optional) or callable(value):
        return value
    raise ArgumentTypeError(f"{owner}: {name} must be callable, got {type(value).__name__}")


def check_sharding(owner: str, num_instances: Any, instance_rank: Any) -> None:
    """Check `num_instances` (an int >= 1) and `instance_rank` (in ``range(num_instances)``)."""
    require_positive(num_instances, owner, "num_instances")
    require_int(instance_rank, owner, "instance_rank")
    if not 0 <= instance_rank < num_instances:
        raise ValueError(
            f"{owner}: instance_rank must be in range(num_instances), "
            f"got instance_rank={instance_rank} with num_instances={num_instances}"
        )


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def close(obj: Any) -> None:
    """Call ``obj.close()`` when `obj` has one (a user's dataset, shard or loader may not)."""
    method = getattr(obj, "close", None)
    if callable(method):
        method()
