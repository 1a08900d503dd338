# Everyday commands. `make serve` and `make test` create .venv when it is missing and install the project
# into it (pip install -c constraints.txt -e ".[dev]": pyproject.toml accepts a range of torch, constraints.txt
# pins the tested one), with the Python client (./client, its own distribution). The install runs again only
# when pyproject.toml, constraints.txt or client/pyproject.toml changes: $(STAMP) records the last one.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kan-service-installed
PYTEST_ARGS ?=

.PHONY: help install serve worker migrate test test-all clean

help:
	@echo "make install   create .venv and install the project (torch pinned by constraints.txt)"
	@echo "make serve     run the API and local workers on http://127.0.0.1:8000 (KAN_* variables configure it)"
	@echo "make test      the test suite without tests marked slow (what CI runs)"
	@echo "make test-all  every test, slow ones included"
	@echo "make migrate   bring the database schema to the newest revision"
	@echo "make worker    worker processes only (Celery workers when KAN_EXECUTOR=celery)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt client/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -c constraints.txt -e ".[dev]" -e "./client[all]"
	touch $@

install: $(STAMP)

serve: $(STAMP)
	@echo "dashboard: http://$${KAN_HOST:-127.0.0.1}:$${KAN_PORT:-8000}/ui   API docs: http://$${KAN_HOST:-127.0.0.1}:$${KAN_PORT:-8000}/docs"
	$(BIN)/kan-service serve

worker: $(STAMP)
	$(BIN)/kan-service worker

migrate: $(STAMP)
	$(BIN)/kan-service migrate

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not docker" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis $(STAMP)
