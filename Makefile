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

# Lint, the suite, then the float comparisons and bit-exact kernel claims (-m numerics, under
# a minute each) again on other CPU kernels: ATen's scalar `default` ones and AVX2 ones, MKL's
# and oneDNN's GEMMs at SSE4.2 and AVX2 (other blocking, other summation orders), so that a
# tolerance or a bit-exact claim that holds only for this CPU's kernels fails here.
test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench zoo
	$(PY) -m pytest
	ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 ONEDNN_MAX_CPU_ISA=SSE41 \
		$(PY) -m pytest -m numerics
	ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 \
		$(PY) -m pytest -m numerics

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench zoo

clean:
	rm -rf runs .pytest_cache .ruff_cache .hypothesis
