# Two commands do all set-up on a fresh machine with Python 3.11+, make and Java 17:
#   make run   - install, then run the whole pipeline locally (target dev)
#   make test  - install, then run the tests
SHELL := /bin/bash
.DEFAULT_GOAL := help

TARGET ?= dev
UV_VERSION ?= 0.13.8
PYTHON ?= python3
# Use uv from PATH when present, else bootstrap a pinned uv from PyPI into .tools/.
UV ?= $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
MLOPS := $(UV) run --no-sync mlops

.PHONY: help install check-java run test lint format validate schema wheel ui reset clean

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	@echo "uv not found: installing uv $(UV_VERSION) from PyPI into .tools/"
	@$(PYTHON) -m venv $(CURDIR)/.tools
	@$(CURDIR)/.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

check-java:  ## Stop with a clear message unless Java 17+ is installed (local Spark needs it)
	@java="$${JAVA_HOME:+$$JAVA_HOME/bin/}java"; \
	if ! command -v "$$java" >/dev/null 2>&1; then \
	  echo "Java 17 or newer is required for local Spark and was not found."; \
	  echo "Install it (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) or set JAVA_HOME."; \
	  exit 1; \
	fi; \
	version=$$("$$java" -version 2>&1 | awk -F'"' '/version/ {print $$2; exit}'); \
	major=$${version%%.*}; [ "$$major" = "1" ] && major=$$(echo "$$version" | cut -d. -f2); \
	if [ -z "$$major" ] || [ "$$major" -lt 17 ] 2>/dev/null; then \
	  echo "Java $$version found at $$(command -v $$java), but local Spark needs Java 17 or newer."; \
	  echo "Install OpenJDK 17 (Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless; macOS: brew install openjdk@17) and put it first on PATH or set JAVA_HOME."; \
	  exit 1; \
	fi

install: $(UV) check-java  ## Create .venv with the locked dependencies (local Spark + dev tools)
	@$(UV) sync --locked --quiet

run: install  ## Install, then run the whole pipeline locally for TARGET (default dev)
	$(MLOPS) run pipeline -t $(TARGET)

test: install  ## Install, then run the test suite
	$(UV) run --no-sync pytest

lint: install  ## ruff lint and format check
	$(UV) run --no-sync ruff check src laptop tests notebooks benchmarks
	$(UV) run --no-sync ruff format --check src laptop tests notebooks benchmarks

format: install  ## ruff fix and format
	$(UV) run --no-sync ruff check --fix src laptop tests notebooks benchmarks
	$(UV) run --no-sync ruff format src laptop tests notebooks benchmarks

validate: install  ## Validate the bundle offline for every target
	@for t in dev staging prod; do $(MLOPS) bundle validate -t $$t || exit 1; done

SCHEMA_FILE := laptop/src/mlops_laptop/bundle/bundle-jsonschema.json
schema:  ## Refresh the vendored bundle JSON schema from the installed Databricks CLI
	@command -v databricks >/dev/null 2>&1 || { echo "The Databricks CLI is not installed: see https://docs.databricks.com/dev-tools/cli/install.html"; exit 1; }
	databricks bundle schema > $(SCHEMA_FILE).tmp && mv $(SCHEMA_FILE).tmp $(SCHEMA_FILE)
	@echo "wrote $(SCHEMA_FILE) from $$(databricks --version)"

wheel: $(UV)  ## Build the wheel the bundle deploys (dist/*.whl)
	$(UV) build --wheel

ui: install  ## MLflow UI on the local tracking store of TARGET
	$(UV) run --no-sync mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.mlops/$(TARGET)/mlflow.db --host 127.0.0.1 --port 5000

reset: install  ## Delete the local state of TARGET
	$(MLOPS) reset -t $(TARGET)

clean:  ## Remove build outputs and caches (not the local state)
	rm -rf dist build .pytest_cache .ruff_cache
