# Shortcuts for run.py (the README's two commands need only Python 3.11+ and pip):
#   make demo   = python3 run.py demo     run tokenyield end to end, embedded
#   make test   = python3 run.py test     run the test suite
PYTHON ?= python3

.PHONY: demo test lint bench

demo:
	$(PYTHON) run.py demo $(ARGS)

test:
	$(PYTHON) run.py test $(ARGS)

lint:
	$(PYTHON) run.py test --co -q >/dev/null && .venv/bin/ruff check schemas streams loadtest tests run.py

bench:
	$(PYTHON) run.py test --co -q >/dev/null && .venv/bin/tokenyield bench $(ARGS)
