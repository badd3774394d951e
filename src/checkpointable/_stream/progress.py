"""The progress bar of `Stream.epochs`: one tqdm bar over the whole loop."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["LoopBar", "bar_options", "loop_total"]


def bar_options(
    progress_bar: bool | None, progress_bar_config: Mapping[str, Any] | None, owner: str
) -> dict[str, Any] | None:
    """Check the two progress bar arguments; return tqdm's keyword arguments, or None for no bar.

    `progress_bar`: True always shows the bar, False never, None (auto) shows it in a ``file``
    named by the options (as zero does), and on ``sys.stderr`` only when it is a terminal.
    `progress_bar_config`: keyword arguments of ``tqdm``, or None for no bar (the seed's way
    to turn it off).
    """
    if progress_bar is not None and not isinstance(progress_bar, bool):
        raise TypeError(
            f"{owner}: progress_bar must be True, False or None (auto), got {progress_bar!r} "
            f"({type(progress_bar).__name__})"
        )
    if progress_bar is False:
        return None
    if progress_bar_config is None:
        if progress_bar:
            raise ValueError(
                f"{owner}: progress_bar=True asks for a bar but progress_bar_config=None asks "
                "for none; pass progress_bar_config={} or a dict of tqdm options"
            )
        return None
    if not isinstance(progress_bar_config, Mapping):
        raise TypeError(
            f"{owner}: progress_bar_config must be a dict of tqdm keyword arguments or None, "
            f"got {type(progress_bar_config).__name__}"
        )
    options = dict(progress_bar_config)
    if progress_bar is True:
        if options.get("disable", False):
            raise ValueError(
                f"{owner}: progress_bar=True asks for a bar but progress_bar_config has "
                f"disable={options['disable']!r}; give only one of them"
            )
        options["disable"] = False
    elif options.get("disable") is True:
        return None
    elif "file" in options:
        options.setdefault("disable", False)  # a file the caller named: shown, as in zero
    else:
        options.setdefault("disable", None)  # tqdm's auto: nothing unless stderr is a terminal
    return options


class LoopBar:
    """The tqdm bar of one `Stream.epochs` loop.

    An item counts as done when the next one is asked for (`step`) or when the loop ends
    (`close`). ``initial`` and ``total`` apply unless the options set them; the total then
    follows `set_total`.
    """

    __slots__ = ("_auto_total", "_pending", "_tqdm")

    def __init__(self, options: dict[str, Any], initial: int, total: int | None) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self._tqdm = tqdm(**{"initial": initial, "total": total, **options})
        self._auto_total = "total" not in options
        self._pending = False  # an item was served whose step is not counted yet

    def step(self) -> None:
        """An item was served: count the previous one as done."""
        if self._pending:
            self._tqdm.update(1)
        self._pending = True

    def set_total(self, total: int | None) -> None:
        if self._auto_total and self._tqdm.total != total:
            self._tqdm.total = total

    def close(self) -> None:
        """Count the last item and close the bar (it prints its final state)."""
        if self._pending:
            self._tqdm.update(1)
            self._pending = False
        self._tqdm.close()


def loop_total(
    iteration: int,
    epoch: int,
    epoch_left: float | None,
    max_epoch: float,
    per_epoch: int | None,
) -> int | None:
    """Items served so far plus the items a loop still has to serve; None when unknown.

    `epoch_left` is what the epoch in progress still has to serve (None: none in progress,
    ``inf``: no limit); `per_epoch` is the size of the epochs to come (None: unknown).
    """
    left = epoch_left or 0
    epochs_left = max_epoch - epoch
    if epochs_left > 0:
        left += math.inf if per_epoch is None else epochs_left * per_epoch
    return None if left == math.inf else iteration + int(left)
