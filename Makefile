# The two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# OpenMP threads that spin-wait lose ~20x when another process shares the 2 cores
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (CPU wheel); an unpinned torch would pull the CUDA stack.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pointkd demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
