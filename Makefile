# Two commands on a fresh machine: `make run` (install into .venv, run the loss-comparison study) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STUDY ?= loss_comparison

.PHONY: install run train test test-fast bench report clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m ablation.run --study $(STUDY)

train: install
	$(BIN)/python -m core.train --config quick

test: install
	$(BIN)/python -m pytest -q -ra --durations=15 -n 2 --dist loadscope --no-loadscope-reorder

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadscope --no-loadscope-reorder

bench: install
	$(BIN)/python -m benchmarks.run

report: install
	$(BIN)/python -m reports.build --study $(STUDY)

clean:
	rm -rf outputs ray_results mlruns mlflow.db .pytest_cache
