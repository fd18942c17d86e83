# `make demo` sets everything up and trains the quickstart population end to end;
# `make test` checks the lint (ruff, the import-linter layer contract) and runs the test suite.
# Both work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test lint bench clean

$(BIN)/rashomon: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/rashomon

demo: install
	$(BIN)/rashomon run jobs/quickstart.yaml --out results/quickstart
	$(BIN)/rashomon status results/quickstart
	$(BIN)/rashomon analyze results/quickstart
	$(BIN)/rashomon report results/quickstart
	$(BIN)/python -c "import pandas as pd; \
	p = pd.read_parquet('results/quickstart/predictions', filters=[('split', '==', 'test')]); \
	print(p.head()); print(len(p), 'test predictions')"

test: lint
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

bench: install
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_flatness.py
	$(BIN)/python benchmarks/bench_analysis.py

clean:
	rm -rf $(VENV) results
