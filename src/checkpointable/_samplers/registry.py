"""A name-to-class registry, as helios' ``core.Registry``: ``SAMPLER_REGISTRY`` is one."""

from __future__ import annotations

from collections.abc import Iterator, KeysView
from typing import Any, TypeVar

from .._errors import ArgumentValueError

__all__ = ["SAMPLER_REGISTRY", "Registry"]

T = TypeVar("T")


class Registry:
    """Maps names to classes (or functions) so that they can be created from configuration.

    ``register`` works as a decorator and as a plain call, and returns what it registered.
    Registering a second object under a name already taken raises `ArgumentValueError` (a
    ``ValueError``, and the ``AssertionError`` helios raised); `get` on an unknown name raises
    ``KeyError`` listing the registered names. As helios' registry: ``name in registry``,
    `keys` (a view, in registration order), iteration over ``(name, object)`` pairs and
    ``str(registry)`` (its name).

    Args:
        name: what the registry holds, used in messages (e.g. ``"sampler"``).

    >>> registry = Registry("transform")
    >>> @registry.register
    ... class Flip:
    ...     pass
    >>> registry.get("Flip") is Flip, "Flip" in registry, list(registry.keys()), str(registry)
    (True, True, ['Flip'], 'transform')
    >>> list(registry) == [("Flip", Flip)]
    True
    >>> registry.get("Flop")
    Traceback (most recent call last):
    ...
    KeyError: "no object named 'Flop' in the 'transform' registry; registered: ['Flip']"
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Registry: name must be a str, got {type(name).__name__}")
        self._name = name
        self._objects: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self._name

    def register(self, obj: T, suffix: str | None = None) -> T:
        """Register `obj` under its ``__name__`` (plus ``"_" + suffix``) and return it.

        Raises:
            TypeError: `obj` has no ``__name__``, or `suffix` is not a str.
            ArgumentValueError: the name is already registered.
        """
        name = getattr(obj, "__name__", None)
        if not isinstance(name, str):
            raise TypeError(
                f"Registry {self._name!r}: only objects with a __name__ (classes, functions) "
                f"can be registered, got {obj!r} ({type(obj).__name__})"
            )
        key = self._key(name, suffix)
        if key in self._objects:
            raise ArgumentValueError(
                f"an object named {key!r} is already registered in the {self._name!r} "
                f"registry ({self._objects[key]!r}); register it under another name with suffix="
            )
        self._objects[key] = obj
        return obj

    def get(self, name: str, suffix: str | None = None) -> Any:
        """Return the object registered under `name`, else under ``name + "_" + suffix``.

        Raises:
            KeyError: nothing is registered under that name; the message lists the names.
        """
        if not isinstance(name, str):
            raise TypeError(
                f"Registry {self._name!r}: name must be a str, got {name!r} ({type(name).__name__})"
            )
        if name in self._objects:
            return self._objects[name]
        if suffix is not None and self._key(name, suffix) in self._objects:
            return self._objects[self._key(name, suffix)]
        raise KeyError(
            f"no object named {name!r} in the {self._name!r} registry; "
            f"registered: {sorted(self._objects)}"
        )

    def _key(self, name: str, suffix: str | None) -> str:
        if suffix is None:
            return name
        if not isinstance(suffix, str):
            raise TypeError(
                f"Registry {self._name!r}: suffix must be a str or None, got {suffix!r}"
            )
        return f"{name}_{suffix}"

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def keys(self) -> KeysView[str]:
        """The registered names, in registration order (a live view, as helios')."""
        return self._objects.keys()

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        """The ``(name, object)`` pairs, in registration order (helios iterates over items)."""
        return iter(self._objects.items())

    def __len__(self) -> int:
        return len(self._objects)

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Registry({self._name!r}, names={list(self._objects)})"


#: Global registry of the samplers; the three samplers of this package are registered.
SAMPLER_REGISTRY = Registry("sampler")
