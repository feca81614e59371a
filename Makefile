# Two commands for a newcomer: `make demo` and `make test`. Both create .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format setup clean browser

setup: $(STAMP)

# torch==2.13.0 from the CPU wheel index of this environment; installing it first keeps pip
# from pulling multi-GB CUDA wheels. GPU users: see README, "GPU install".
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $${CAMEO_TORCH:-torch==2.13.0}
	$(BIN)/pip install -q -e ".[dev,faces]"
	$(BIN)/cameo model path > /dev/null
	$(BIN)/cameo model path cameo-tiny-i2v > /dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cameo demo --overwrite

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

# The web app's browser test drives Debian's chromium through Playwright (which downloads no
# browser of its own). Installed when missing; that needs root, as CI has. Elsewhere a missing
# chromium only skips that one test (under CI=true it fails it).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif [ "$$CI" = true ]; then \
	    echo "make: chromium is missing and installing it needs root" >&2; exit 1; \
	  else \
	    echo "note: no chromium (sudo apt-get install chromium); the browser test will be skipped"; \
	  fi; }

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks recipes
	$(BIN)/ruff format --check src tests benchmarks recipes

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks recipes
	$(BIN)/ruff check --fix src tests benchmarks recipes

clean:
	rm -rf $(VENV) cameo-demo
