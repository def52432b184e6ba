# Needs only make and Python 3.11+: PostgreSQL and Redis come from pip (see require2fa/devstack.py).
#   make test PYTEST_ARGS="-k members -x"     extra pytest arguments
#   make venv PYTHON=python3.12               the interpreter that creates .venv

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-faults test-browser demo lint bench clean

venv: $(STAMP)

# Installs again only when pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "require2fa needs Python 3.11 or newer; try: make PYTHON=python3.11 ..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]'
	touch $@

test: venv
	$(BIN)/python -m commands.testrun $(PYTEST_ARGS)

test-faults: venv
	$(BIN)/python -m commands.testrun -m faults $(PYTEST_ARGS)

# Real-browser tests: Debian's chromium (installed here when missing) and the `browser` extra.
test-browser: venv
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev,browser]'
	$(BIN)/python -m commands.testrun -m browser $(PYTEST_ARGS)

demo: venv
	$(BIN)/require2fa demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy api db jobs require2fa

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
