"""Kill a consumer 0-10 ms after it starts the workers of a pipeline, many times over, then
report the processes of ours still alive 5 s after the last kill.

Usage: ``python orphans.py METHOD KIND TRIALS SEED``, with KIND ``prefetch`` (one worker) or
``parallel_map`` (two workers). This process makes itself a child subreaper, so every orphan
of a killed consumer becomes its child and can be found; it prints one JSON line:
``{"trials": n, "left": [pid, ...]}``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from tests.iterators.workload import parallel_map_of, prefetch_of  # imported once, before forks

from checkpointable.testing._processes import become_subreaper, outlived, reap

GRACE_SECONDS = 5.0


def consume(method: str, kind: str, ready: int) -> None:
    """In a forked consumer: build the pipeline, say so, and start its workers."""
    pipeline = prefetch_of(method) if kind == "prefetch" else parallel_map_of(method, processes=2)
    os.write(ready, b"x")
    next(pipeline)  # starts the workers; the kill comes meanwhile or soon after
    time.sleep(60)


def main() -> None:
    method, kind, trials, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if not become_subreaper():
        raise SystemExit("cannot become a child subreaper: orphans could not be found")
    chance = random.Random(seed)
    for _ in range(trials):
        ready, told = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready)
            try:
                consume(method, kind, told)
            finally:
                os._exit(0)
        os.close(told)
        os.read(ready, 1)
        os.close(ready)
        time.sleep(chance.uniform(0.0, 0.010))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reap()
    left = outlived(GRACE_SECONDS)  # and killed: nothing is left for the next test
    print(json.dumps({"trials": trials, "left": sorted(left)}))


if __name__ == "__main__":
    main()
