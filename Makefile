# Two commands for a newcomer: `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format setup clean

setup: $(STAMP)

# torch==2.13.0 is the CPU build on this machine kind; installing it first keeps pip
# from pulling multi-GB CUDA wheels. GPU users: see README, "GPU install".
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $${CAMEO_TORCH:-torch==2.13.0}
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/cameo model path > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cameo demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) cameo-demo
