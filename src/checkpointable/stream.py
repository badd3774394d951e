"""zero's `Stream`: a training loop's epochs, iterations and progress bar, resumable from one state.

`Stream` wraps a data loader (any iterable) and runs the loop people write by hand in every
training script::

    stream = Stream(loader)
    for epoch in stream.epochs(max_epoch):     # stream.epoch: 1, 2, ..., max_epoch
        for batch in epoch:                    # stream.iteration: 1, 2, ... over the whole run
            ...

Underneath is one endless iterator that only moves forward, ``while True: for item in loader:``,
cut into epochs of `len(loader)` items or of any custom size. When the loader is stateful (our
`StatefulDataLoader`, our iterators, anything with ``state_dict`` / ``load_state_dict``),
``stream.state_dict()`` is enough to resume the whole loop in a new process at exactly the next
batch, mid-epoch or at an epoch end; with a stateless loader it holds the two counters, as in zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ._checks import short_repr
from ._state import StateBase, Stateful
from ._stream.checks import check_count, check_loader, loader_len, try_len
from ._stream.items import DataItems, EpochItems
from ._stream.progress import LoopBar, bar_options, loop_total
from ._stream.state import Position, read_state, write_state

__all__ = ["Stream"]

_DEFAULT_BAR_OPTIONS: Mapping[str, Any] = MappingProxyType({})  # the seed's default: a bar


class Stream:
    """Smart wrapper for data loaders and iterables: epochs, iterations, a progress bar, one state.

    The stream holds one iterator, ``iter(loader)``, created on the first `next`; when it is
    exhausted the stream takes ``iter(loader)`` again, exactly like ``while True: for item in
    loader:``. A loader that is an iterator (``iter(it) is it``) therefore ends the stream when
    its items are over: `next` raises `StopIteration`, `data` stops and `epochs` ends its loop.

    The low-level loops of the seed work too::

        while stream.epoch < max_epoch:             # (A)
            stream.increment_epoch()
            for batch in stream.data():
                ...

        while stream.epoch < max_epoch:             # (B)
            stream.increment_epoch()
            for _ in range(len(stream.loader)):
                batch = stream.next()

        for batch in stream.data(float('inf')):     # endless
            if stream.iteration % frequency == 0:
                ...

    To resume, save ``stream.state_dict()`` with the model; in the new process build the stream
    over an identically configured loader, call `load_state_dict` and run the same `epochs` loop:
    it continues the interrupted epoch with exactly the next batch (see the example below). The
    low-level loops get the counters and the data position back (the next `next` returns the
    next batch), but their epochs live in the caller's code: resumed mid-epoch, loop (A) or (B)
    calls `increment_epoch` again and starts a new epoch.

    Args:
        loader: any iterable (a DataLoader, a list, an iterator, a generator...).

    Raises:
        TypeError: `loader` is not iterable.
        ArgumentValueError: `loader` has a length and it is 0 (a `ValueError` that is also the
            seed's `AssertionError`).

    State: with a stateful loader (one with ``state_dict`` and ``load_state_dict``),
    ``{"type": "Stream", "version", "epoch", "iteration", "in_epoch", "epoch_items",
    "epoch_size", "epoch_aligned", "iterating", "data_over", "loader_type", "loader"}``: the
    counters, the epoch of `epochs` in progress (items taken, size, whether it began with a pass
    of the loader: then, with epochs sized by the loader, the end of that pass ends it), whether
    the stream holds an ``iter(loader)``, whether the data is over, and ``loader.state_dict()``.
    Restoring costs what the loader's ``load_state_dict`` costs (nothing is replayed by the
    stream). The loader's ``state_dict()`` must describe the position of its latest ``iter()``,
    and its first ``iter()`` after ``load_state_dict`` must continue from there: torchdata's
    semantics, which our `StatefulDataLoader` and iterators follow. With a stateless loader,
    ``{"epoch", "iteration"}`` only, as in the seed: loading it
    restores the counters, not the position in the data (see `load_state_dict`).

    >>> stream = Stream(range(3))
    >>> for epoch in stream.epochs(2, progress_bar=False):
    ...     print(stream.epoch, [(stream.iteration, x) for x in epoch])
    1 [(1, 0), (2, 1), (3, 2)]
    2 [(4, 0), (5, 1), (6, 2)]

    Resuming in the middle of an epoch, over a stateful loader with 10 items:

    >>> from checkpointable.iterators import NativeCheckpointableIterator
    >>> stream = Stream(NativeCheckpointableIterator(range(10)))
    >>> epoch = next(stream.epochs(3, 4, progress_bar=False))
    >>> next(epoch), next(epoch)
    (0, 1)
    >>> state = stream.state_dict()
    >>> resumed = Stream(NativeCheckpointableIterator(range(10)))
    >>> resumed.load_state_dict(state)
    >>> [(resumed.epoch, list(e)) for e in resumed.epochs(3, 4, progress_bar=False)]
    [(1, [2, 3]), (2, [4, 5, 6, 7]), (3, [8, 9])]
    """

    def __init__(self, loader: Iterable[Any]) -> None:
        self._loader: Iterable[Any] = check_loader(loader, "Stream")
        self._stateful = isinstance(loader, Stateful)
        self._epoch = 0
        self._iteration = 0
        self._iterator: Iterator[Any] | None = None  # iter(loader), created on the first next()
        # A state was loaded from a stream that held an iterator: the loader's next iter()
        # continues that iterator (torchdata's semantics), and is taken on the first next().
        self._resuming = False
        self._epoch_start: int | None = None  # iteration where the epoch of epochs() in
        self._epoch_size: int | None = None  # progress started, and its size (None: no limit)
        self._epoch_id = 0  # changes when an epoch opens or a state loads: stale epochs stop
        self._data_over = False  # the last next() found no item even after iter(loader) again
        self._bar: LoopBar | None = None  # the progress bar of the running epochs() loop
        self._from_new_pass = False  # the last next() took the first item of an iter(loader)
        self._epoch_aligned = False  # the epoch in progress began with a pass of the loader
        self._epoch_restored = False  # the epoch in progress came from load_state_dict

    @property
    def epoch(self) -> int:
        """Current epoch: the number of `increment_epoch` calls (``epochs`` makes them)."""
        return self._epoch

    @property
    def iteration(self) -> int:
        """Current iteration: the number of items served by `next` so far."""
        return self._iteration

    @property
    def loader(self) -> Iterable[Any]:
        """The underlying loader."""
        return self._loader

    def set_loader(self, loader: Iterable[Any]) -> None:
        """Replace the loader, at any moment, even in the middle of an epoch.

        The next item comes from the new loader (from ``iter(loader)``, taken now if the stream
        had already started, else on the first `next`); the counters and the epoch in progress
        go on. From now on `state_dict` holds the new loader's state.

        Raises:
            TypeError: `loader` is not iterable.
            ArgumentValueError: `loader` has a length and it is 0.

        >>> from itertools import repeat
        >>> stream = Stream(repeat("a"))
        >>> items = []
        >>> for x in stream.data(4):
        ...     items.append(x)
        ...     if stream.iteration == 2:
        ...         stream.set_loader(repeat("b"))
        >>> items
        ['a', 'a', 'b', 'b']
        """
        self._loader = check_loader(loader, "Stream.set_loader")
        self._stateful = isinstance(loader, Stateful)
        self._data_over = False
        if self._iterator is not None or self._resuming:
            self._iterator = iter(loader)
        self._resuming = False

    def increment_epoch(self) -> None:
        """Add one to `epoch` (`epochs` does it at the start of each epoch).

        >>> stream = Stream(range(5))
        >>> stream.increment_epoch()
        >>> stream.epoch
        1
        """
        self._epoch += 1

    def reload_iterator(self) -> None:
        """Set the underlying iterator to ``iter(self.loader)`` now.

        With a loader that restarts on each ``iter()`` this skips the rest of its current pass;
        with an iterator loader (``iter(it) is it``) it changes nothing. Right after
        `load_state_dict` it first takes and drops the iterator that continues the loaded
        position, so that a stateful loader starts a new pass as in the uninterrupted run.

        >>> stream = Stream(range(5))
        >>> stream.next(), stream.next()
        (0, 1)
        >>> stream.reload_iterator()
        >>> stream.next()
        0
        """
        self._reload()

    def _reload(self) -> Iterator[Any]:
        """`reload_iterator`, returning the new iterator."""
        if self._resuming:  # the saved stream's iterator, continued, is the one to replace
            iter(self._loader)
            self._resuming = False
        iterator = self._iterator = iter(self._loader)
        self._data_over = False
        return iterator

    def next(self) -> Any:
        """Return the next item and add one to `iteration`.

        When the current ``iter(loader)`` is exhausted, the stream takes ``iter(loader)`` again
        and returns its first item: the stream is endless over any loader that restarts.

        Raises:
            StopIteration: the loader yields nothing even after ``iter(loader)`` again (an
                iterator whose items are over); `iteration` is unchanged.

        >>> stream = Stream(range(3))
        >>> [stream.next() for _ in range(4)], stream.iteration
        ([0, 1, 2, 0], 4)
        """
        try:
            return self._next_in_pass()
        except StopIteration:
            pass
        item = self._next_pass()
        self._from_new_pass = True
        self._count_item()
        return item

    def _next_in_pass(self) -> Any:
        """As `next`, but at the end of the loader's current pass raise `StopIteration` and leave
        the next ``iter(loader)`` to the next `next`."""
        iterator = self._iterator
        self._from_new_pass = iterator is None and not self._resuming
        if iterator is None:
            iterator = self._iterator = iter(self._loader)
            self._resuming = False
        try:
            item = next(iterator)
        except StopIteration:
            self._iterator = None
            raise
        self._count_item()
        return item

    def _count_item(self) -> None:
        self._iteration += 1
        if self._bar is not None:
            self._bar.step()

    def _next_pass(self) -> Any:
        """The first item of a new ``iter(loader)``, or raise `StopIteration`: the data is over."""
        iterator = self._reload()
        try:
            return next(iterator)
        except StopIteration:
            self._data_over = True
            raise StopIteration(
                f"Stream.next: the loader ({type(self._loader).__name__}) yields no item, even "
                "after iter(loader) again: its data is over"
            ) from None

    def data(self, n_items: int | float | None = None) -> Iterator[Any]:
        """Iterate over the next `n_items` items (each taken with `next`).

        The stream does not start over: consecutive calls continue where the last one stopped.

        Args:
            n_items: how many items; None means ``len(self.loader)``, ``float('inf')`` no limit.

        Raises:
            TypeError: `n_items` is not an int, ``float('inf')`` or None.
            ArgumentValueError: `n_items` is a finite float, nan or negative (a `ValueError`
                that is also the seed's `AssertionError`).
            ValueError: `n_items` is None and the loader has no ``len()``.

        >>> stream = Stream(range(5))
        >>> list(stream.data()), list(stream.data(3)), list(stream.data(3))
        ([0, 1, 2, 3, 4], [0, 1, 2], [3, 4, 0])
        """
        if n_items is None:
            size: int | None = loader_len(self._loader, "Stream.data", "n_items")
        else:
            size = check_count(n_items, "Stream.data", "n_items", 0)
        return DataItems(self, size)

    def epochs(
        self,
        max_epoch: int | float,
        epoch_size: int | float | None = None,
        progress_bar_config: Mapping[str, Any] | None = _DEFAULT_BAR_OPTIONS,
        *,
        progress_bar: bool | None = None,
        progress_bar_options: Mapping[str, Any] | None = _DEFAULT_BAR_OPTIONS,
    ) -> Iterator[Iterator[Any]]:
        """Iterate over epochs, each an iterator over its items; the whole loop has one bar.

        Equivalent to ``while stream.epoch < max_epoch: stream.increment_epoch(); yield
        stream.data(epoch_size)``, so `epoch` is 1 during the first epoch, plus:

        - after `load_state_dict` with a state saved in the middle of an epoch, the first epoch
          is the rest of that epoch (same `epoch`, the items it still had to serve), so a
          resumed loop continues exactly; an epoch left with ``break`` ends when the loop moves
          to the next epoch, and within one process a new `epochs` loop always starts a new
          epoch, as in zero (an epoch that an earlier loop left unfinished is over);
        - the loop ends early when the data is over (an iterator loader ran out of items);
        - a tqdm progress bar counts the items of the whole loop, starts at `iteration` (so
          after a resume it shows the restored position) and has for total the items still to
          come (unknown with an endless epoch or loop, or an unsized loader). An item counts as
          done when the next one is asked for, and the bar closes when the loop ends.

        Args:
            max_epoch: run while ``self.epoch < max_epoch``; an int >= 0 or ``float('inf')``.
            epoch_size: items per epoch: an int >= 1, ``float('inf')``, or None for
                ``len(self.loader)`` (taken at the start of each epoch, so it follows
                `set_loader`).
            progress_bar_config: keyword arguments for ``tqdm`` (``file``, ``desc``,
                ``mininterval``, ...), zero's name; ``initial`` and ``total`` are computed
                unless given. None turns the bar off, as in the seed.
            progress_bar: True shows the bar wherever it writes, False turns it off, None
                (default) shows it in a ``file`` named by `progress_bar_config` (as zero does)
                and on ``sys.stderr`` only when it is a terminal, so logs redirected to files
                stay clean (pass True in a notebook).
            progress_bar_options: another name of `progress_bar_config` (the keyword of
                earlier versions of this package); give only one of the two.

        Raises:
            TypeError: `max_epoch` or `epoch_size` is not an int or ``float('inf')``, a
                progress bar argument has the wrong type, or both `progress_bar_config` and
                `progress_bar_options` are given.
            ArgumentValueError: `max_epoch` < 0, `epoch_size` < 1, or either a finite float.
            ValueError: `epoch_size` is None and the loader has no ``len()``; contradictory
                progress bar arguments.

        >>> stream = Stream(range(3))
        >>> for epoch in stream.epochs(3, 2, progress_bar=False):
        ...     print(stream.epoch, list(epoch))
        1 [0, 1]
        2 [2, 0]
        3 [1, 2]
        """
        owner = "Stream.epochs"
        epochs_limit = check_count(max_epoch, owner, "max_epoch", 0)
        size = None if epoch_size is None else check_count(epoch_size, owner, "epoch_size", 1)
        if epoch_size is None:
            loader_len(self._loader, owner, "epoch_size")
        if progress_bar_options is not _DEFAULT_BAR_OPTIONS:
            if progress_bar_config is not _DEFAULT_BAR_OPTIONS:
                raise TypeError(
                    f"{owner}: progress_bar_options is another name of progress_bar_config; "
                    "give only one of them"
                )
            progress_bar_config = progress_bar_options
        options = bar_options(progress_bar, progress_bar_config, owner)
        return self._run_epochs(epochs_limit, epoch_size is None, size, options)

    def _run_epochs(
        self,
        max_epoch: int | None,
        size_from_loader: bool,
        size: int | None,
        options: dict[str, Any] | None,
    ) -> Iterator[Iterator[Any]]:
        limit = math.inf if max_epoch is None else max_epoch
        bar = None
        restored, self._epoch_restored = self._epoch_restored, False
        try:
            if self._epoch_start is not None and (not restored or self._epoch > limit):
                # Only a loop that follows load_state_dict continues the epoch in progress
                # (unless resumed with a smaller max_epoch): within one process, a new loop
                # starts a new epoch, as zero's does.
                self._epoch_start = None
            if options is not None:
                self._stop_bar()  # the bar of an earlier loop that was left unfinished
                total = self._total(limit, size_from_loader, size)
                bar = self._bar = LoopBar(options, self._iteration, total)
            while True:
                if self._epoch_start is None:
                    if self._data_over or self._epoch >= limit:
                        return
                    if size_from_loader:
                        size = loader_len(self._loader, "Stream.epochs", "epoch_size")
                    self._epoch += 1
                    self._epoch_start, self._epoch_size = self._iteration, size
                    self._epoch_id += 1
                    if bar is not None:
                        bar.set_total(self._total(limit, size_from_loader, size))
                epoch_id = self._epoch_id
                yield EpochItems(self, epoch_id, pass_ends_epoch=size_from_loader)
                if self._epoch_id == epoch_id:  # left with break: the epoch ends here
                    self._epoch_start = None
        finally:
            if bar is not None and self._bar is bar:
                self._stop_bar()

    def _stop_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def _total(self, limit: float, size_from_loader: bool, size: int | None) -> int | None:
        epoch_left: float | None = None
        start = self._epoch_start
        if start is not None:
            epoch_size = math.inf if self._epoch_size is None else self._epoch_size
            epoch_left = epoch_size - (self._iteration - start)
        per_epoch = try_len(self._loader) if size_from_loader else size
        return loop_total(self._iteration, self._epoch, epoch_left, limit, per_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Return the state of the loop as plain data (for `torch.save`, json, ...).

        With a stateful loader the state is complete: a fresh stream over a freshly built,
        identically configured loader that loads it serves exactly the items that would have
        come next, and a fresh `epochs` loop continues the interrupted epoch. With a stateless
        loader it is the seed's ``{"epoch", "iteration"}``.

        Raises:
            TypeError: the loader's ``state_dict()`` is not plain data.

        >>> stream = Stream(range(10))
        >>> stream.next(), stream.next()
        (0, 1)
        >>> stream.increment_epoch()
        >>> stream.state_dict()
        {'epoch': 1, 'iteration': 2}
        """
        position = Position(
            self._epoch,
            self._iteration,
            full=self._stateful,
            epoch_start=self._epoch_start,
            epoch_size=self._epoch_size,
            iterating=self._iterator is not None or self._resuming,
            data_over=self._data_over,
            epoch_aligned=self._epoch_aligned,
        )
        return write_state(position, self._loader)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state returned by `state_dict`.

        With a stateful loader the loader's state is loaded too, and the next item is the one
        that followed when the state was saved. With a stateless loader only the counters are
        set, as in the seed: the data goes on from wherever the stream's iterator is (from the
        loader's start in a fresh stream), so a resumed run sees other batches than the
        uninterrupted one would have; give the stream a stateful loader to resume exactly.

        Raises:
            IncompatibleStateError: the state was saved by a stream over another kind of loader
                (stateful and stateless, or another class), or is not a state of `Stream`.

        >>> stream = Stream(range(10))
        >>> stream.load_state_dict({"epoch": 1, "iteration": 5})
        >>> stream.epoch, stream.iteration, stream.next()
        (1, 5, 0)
        """
        position = read_state(state_dict, self._loader, self._stateful)
        if position.full:
            StateBase.load_nested(self._loader, position.loader)
            self._iterator = None  # the next iter(loader) continues from the loaded position
            self._resuming = position.iterating
            self._data_over = position.data_over
        self._epoch, self._iteration = position.epoch, position.iteration
        self._epoch_start, self._epoch_size = position.epoch_start, position.epoch_size
        self._epoch_aligned = position.epoch_aligned
        self._epoch_restored = position.epoch_start is not None
        self._epoch_id += 1  # epochs of an earlier loop stop

    def __repr__(self) -> str:
        loader = short_repr(self._loader, 60)
        return f"Stream({loader}, epoch={self._epoch}, iteration={self._iteration})"
