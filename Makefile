# Set-up and the two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
EXTRAS ?= cpu,test

.PHONY: install demo lint test test-fast bench bench-smoke bench-report clean

# every benchmark script; each accepts --smoke (seconds of work, result in benchmarks/results/smoke/)
BENCHES = $(sort $(wildcard benchmarks/bench_*.py))

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash train_multitask.sh

# The tests run in one process per core, each test file in one process (its module fixtures, such as a run
# trained once for several tests, are made once). OMP_WAIT_POLICY=PASSIVE: two processes share the cores, and
# OpenMP's spinning threads would take them from each other. -rs: each skipped test says why in the summary.
PYTEST = OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q -rs -n auto --dist loadfile
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

test: install lint
	$(PYTEST) tests
	$(MAKE) bench-smoke

# ruff with the small rule set of ruff.toml: unused and undefined names, syntax errors, mutable defaults
lint: install
	$(BIN)/ruff check multitask_mx tests benchmarks examples

test-fast: install lint
	$(PYTEST) -m "not slow" tests

# the full runs (about an hour on 2 quiet cores), then docs/benchmarks.md (and the README's figures) from their results
bench: install
	for b in $(BENCHES); do $(BIN)/python $$b || exit 1; done
	$(BIN)/python benchmarks/report.py

# every benchmark for a few seconds, so that none breaks unnoticed (CI runs it after the tests), JOBS at a time
bench-smoke: install
	printf '%s\n' $(BENCHES) | xargs -P $(JOBS) -I{} sh -c 'start=$$(date +%s); \
	  if $(BIN)/python {} --smoke > /dev/null; then echo "== {} --smoke: $$(( $$(date +%s) - start )) s"; \
	  else echo "== {} --smoke FAILED" >&2; exit 255; fi'

bench-report: install
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) results *.egg-info
