"""The direction of imports between the layers: models/ never reaches up into the engine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(level, dotted name) of every import in `path` (relative imports keep their level)."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom):
            out.append((node.level, node.module or ""))
        elif isinstance(node, ast.Import):
            out.extend((0, a.name) for a in node.names)
    return out


def test_no_module_under_models_imports_the_engine_package() -> None:
    offenders = []
    for path in sorted((ROOT / "models").rglob("*.py")):
        depth = len(path.relative_to(ROOT).parts) - 1  # ..: the root package from models/x.py
        for level, name in _imported_modules(path):
            reaches_root = level >= depth and level > 0
            if "tam_blender_addon" in name.split(".") and (reaches_root or level == 0):
                offenders.append(f"{path.relative_to(ROOT)}: {'.' * level}{name}")
    assert offenders == []


def test_error_types_live_in_one_leaf_module() -> None:
    leaf = ROOT / "errors.py"
    assert all(level == 0 for level, _ in _imported_modules(leaf)), "errors.py must import the stdlib only"
    from track_anything import errors as leaf_mod
    from track_anything.tam_blender_addon import errors as engine_mod

    assert engine_mod.TamError is leaf_mod.TamError
    assert engine_mod.WeightsError is leaf_mod.WeightsError
