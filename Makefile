# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# pip (not uv) so torch and torchvision come from the machine's local wheels.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RECIPE ?= configs/classification/lenet_digits.yaml
RUN    ?= runs/lenet_digits
# pytest-xdist workers; each is pinned to one thread by tests/conftest.py. Notebooks run as
# tests too (nbmake), on one epoch.
WORKERS ?= auto

.PHONY: install demo test lint clean

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

lint: install
	$(BIN)/ruff check zoo datamodules tasks tests
	$(BIN)/ruff format --check zoo datamodules tasks tests

clean:
	rm -rf runs notebooks/runs lightning_logs .pytest_cache
