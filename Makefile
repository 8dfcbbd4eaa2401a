# The two commands: `make run` serves on http://127.0.0.1:8000, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SMOKE  := ../shared/smoke.py

.PHONY: install run test lint unit smoke bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m server --host 127.0.0.1 --port 8000 --db ./data/runcast.db

lint: $(STAMP)
	$(BIN)/ruff check server client tests bench
	$(BIN)/ruff format --check server client tests bench
	$(BIN)/mypy server client

unit: $(STAMP)
	$(BIN)/python -m pytest

smoke: $(STAMP)
	@if [ -f $(SMOKE) ]; then $(BIN)/python $(SMOKE); else echo "no $(SMOKE): contract smoke skipped"; fi

test: lint unit smoke

bench: $(STAMP)
	$(BIN)/python bench/runs.py

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache
