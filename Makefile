# The README's commands. `make dev` runs the system, `make test` runs the tests; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools dev test lint format demo bench screenshots clean constraints docker-engine docker-test docker-clean

install: $(STAMP)

# Reinstall only when the dependencies or their pinned versions change. The site distribution (nmdc-site/) is
# installed beside the server, editable, and after it: the demo and the tests use its client and agent, and a
# server install that once carried the nmdc-site script would otherwise remove it again.
$(STAMP): pyproject.toml nmdc-site/pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11 or newer is needed")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --constraint constraints.txt -e ./nmdc-site
	@touch $(STAMP)

# `make dev VERBOSE=1` also shows each API request and Dagster's info lines. Not echoed: with
# NMDC_LOG_FORMAT=json every line it prints is a JSON object (tests/e2e/test_make_dev.py).
dev: install
	@$(BIN)/nmdc-runtime dev $(if $(VERBOSE),--verbose)

# Three processes (pytest-xdist), each with its own databases, on two cores: much of the suite waits on the
# servers and processes it starts. Each test goes to the next process free, except those of the modules that
# tests/conftest.py names (SHARED_FIXTURE_MODULES), which run together in one. `make test TEST_WORKERS=0` runs
# it in this process alone.
TEST_WORKERS ?= 3
test: install tools
	$(BIN)/python -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# Some tests use Debian's packages: the benchmark's smoke test (tests/e2e/test_bench_smoke.py) drives the API with
# wrk, tests/integration/test_metrics.py checks /metrics with promtool (package prometheus), and the browser tests
# (tests/e2e/test_staff_view.py, test_api_docs_offline.py) drive chromium. Each is installed here when it is
# missing and this is a Debian machine run as root; elsewhere its tests are skipped and say why.
tools:
	@$(call debian_tool,wrk,wrk,the benchmark's smoke test)
	@$(call debian_tool,promtool,prometheus,the promtool check of /metrics)
	@$(call debian_tool,chromium,chromium,the browser tests)

# $(call debian_tool,COMMAND,PACKAGE,TEST): install PACKAGE unless COMMAND is there (apt-get update only if needed).
define debian_tool
command -v $(1) >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null 2>&1 || \
    { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(2) >/dev/null 2>&1; }; }; } || \
  echo "$(1) is not installed (apt-get install $(2)): $(3) will be skipped"
endef

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

demo: install
	$(BIN)/nmdc-runtime demo

# `make bench BENCH_ARGS="--profile-to bench/claim-after.svg"` also keeps a flame graph of the claim.
bench: install
	$(BIN)/python -m bench $(BENCH_ARGS)

# The README's pictures: the browser test's steps (Debian's chromium needed), saved under docs/img.
screenshots: install
	SCREENSHOTS_DIR=$(CURDIR)/docs/img $(BIN)/python -m pytest tests/e2e/test_staff_view.py -q -rs \
		-k test_staff_see_it_in_a_browser

# Pin every dependency anew, at the newest versions pyproject.toml allows, from a fresh environment.
CONSTRAINTS_VENV := build/constraints-venv
constraints:
	rm -rf $(CONSTRAINTS_VENV)
	$(PYTHON) -m venv $(CONSTRAINTS_VENV)
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(CONSTRAINTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]' ./nmdc-site
	{ sed -n '/^#/p' constraints.txt; \
	  $(CONSTRAINTS_VENV)/bin/python -m pip freeze --exclude nmdc-runtime --exclude nmdc-site; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(CONSTRAINTS_VENV)

# The Docker engine for `make docker-test` on a Debian machine, as root: installs it and starts dockerd if needed.
docker-engine:
	docker/local/engine.sh

# Builds the images and runs the compose stack through the seed's sequence (docs/deploy.md); not part of `make test`.
docker-test: install
	$(BIN)/python docker/stack_test.py

# Removes the base images that `make docker-test` keeps between runs, and any image built on them (newest first,
# so that children go before their parents).
docker-clean:
	docker images --quiet --filter label=org.nmdc.local-base | awk '!seen[$$0]++' \
		| xargs --no-run-if-empty docker image rm --force

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
