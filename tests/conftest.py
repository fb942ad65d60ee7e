"""Shared test set-up: load the extension root as `track_anything`, keep Blender's config private."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# bpy writes its user config on import: point it at a throw-away folder first.
if "BLENDER_USER_RESOURCES" not in os.environ:
    _user = tempfile.mkdtemp(prefix="tam-blender-user-")
    os.environ["BLENDER_USER_RESOURCES"] = _user
    atexit.register(shutil.rmtree, _user, ignore_errors=True)

# small shared helpers beside the tests (bpy_render) import as top-level modules
sys.path.insert(0, str(Path(__file__).resolve().parent))

_spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
_launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_launch)
_launch.register_root()
sys.modules.setdefault("_tam_launch", _launch)
