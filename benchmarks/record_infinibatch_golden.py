"""Records infinibatch 0.1.1's outputs that tests/iterators/test_seed_order.py compares ours with.

The cases are tests/iterators/seed_cases.py, shared with the test. Run in the bench set-up, where
the peers are installed (never in the test set-up):
    .venv-bench/bin/python benchmarks/record_infinibatch_golden.py > tests/iterators/infinibatch_golden.json
"""

import json
import sys
from pathlib import Path

import infinibatch.datasets
import infinibatch.iterators

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "iterators"))
from seed_cases import run_all

if __name__ == "__main__":
    recorded = {"_source": "infinibatch 0.1.1, benchmarks/record_infinibatch_golden.py"}
    recorded.update(run_all(infinibatch.iterators, infinibatch.datasets))
    print(json.dumps(recorded, indent=1))
