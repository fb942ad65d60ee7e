# The two commands of the quick start: `make demo` and `make test`. Both set up .venv first.
VENV := .venv
STAMP := $(VENV)/.installed
STAMP45 := .venv-bpy45/.installed

.PHONY: demo test lint setup env-build-test

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

# The first-run environment build with the real download (several GB: not in CI, which builds
# offline from .venv's packages): Create Environment in bpy, then a track through it.
env-build-test: $(STAMP)
	TAM_FULL_ENV_BUILD=1 $(VENV)/bin/python -m pytest -q -s tests/test_blender_env_build.py -k tracks
