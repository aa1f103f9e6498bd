# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# pip (not uv) so torch and torchvision come from the machine's local wheels.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPE ?= configs/classification/lenet_digits.yaml
RUN    ?= runs/lenet_digits
# pytest-xdist workers; each is pinned to one thread by tests/conftest.py. The notebooks run as
# tests too (tests/test_notebooks.py), on one epoch.
WORKERS ?= auto

.PHONY: install demo test lint clean bench bench-quick

install: $(STAMP)

# Re-installs only when pyproject.toml changes (the package itself is installed editable).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev,export,wandb]'
	touch $(STAMP)

demo: install
	$(BIN)/zoo fit --config $(RECIPE)
	$(BIN)/zoo test --config $(RECIPE) --ckpt_path $(RUN)/checkpoints/best.ckpt

test: install
	ZOO_NOTEBOOK_EPOCHS=1 $(BIN)/python -m pytest -n $(WORKERS) --durations=15

# Every benchmark of tests/benchmarks (about 20 minutes on 2 cores): benchmarks.json and the
# README's table; bench-quick (about 3 minutes) writes runs/benchmarks-quick.json only. Run them
# on a quiet machine: the ratios' trials alternate, but the machine's noise still shows.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,export,wandb,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python -m tests.benchmarks --size full --output benchmarks.json --readme README.md

bench-quick: $(BENCH_STAMP)
	mkdir -p runs
	$(BIN)/python -m tests.benchmarks --size quick --output runs/benchmarks-quick.json

lint: install
	$(BIN)/ruff check zoo datamodules tasks tests
	$(BIN)/ruff format --check zoo datamodules tasks tests

clean:
	rm -rf runs notebooks/runs lightning_logs .pytest_cache
