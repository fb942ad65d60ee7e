# The two commands of the quick start: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint setup

$(STAMP): pyproject.toml scripts/setup_venv.sh
	./scripts/setup_venv.sh

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tam demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
