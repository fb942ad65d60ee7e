# The two commands of the quick start: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
STAMP := $(VENV)/.installed
STAMP45 := .venv-bpy45/.installed

.PHONY: demo test lint setup

$(STAMP): pyproject.toml scripts/setup_venv.sh
	./scripts/setup_venv.sh

# The bpy 4.5 LTS venv (tests only); the script makes both, so one run serves both stamps.
$(STAMP45): $(STAMP)
	./scripts/setup_venv.sh

setup: $(STAMP) $(STAMP45)

demo: $(STAMP)
	$(VENV)/bin/tam demo --out demo_out

test: $(STAMP) $(STAMP45)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
