# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CUSTOMERS ?= 200000
MONTHS ?= 24
SEED ?= 7
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run install world features model serve test lint format bench clean

$(BIN)/offers: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/offers

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
