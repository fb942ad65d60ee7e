"""Export the session's masks as image sequences: per-object PNG/EXR mattes or label maps.

Worker side (OpenCV). Layouts, one file per source frame of the range (a frame without
a stored mask exports as all zeros):

* ``png``    -> OUT/<object_id>/<frame:05d>.png, single channel, 0 / 255
* ``labels`` -> OUT/<frame:05d>.png, uint8 object-id maps (0 = background)
* ``exr``    -> OUT/<object_id>/<frame:05d>.exr, single channel float32 mattes 0.0 / 1.0

Files are encoded in memory and written atomically, so an interrupted export never
leaves a half-written image under a final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first EXR use in cv2

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError, MediaError  # noqa: E402
from .session import Session, atomic_write, remove_stray_temps  # noqa: E402

FORMATS = ("png", "labels", "exr")


def frame_name(frame: int, ext: str) -> str:
    """File name of source frame `frame` in an export (00042.png)."""
    return f"{frame:05d}.{ext}"


def _encode(ext: str, img: np.ndarray, params: list[int] | None = None) -> bytes:
    """Encode an image in memory; MediaError if OpenCV cannot write this format."""
    try:
        ok, buf = cv2.imencode(ext, img, params or [])
    except cv2.error as e:
        if ext == ".exr":
            raise MediaError(
                "OpenCV cannot write EXR in this process (OPENCV_IO_ENABLE_OPENEXR was not set "
                "before its first EXR use); export PNG instead or restart the worker"
            ) from None
        raise MediaError(f"cannot encode a {ext} image ({str(e).strip().splitlines()[-1]})") from None
    if not ok:
        raise MediaError(f"cannot encode a {ext} image")
    return buf.tobytes()


def _frames_to_export(session: Session, frames: Iterable[int] | None) -> list[int]:
    """The source frames to write: the mapped range by default, else the given ones (checked)."""
    n = session.source.num_frames
    if frames is None:
        return list(session.mapping.source_range(n))
    out = []
    for f in frames:
        i = int(f)
        if not 0 <= i < n:
            raise InputError(f"frame {i} is outside the source (frames 0..{n - 1})")
        out.append(i)
    return out


def export_masks(session: Session, fmt: str, out_dir: str | Path,
                 frames: Iterable[int] | None = None) -> Iterator[int]:
    """Write the masks of `frames` (default: the mapped range) as `fmt`; yield each frame when done."""
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    todo = _frames_to_export(session, frames)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export target {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stray_temps(out)
    objects = session.objects
    obj_dirs: dict[int, Path] = {}
    if fmt in ("png", "exr"):
        for o in objects:
            d = out / str(o.id)
            d.mkdir(exist_ok=True)
            remove_stray_temps(d)
            obj_dirs[o.id] = d
    h, w = session.source.height, session.source.width
    exr_params = [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT]
    for f in todo:
        rec = session.read_mask(f)
        labels = rec.labels if rec is not None else np.zeros((h, w), dtype=np.uint8)
        if fmt == "labels":
            atomic_write(out / frame_name(f, "png"), _encode(".png", labels), sync_dir=False)
        elif fmt == "png":
            for oid, d in obj_dirs.items():
                matte = np.where(labels == oid, np.uint8(255), np.uint8(0))
                atomic_write(d / frame_name(f, "png"), _encode(".png", matte), sync_dir=False)
        else:
            for oid, d in obj_dirs.items():
                matte = (labels == oid).astype(np.float32)
                atomic_write(d / frame_name(f, "exr"), _encode(".exr", matte, exr_params), sync_dir=False)
        yield f
