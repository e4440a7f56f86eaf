# Two entry points: `make demo` and `make test`. Both create or reuse .venv and install the pinned
# stack first (the install is skipped while pyproject.toml is unchanged).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/ums demo --out demo-out

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# while developing: everything but the tests marked slow (subprocess pipelines, kill -9 and Ctrl-C
# drivers, the demo); CI runs `make test`, which runs them all
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# pyflakes, syntax errors and line length ([tool.ruff] in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check ums tsjnet bench tests

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf demo-out ums-workspace .pytest_cache
