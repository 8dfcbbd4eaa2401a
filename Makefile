# The two commands: `make run` serves on http://127.0.0.1:8000, `make test` runs every check.
# `make run PORT=9000 HOST=0.0.0.0 DB=./data/other.db ARGS="--token s3cret"` changes where and how.
PYTHON ?= python3
PORT   ?= 8000
HOST   ?= 127.0.0.1
DB     ?= ./data/runcast.db
ARGS   ?=
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
SMOKE  := ../shared/smoke.py

CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || echo /usr/bin/chromium)

.PHONY: install run test lint unit smoke bench browser postgres node js clean

# PYTHONWARNINGS: without setuptools' banner about editable installs on every first run.
PIP := PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e '.[test]'
	touch $(STAMP)

# `make run` needs the server alone, not the test tools (Playwright, mypy, Agno, ...).
$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e .
	touch $(RUN_STAMP)

install: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/python -m server --host '$(HOST)' --port '$(PORT)' --db '$(DB)' $(ARGS)

CODE := $(wildcard server client tests bench examples)

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy server client bench

# Two processes, each taking whole test files (their module-scoped servers are started once).
unit: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

smoke: $(STAMP)
	@if [ -f $(SMOKE) ]; then $(BIN)/python $(SMOKE); else echo "no $(SMOKE): contract smoke skipped"; fi

# The dashboard tests drive Debian's Chromium (no browser download is possible); installed when root.
browser:
	@if [ -x "$(CHROMIUM)" ]; then echo "browser: $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "browser: installing Debian's chromium with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "browser: no chromium and not root: the dashboard tests will be skipped"; fi

# The cluster tests start a throwaway PostgreSQL (initdb/pg_ctl from Debian's postgresql); installed when root.
INITDB ?= $(shell command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1)

postgres:
	@if [ -n "$(INITDB)" ] && [ -x "$(INITDB)" ]; then echo "postgres: $(INITDB)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "postgres: installing Debian's postgresql with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "postgres: no initdb and not root: the cluster tests will be skipped"; fi

# The JavaScript client's tests (js/) run on Node (Debian's nodejs and npm); installed when root.
node:
	@if command -v node >/dev/null && command -v npm >/dev/null; then echo "node: $$(node --version)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "node: installing Debian's nodejs and npm with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	else echo "node: no node and not root: the JavaScript client's tests cannot run"; fi

# js/'s own dependency (ws, for Node without a global WebSocket); its tests run in `unit` (tests/test_js.py).
js: node
	@if command -v npm >/dev/null; then cd js && npm install --no-audit --no-fund --loglevel=error; fi

test: lint browser postgres js unit smoke

# bench/cluster.py needs initdb/pg_ctl too (installed by `postgres` when root; skipped without).
bench: $(STAMP) postgres
	$(PIP) -e '.[test,bench]'
	$(BIN)/python bench/all.py

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
