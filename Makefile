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

test: install lint
	$(BIN)/python -m pytest -q -rs tests  # -rs: each skipped test says why in the summary
	$(MAKE) bench-smoke

# ruff with the small rule set of ruff.toml: unused and undefined names, syntax errors, mutable defaults
lint: install
	$(BIN)/ruff check multitask_mx tests benchmarks examples

test-fast: install lint
	$(BIN)/python -m pytest -q -rs -m "not slow" tests

# the full runs (about an hour on 2 quiet cores), then docs/benchmarks.md (and the README's figures) from their results
bench: install
	for b in $(BENCHES); do $(BIN)/python $$b || exit 1; done
	$(BIN)/python benchmarks/report.py

# every benchmark for a few seconds, so that none breaks unnoticed (CI runs it after the tests)
bench-smoke: install
	for b in $(BENCHES); do echo "== $$b --smoke"; start=$$(date +%s); \
	  $(BIN)/python $$b --smoke > /dev/null || exit 1; echo "   $$(( $$(date +%s) - start )) s"; done

bench-report: install
	$(BIN)/python benchmarks/report.py

clean:
	rm -rf $(VENV) results *.egg-info
