# The README's commands. `make dev` runs the system, `make test` runs the tests; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install dev test lint format demo bench screenshots clean

install: $(STAMP)

# Reinstall only when the project's dependencies change. The site distribution (nmdc-site/) is installed
# beside the server, editable, and after it: the demo and the tests use its client and agent, and a server
# install that once carried the nmdc-site script would otherwise remove it again.
$(STAMP): pyproject.toml nmdc-site/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ./nmdc-site
	@touch $(STAMP)

# `make dev VERBOSE=1` also shows each API request and Dagster's info lines.
dev: install
	$(BIN)/nmdc-runtime dev $(if $(VERBOSE),--verbose)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/nmdc-runtime demo

bench: install
	$(BIN)/python -m bench

# The README's pictures: the browser test's steps (Debian's chromium needed), saved under docs/img.
screenshots: install
	SCREENSHOTS_DIR=$(CURDIR)/docs/img $(BIN)/python -m pytest tests/e2e/test_staff_view.py -q -rs \
		-k test_staff_see_it_in_a_browser

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
