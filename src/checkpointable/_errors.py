"""The exception classes of the package.

Wrong arguments raise the built-in `TypeError` / `ValueError`. Two classes exist for compatibility:
where a seed raised `ValueError` for an argument of the wrong type (infinibatch) or an
`AssertionError` for a wrong value (zero), ours raise a class that is both, so that code written
against either the seed or the Python convention keeps working, as numpy's `AxisError` is both a
`ValueError` and an `IndexError`.
"""

from __future__ import annotations


class ArgumentTypeError(TypeError, ValueError):
    """An argument has the wrong type (a `TypeError` that is also the seed's `ValueError`).

    >>> try:
    ...     raise ArgumentTypeError("source_iterator must be a CheckpointableIterator")
    ... except ValueError as e:
    ...     isinstance(e, TypeError)
    True
    """


class ArgumentValueError(ValueError, AssertionError):
    """An argument has a wrong value (a `ValueError` that is also the seed's `AssertionError`)."""


class IncompatibleStateError(ValueError):
    """A state cannot be loaded here: it was saved by another kind of object, another version of
    the state format, or an object configured differently. The message names what differs."""
