"""Parity dispatcher: `python tests/parity.py {xmem|e2fgvi|sam2} FIXTURE_DIR OUT.npz`.

Loads the extension as `track_anything`, calls
`track_anything.models.<name>.parity.run(fixture_dir) -> dict[str, np.ndarray]` (which reads
only the fixture's inputs and config) and saves the arrays with np.savez, so hidden
fixture cases can be compared against their golden outputs outside pytest.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("xmem", "e2fgvi", "sam2")


def _register_package() -> None:
    """Import the repo root as `track_anything` the same way the worker and tests do."""
    spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()


def main(argv: list[str] | None = None) -> int:
    """Run one model's parity runner on a fixture folder and write its arrays to an .npz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("fixture_dir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    _register_package()
    runner = importlib.import_module(f"track_anything.models.{args.model}.parity")
    arrays = runner.run(args.fixture_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, **{k: np.asarray(v) for k, v in arrays.items()})
    print(f"{args.model}: wrote {len(arrays)} arrays to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
