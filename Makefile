# The two commands a newcomer needs (see README.md):
#   make demo   run tokenyield end to end on the embedded broker and ClickHouse
#   make test   run the test suite
# Both create .venv and install the project into it on first use (Python 3.11+, pip).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench install

$(STAMP): pyproject.toml
	@echo "Installing tokenyield and its test tools into $(VENV) (first run only)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tokenyield demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check schemas streams loadtest tests

bench: $(STAMP)
	$(BIN)/tokenyield bench $(ARGS)
