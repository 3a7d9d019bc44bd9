# One command per habit. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MODEL_REPOSITORY ?= data/models
MODEL_DIR ?= $(MODEL_REPOSITORY)/efficientnet-lite0/1
BUNDLE := $(MODEL_DIR)/bundle.json
MODEL_NAMES := efficientnet-lite0 efficientnet-lite0-int8 efficientnet-lite2
MODEL_BUNDLES := $(MODEL_NAMES:%=$(MODEL_REPOSITORY)/%/1/bundle.json)
PYTEST_ARGS ?=
# Test files run in this many processes (pytest-xdist), each file whole in one of them: its
# module fixtures (a stack, a browser) start once. Most tests wait on servers, browsers and
# locks as much as they compute, so two processes took the suite from 14 to 8.5 minutes on 2
# cores. Tests marked `alone` (timing comparisons that another process's load would skew) run
# afterwards, by themselves. Either pass may find nothing to run in the tests PYTEST_ARGS
# names (pytest's status 5), but not the whole suite. PYTEST_ARGS should not carry -m: pytest
# keeps the last -m only.
TEST_WORKERS ?= 2
NONE_SELECTED = { status=$$?; [ $$status -eq 5 ] && [ -n "$(strip $(PYTEST_ARGS))" ] || exit $$status; }

.DEFAULT_GOAL := help
.PHONY: help install bundle models run test lint format bench bench-shadow bench-peers stress stress-quick soak clean

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

$(MODEL_REPOSITORY)/%/1/bundle.json: | $(STAMP)
	$(BIN)/imgclf export-model --model $* --repository $(MODEL_REPOSITORY)

models: $(STAMP) $(MODEL_BUNDLES) ## Build Lite0, Lite0 INT8 and Lite2 into the model repository (data/models)

run: install bundle ## Start the API (http://127.0.0.1:8000) and the UI; serves every model in data/models
	IMGCLF_MODEL_REPOSITORY=$(MODEL_REPOSITORY) $(BIN)/imgclf up

test: install bundle ## Run the whole test suite
	IMGCLF_TEST_MODEL_DIR=$(MODEL_DIR) $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile -m "not alone" $(PYTEST_ARGS) || $(NONE_SELECTED)
	IMGCLF_TEST_MODEL_DIR=$(MODEL_DIR) $(BIN)/pytest -m alone $(PYTEST_ARGS) || $(NONE_SELECTED)

lint: install ## ruff check, ruff format --check, mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install bundle models ## Benchmarks: model (FP32, INT8, Lite2), then the service
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/model.py --repository $(MODEL_REPOSITORY)
	IMGCLF_MODEL_DIR=$(MODEL_DIR) $(BIN)/python bench/service.py

bench-shadow: install bundle models ## Saturation with and without a shadow candidate (wrk)
	IMGCLF_MODEL_REPOSITORY=$(MODEL_REPOSITORY) $(BIN)/python bench/shadow.py

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
