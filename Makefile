# The two commands of a fresh clone (see README): `make demo` and `make test`.
# Both create .venv (once) with the pins of constraints.txt, so nothing needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The benchmarks' own environment: the peers (torchdata, infinibatch) are installed there only.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
# mosaic streaming needs numpy<2.2 (against constraints.txt): its own small environment, which
# benchmarks/bench_sources.py runs in a subprocess (benchmarks/mosaic_peer.py).
MOSAIC_VENV := .venv-mosaic
MOSAIC_STAMP := $(MOSAIC_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck pytest bench torture soak fuzz clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/checkpointable demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml constraints.txt benchmarks/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -c constraints.txt -e . -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

$(MOSAIC_STAMP): benchmarks/requirements-mosaic.txt
	test -x $(MOSAIC_VENV)/bin/python || $(PYTHON) -m venv $(MOSAIC_VENV)
	$(MOSAIC_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MOSAIC_VENV)/bin/python -m pip install --quiet -r benchmarks/requirements-mosaic.txt
	touch $(MOSAIC_STAMP)

bench: $(BENCH_STAMP) $(MOSAIC_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/run_all.py --update-readme

# The long proofs (docs/guarantees.md): 500 SIGKILLs across the configurations, a 30-minute
# soak, 1000 mutated states per stateful class.
torture: $(STAMP)
	$(BIN)/python -m checkpointable.testing.torture --kills 500

soak: $(STAMP)
	$(BIN)/python -m checkpointable.testing.soak --minutes 30

fuzz: $(STAMP)
	CHECKPOINTABLE_FUZZ_EXAMPLES=1000 $(BIN)/python -m pytest -q tests/test_state_fuzz.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(MOSAIC_VENV) .pytest_cache .mypy_cache .ruff_cache
