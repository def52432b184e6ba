# Needs only make and Python 3.11+: PostgreSQL and Redis come from pip (see commands/devstack.py).
#   make test PYTEST_ARGS="-k members -x"     extra pytest arguments
#   make test TEST_WORKERS=0                  the suite in one process
#   make venv PYTHON=python3.12               the interpreter that creates .venv

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv oidc-provider test test-faults test-browser screenshots chromium demo lint bench clean

venv: $(STAMP)

# Installs again only when pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "require2fa needs Python 3.11 or newer; try: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

# Coverage of the product's packages; the whole suite (no PYTEST_ARGS) fails under COVERAGE_MIN
# (90.3% measured on the whole suite, 3 December 2026).
COVERAGE_MIN := 88
COVERAGE := --cov=api --cov=db --cov=jobs --cov=require2fa --cov=commands --cov-report=term \
	$(if $(PYTEST_ARGS),,--cov-fail-under=$(COVERAGE_MIN))

# The OpenID Provider that tests/oidc/ signs in against (npm, Node 20+).
oidc-provider:
	@test -d tests/oidc/node_modules || ! command -v npm >/dev/null \
		|| npm ci --prefix tests/oidc --no-audit --no-fund

# The suite runs in TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0 runs it in one). Each has
# its own database, Redis namespace and RabbitMQ vhost (tests/conftest.py); the tests of an
# `xdist_group` run in one of them.
TEST_WORKERS ?= 3
XDIST := -n $(TEST_WORKERS) --dist loadgroup

test: venv oidc-provider
	$(BIN)/python -m commands.testrun $(XDIST) $(COVERAGE) $(PYTEST_ARGS)

# In one process: each scenario already runs many, its figures are timings (docs/RELIABILITY.md),
# and the tests/hosts/ ones clear away any network namespace of theirs they find.
test-faults: venv
	$(BIN)/python -m commands.testrun -m faults $(PYTEST_ARGS)

# The real-browser tests alone (they are part of `make test` too); Debian's chromium, installed
# here when missing (.ci/run does the same).
test-browser: venv oidc-provider chromium
	$(BIN)/python -m commands.testrun $(XDIST) -m browser $(PYTEST_ARGS)

# The browser tests, saving a screenshot of each page at 1280 and 375 px in screens/.
screenshots: venv oidc-provider chromium
	SCREENSHOTS_DIR=$(CURDIR)/screens $(BIN)/python -m commands.testrun $(XDIST) -m browser \
		$(PYTEST_ARGS)

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

demo: venv
	$(BIN)/require2fa demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api db jobs require2fa commands
	$(BIN)/lint-imports

# Each benchmark prints JSON on stdout; the name of each goes to stderr.
bench: venv
	@for script in bench/*.py; do \
		[ -e "$$script" ] || continue; \
		echo "== $$script" >&2; \
		$(BIN)/python "$$script" || exit 1; \
	done

clean:
	rm -rf .require2fa build .pytest_cache .ruff_cache .mypy_cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
