# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CUSTOMERS ?= 200000
MONTHS ?= 24
SEED ?= 7
HOST ?= 127.0.0.1
PORT ?= 8000

# Exact versions of every package `make install` installs (constraints/dev.txt) and of the
# serving image's (constraints/serve.txt), for Python 3.11 on Linux x86_64; `make lock` writes both
# again from pyproject.toml's ranges.
CONSTRAINTS ?= constraints/dev.txt
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet

.PHONY: run install lock world features model serve test lint format bench clean

$(BIN)/offers: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $@

install: $(BIN)/offers

## The newest versions pyproject.toml allows, pinned; the serving image's within the same pins.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv>=0.5"
	$(BIN)/uv pip compile pyproject.toml --extra dev --upgrade $(LOCK_TARGET) -o constraints/dev.txt
	$(BIN)/uv pip compile pyproject.toml --extra serve -c constraints/dev.txt $(LOCK_TARGET) \
		-o constraints/serve.txt

## The main job: a simulated world, features, a trained champion model, then the API.
run: install world features model serve

world: install
	@if [ -f data/raw/offer_events.parquet ]; then echo "world: data/raw exists, keeping it"; \
	else $(BIN)/offers simulate --customers $(CUSTOMERS) --months $(MONTHS) --seed $(SEED); fi
	$(BIN)/offers validate

features: install
	$(BIN)/offers features build
	$(BIN)/offers features apply
	$(BIN)/offers features materialize

model: install
	$(BIN)/offers train
	$(BIN)/offers promote

serve: install
	@$(BIN)/python -m pipelines.announce --host $(HOST) --port $(PORT)
	$(BIN)/offers serve --host $(HOST) --port $(PORT)

## Lint and the whole test suite.
test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy core features training serving pipelines benchmarks

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/offers bench

clean:
	rm -rf data mlruns/mlflow.db mlruns/artifacts
