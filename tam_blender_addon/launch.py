"""Make the extension importable under its fixed name, then run the worker or the CLI.

Blender installs the extension under a name that depends on the repository it comes
from (``bl_ext.user_default.track_anything``); the worker process and the tests load the
same folder as ``track_anything``. This file has no relative imports so that it can be
run as a script by any Python: ``python .../tam_blender_addon/launch.py worker``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACKAGE = "track_anything"
ROOT = Path(__file__).resolve().parents[1]


def register_root(root: Path = ROOT, name: str = PACKAGE) -> None:
    """Import the extension root folder as package `name` unless it is already there."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        name, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the extension package from {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def main(argv: list[str] | None = None) -> int:
    """`launch.py worker [...]` runs the worker; `launch.py cli [...]` runs the `tam` CLI."""
    args = list(sys.argv[1:] if argv is None else argv)
    register_root()
    what = args.pop(0) if args else "worker"
    if what == "worker":
        from track_anything.tam_blender_addon.worker import main as worker_main

        return int(worker_main(args) or 0)
    from track_anything.tam_blender_addon.cli import main as cli_main

    return int(cli_main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
