"""Failures surface clearly, nothing hangs, and no process, thread or shared memory is left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from torch.utils.data import SequentialSampler

import checkpointable
from checkpointable import ArgumentValueError
from checkpointable._loader.state_layout import long_form
from checkpointable.dataloader import StatefulDataLoader
from tests._loader_data import Faulty, Sleepy, Squares, failing_init, unpicklable_collate
from tests.leaks import alive, child_pids, eventually, no_leaks_of_ours

# ---------------------------------------------------------------- errors from workers


@pytest.mark.timeout(60)
@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_exception_carries_the_worker_traceback(num_workers: int, no_leaks: None) -> None:
    loader = StatefulDataLoader(Faulty(12), batch_size=2, num_workers=num_workers)
    pattern = r"item 7 is broken"
    if num_workers:
        pattern = r"(?s)Caught ValueError in DataLoader worker process 1\.\nOriginal Traceback.*"
        pattern += r"in __getitem__.*item 7 is broken"
    batches = iter(loader)
    got = []
    with pytest.raises(ValueError, match=pattern):
        for batch in batches:
            got.append(batch)
    assert len(got) == 3
    rest = list(batches)  # as torch: the failed batch is skipped, the epoch goes on
    assert [int(i) for b in got + rest for i in b[0]] == [0, 1, 2, 3, 4, 5, 8, 9, 10, 11]
    del batches, loader


@pytest.mark.timeout(60)
def test_a_failing_worker_init_fn_is_reported(no_leaks: None) -> None:
    loader = StatefulDataLoader(
        Squares(8), batch_size=2, num_workers=2, worker_init_fn=failing_init
    )
    with pytest.raises(RuntimeError, match=r"(?s)worker process 0.*worker 0 cannot start"):
        list(loader)
    del loader


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [False, True])
def test_a_failing_worker_init_fn_is_raised_by_iter_as_torchdata(
    persistent: bool, no_leaks: None
) -> None:
    loader = StatefulDataLoader(
        Squares(8),
        batch_size=2,
        num_workers=2,
        worker_init_fn=failing_init,
        persistent_workers=persistent,
    )
    pattern = r"(?s)Caught RuntimeError in DataLoader worker process 0\..*worker 0 cannot start"
    with pytest.raises(RuntimeError, match=pattern):
        iter(loader)  # not at the first next()
    del loader


@pytest.mark.timeout(60)
def test_a_batch_that_cannot_be_pickled_is_an_error_not_a_hang(no_leaks: None) -> None:
    loader = StatefulDataLoader(
        Squares(8), batch_size=2, num_workers=1, collate_fn=unpicklable_collate
    )
    with pytest.raises(Exception, match="while pickling its batch"):
        next(iter(loader))
    loader.close()


@pytest.mark.timeout(60)
def test_an_unpicklable_dataset_under_spawn_fails_with_a_hint(no_leaks: None) -> None:
    loader = StatefulDataLoader(
        Squares(4), num_workers=1, collate_fn=lambda items: items, multiprocessing_context="spawn"
    )
    with pytest.raises(
        TypeError,
        match=r"the dataset, collate_fn and worker_init_fn must be picklable to be sent to a "
        r"'spawn' worker process, but pickling failed: .*module level",
    ):
        iter(loader)


@pytest.mark.timeout(60)
def test_a_worker_killed_mid_epoch_raises_promptly_and_leaves_nothing() -> None:
    killed: set[int] = set()
    with no_leaks_of_ours(killed=killed):
        before = child_pids()
        loader = StatefulDataLoader(Sleepy(200, 0.01), batch_size=2, num_workers=2)
        batches = iter(loader)
        next(batches)
        workers = child_pids() - before
        assert len(workers) == 2
        killed.add(min(workers))
        os.kill(min(workers), signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(
            RuntimeError,
            match=r"DataLoader worker \(pid \d+\) is killed by signal: Killed\. It was worker "
            r"\d, killed by SIGKILL\. The out-of-memory killer",
        ):
            for _ in batches:
                pass
        assert time.monotonic() - start < 10  # about a second: the liveness check interval
        assert list(batches) == []
        del batches, loader


@pytest.mark.timeout(60)
def test_timeout_raises_and_stops_the_workers(no_leaks: None) -> None:
    loader = StatefulDataLoader(Sleepy(4, 5.0), batch_size=1, num_workers=1, timeout=0.5)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0.5 seconds"):
        next(iter(loader))
    assert time.monotonic() - start < 4
    loader.close()


@pytest.fixture
def interruptible() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt here and in the workers, as in a terminal, even where the
    suite runs as a background job (which inherits SIGINT ignored, and so would its workers)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(60)
def test_persistent_workers_that_died_between_epochs_are_replaced(
    interruptible: None, no_leaks: None
) -> None:
    before = child_pids()
    loader = StatefulDataLoader(Squares(10), batch_size=2, num_workers=2, persistent_workers=True)
    assert len(list(loader)) == 5
    workers = child_pids() - before
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGINT)  # as a Ctrl-C that reached the whole process group
    assert eventually(lambda: not any(alive(pid) for pid in workers))
    assert len(list(loader)) == 5
    loader.close()


# ---------------------------------------------------------------- leaks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("persistent", [False, True])
def test_deleting_the_loader_mid_epoch_stops_everything(persistent: bool, no_leaks: None) -> None:
    loader = StatefulDataLoader(
        Squares(50), batch_size=2, num_workers=2, persistent_workers=persistent
    )
    batches = iter(loader)
    next(batches)
    assert len(child_pids()) >= 2
    del batches, loader  # the no_leaks fixture checks that the workers are gone


@pytest.mark.timeout(60)
def test_an_exception_in_the_training_loop_stops_the_workers(no_leaks: None) -> None:
    before = child_pids()
    loader = StatefulDataLoader(Squares(50), batch_size=2, num_workers=2)

    def train() -> None:
        for step, _ in enumerate(loader):
            if step == 3:
                raise KeyError("loss is nan")

    with contextlib.suppress(KeyError):
        train()
    assert eventually(lambda: child_pids() <= before)  # the loop's iterator was collected
    state = loader.state_dict()
    assert long_form(state)["batches"] == 4 and long_form(state)["in_epoch"]


@pytest.mark.timeout(60)
def test_a_new_epoch_and_load_state_dict_stop_the_previous_epochs_workers(no_leaks: None) -> None:
    loader = StatefulDataLoader(Squares(50), batch_size=2, num_workers=2)
    first = iter(loader)
    next(first)
    state = loader.state_dict()
    second = iter(loader)  # the previous epoch is abandoned
    next(second)
    assert list(first) == []
    loader.load_state_dict(state)
    assert list(second) == []
    assert int(next(iter(loader))[0][0]) == 2
    loader.close()
    del first, second, loader


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["exit", "interrupt", "killed"])
def test_workers_go_away_when_the_main_process_exits_is_interrupted_or_killed(how: str) -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from pathlib import Path
        from checkpointable.dataloader import StatefulDataLoader
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
        loader = StatefulDataLoader(
            list(range(10000)), batch_size=2, num_workers=2, persistent_workers=True
        )
        batches = iter(loader)
        next(batches)
        tasks = Path(f"/proc/{os.getpid()}/task").iterdir()
        children = [p for t in tasks for p in (t / "children").read_text().split()]
        print(" ".join(children), flush=True)
        how = sys.argv[1]
        if how == "killed":
            os.kill(os.getpid(), signal.SIGKILL)
        if how == "interrupt":
            for batch in batches:
                time.sleep(0.01)
        """
    )
    src = str(Path(checkpointable.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    child = subprocess.Popen(
        [sys.executable, "-c", script, how],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    workers = [int(p) for p in child.stdout.readline().split()]
    assert len(workers) == 2, child.stderr.read() if child.stderr else ""
    if how == "interrupt":
        child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=60)
    if how == "interrupt":
        assert "KeyboardInterrupt" in stderr
    assert eventually(lambda: not any(alive(pid) for pid in workers), 15), stderr


# ---------------------------------------------------------------- arguments


def test_torchs_argument_checks_and_messages_are_kept() -> None:
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        StatefulDataLoader(range(3), shuffle=True, sampler=SequentialSampler(range(3)))
    with pytest.raises(ValueError, match="num_workers option should be non-negative"):
        StatefulDataLoader(range(3), num_workers=-1)
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        StatefulDataLoader(range(3), batch_size=0)
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        StatefulDataLoader(range(3), persistent_workers=True)
    with pytest.raises(ValueError, match="prefetch_factor option could only be specified"):
        StatefulDataLoader(range(3), prefetch_factor=2)


def test_our_own_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match=r"snapshot_every_n_steps must be >= 0 or None, got snap"):
        StatefulDataLoader(range(3), snapshot_every_n_steps=-1)
    with pytest.raises(TypeError, match=r"snapshot_every_n_steps must be an int or None, got '2'"):
        StatefulDataLoader(range(3), snapshot_every_n_steps="2")  # type: ignore[arg-type]
    loader = StatefulDataLoader(range(3), timeout=1.0)
    with pytest.raises(ArgumentValueError, match=r"timeout=1.0 needs num_workers > 0"):
        iter(loader)
    with pytest.raises(AssertionError):  # what torch raises there
        iter(loader)
    assert "snapshot_every_n_steps=1" in repr(StatefulDataLoader(range(3)))


@pytest.mark.timeout(60)
def test_pinning_runs_in_a_thread_with_workers(
    monkeypatch: pytest.MonkeyPatch, no_leaks: None
) -> None:
    pinned: list[int] = []

    def fake_pin(data: Any, device: Any = None) -> Any:
        pinned.append(threading.get_ident())
        return data

    import checkpointable._loader.epochs as loader_module
    import checkpointable._loader.pool as pool_module

    monkeypatch.setattr(loader_module, "pin_device", lambda loader: "fake")
    monkeypatch.setattr(pool_module, "pin_memory", fake_pin)
    monkeypatch.setattr(loader_module, "pin_memory", fake_pin)
    for workers in (0, 2):
        loader = StatefulDataLoader(Squares(9), batch_size=2, num_workers=workers, pin_memory=True)
        assert len(list(loader)) == 5
        loader.close()
    assert len(pinned) == 10
    assert pinned[0] == threading.get_ident() and pinned[-1] != threading.get_ident()
