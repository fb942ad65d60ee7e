"""List the functions longer than N lines (default 80): `python scripts/long_functions.py [N]`.

Counts a function from its `def` line to its last line (decorators excluded), over the
Python files git would see (virtual environments and test fixtures skipped).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".venv-bpy45", "fixtures", ".git", "build", "dist"}


def long_functions(limit: int) -> list[tuple[int, str, int, str]]:
    """(lines, file, line number, name) of every function over `limit` lines, longest first."""
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        if SKIP & set(path.relative_to(ROOT).parts):
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    out.append((n, path.relative_to(ROOT).as_posix(), node.lineno, node.name))
    return sorted(out, reverse=True)


if __name__ == "__main__":
    for n, file, line, name in long_functions(int(sys.argv[1]) if len(sys.argv) > 1 else 80):
        print(f"{n:4d}  {file}:{line}  {name}")
