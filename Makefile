# dxf-bridge: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test install install-test migrate bench bench-hl7 conformance-report clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

migrate: install
	$(BIN)/dxf-bridge migrate

## run: install into .venv, migrate the embedded SQLite database under ./data/, serve the API on
## :8080 and the HL7v2 MLLP listener on :2575 in one process (one Ctrl-C stops both)
run: install
	$(BIN)/dxf-bridge migrate
	exec $(BIN)/dxf-bridge serve --mllp

## test: install with test extras and run the whole suite
test: install-test
	$(BIN)/ruff check app conformance tests migrations bench scripts
	$(BIN)/ruff format --check app conformance tests migrations bench scripts
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: install
	$(BIN)/python bench/rest_bench.py

bench-hl7: install
	$(BIN)/python bench/hl7_bench.py

## conformance-report: run the conformance kit against a freshly seeded local dxf-bridge (SQLite,
## temporary directory, free loopback port) and rewrite docs/conformance-report.html
conformance-report: install
	$(BIN)/python scripts/conformance_report.py

clean:
	rm -rf $(VENV) build dist *.egg-info
