"""The progress bar of `Stream.epochs`: one tqdm bar over the whole loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["bar_options", "open_bar"]


def bar_options(
    progress_bar: bool | None, progress_bar_options: Mapping[str, Any] | None, owner: str
) -> dict[str, Any] | None:
    """Check the two progress bar arguments; return tqdm's keyword arguments, or None for no bar.

    `progress_bar`: True always shows the bar, False never, None (auto) shows it only when the
    bar's output (``file``, by default ``sys.stderr``) is a terminal. `progress_bar_options`:
    keyword arguments of ``tqdm``, or None for no bar (the seed's way to turn it off).
    """
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise TypeError(
            f"{owner}: progress_bar must be True, False or None (auto), got {progress_bar!r} "
            f"({type(progress_bar).__name__})"
        )
    if progress_bar is False:
        return None
    if progress_bar_options is None:
        if progress_bar:
            raise ValueError(
                f"{owner}: progress_bar=True asks for a bar but progress_bar_options=None asks "
                "for none; pass progress_bar_options={} or a dict of tqdm options"
            )
        return None
    if not isinstance(progress_bar_options, Mapping):
        raise TypeError(
            f"{owner}: progress_bar_options must be a dict of tqdm keyword arguments or None, "
            f"got {type(progress_bar_options).__name__}"
        )
    options = dict(progress_bar_options)
    if progress_bar is True:
        if options.get("disable", False):
            raise ValueError(
                f"{owner}: progress_bar=True asks for a bar but progress_bar_options has "
                f"disable={options['disable']!r}; give only one of them"
            )
        options["disable"] = False
    elif options.get("disable") is True:
        return None
    else:
        options.setdefault("disable", None)  # tqdm's auto: nothing unless file is a terminal
    return options


def open_bar(options: dict[str, Any], initial: int, total: int | None) -> Any:
    """Create the tqdm bar; `initial` and `total` apply unless the options set them."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    return tqdm(**{"initial": initial, "total": total, **options})
