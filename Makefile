# Set-up and the two commands the README starts with: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
EXTRAS ?= cpu,test

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

demo: install
	PATH="$(CURDIR)/$(BIN):$$PATH" bash train_multitask.sh

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: install
	for b in bench_training bench_finetune bench_predict bench_serve bench_distributed; do \
	  $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) results *.egg-info
