# The two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# OpenMP threads that spin-wait lose ~20x when another process shares the 2 cores
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo demo-modelnet40 test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned here (the CPU wheel, constraints.txt); the package itself declares a
	# range. An unpinned torch would pull the CUDA stack.
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pointkd demo --out runs/demo

# ModelNet40 (HDF5 folder): a student distilled from the zoo's record set vs the same student
# without KD, the measured 100-epoch recipe: ~1 h on 2 cores.
# Usage: make demo-modelnet40 DATA=../shared/data/modelnet40_1024
demo-modelnet40: $(STAMP)
	@test -n "$(DATA)" || { echo "usage: make demo-modelnet40 DATA=path/to/modelnet40_1024"; exit 2; }
	$(VENV)/bin/pointkd demo --data "$(DATA)" --out runs/demo_modelnet40

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
