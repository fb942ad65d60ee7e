"""The one atomic file writer: temp file in the same folder, flush, fsync, rename into place.

A crash leaves either the old or the new version of a file, never half of one. Standard
library only, at the package root so both layers use it: the session store, the export,
the inpainting frames, the shapes file and the checkpoint sidecars all write through it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

TMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, data: bytes, sync_dir: bool = True) -> None:
    """Write `data` to `path` so that a crash leaves the old file or the new one, never half.

    `sync_dir` also fsyncs the folder so the rename itself survives a power cut; bulk
    per-frame files skip it (a lost rename only means that frame is redone).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(path.parent)


def _replace(tmp: str, path: Path) -> None:
    """os.replace, retried briefly on Windows where a reader holding the target blocks it."""
    for attempt in range(20):
        try:
            os.replace(tmp, path)
            return
        except PermissionError:
            if not sys.platform.startswith("win") or attempt == 19:
                raise
            time.sleep(0.05)


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    if sys.platform.startswith("win"):
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stray_temps(folder: str | Path) -> list[Path]:
    """Delete temp files left by an interrupted atomic write in `folder`; return what was removed."""
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed
