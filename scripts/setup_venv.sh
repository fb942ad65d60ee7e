#!/usr/bin/env bash
# Create .venv (Python 3.11, Blender's) with the engine, torch and the test tools, once.
# Also .venv-bpy45: only the bpy 4.5 LTS wheel (+ the numpy it pins), for the 4.5 tests
# (tests/test_blender_45.py); the worker still runs on .venv's python.
# Re-run is cheap: pip skips what is installed. Used by `make demo` and `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { echo "error: Python 3.11 is needed (Blender's version); set PYTHON=/path/to/python3.11" >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "setting up .venv (torch, OpenCV, segment-anything, bpy for the tests) ..."
.venv/bin/python -m pip install -q -e ".[test]"
touch .venv/.installed

BPY45="bpy==4.5.15"  # newest 4.5 LTS for Python 3.11 on PyPI
if [ "$(cat .venv-bpy45/.installed 2>/dev/null)" != "$BPY45" ]; then
  echo "setting up .venv-bpy45 ($BPY45 for the Blender 4.5 LTS tests) ..."
  [ -x .venv-bpy45/bin/python ] || "$PY" -m venv .venv-bpy45
  .venv-bpy45/bin/python -m pip install -q "$BPY45"
  echo "$BPY45" > .venv-bpy45/.installed
else
  touch .venv-bpy45/.installed  # newer than .venv's stamp: make need not run this again
fi
