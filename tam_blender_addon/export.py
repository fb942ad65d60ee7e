"""Export the session's mattes: per-object soft alpha (PNG16 / EXR), RGBA, ProRes 4444, or hard masks.

Worker side (OpenCV). Layouts, one file per source frame of the range (a frame without
a stored mask exports as all zeros):

* ``png``    -> OUT/<object_id>/<frame:05d>.png, single channel, 0 / 255 (hard, as before)
* ``labels`` -> OUT/<frame:05d>.png, uint8 object-id maps (0 = background)
* ``alpha``  -> OUT/<object_id>/<frame:05d>.png, 16-bit single channel soft alpha (0..65535)
* ``exr``    -> OUT/<object_id>/<frame:05d>.exr, single channel float32 soft alpha 0.0..1.0
* ``rgba``   -> OUT/<object_id>/<frame:05d>.png, 16-bit RGBA, PREMULTIPLIED: the estimated
  foreground colour (background spill removed, `models.matting.foreground`) times alpha
* ``prores`` -> OUT/<object_id>.mov, ProRes 4444 (prores_ks, yuva444p10le) with STRAIGHT
  alpha: the estimated foreground colour and the alpha, as NLEs and Blender's movie strips
  (alpha mode "Straight") read it

Soft alpha is the session's (format version 2, written by the matte stage after tracking);
frames without it fall back to the hard mask. ``hard=True`` (`tam export --hard`) uses the
hard masks everywhere (alpha 0/1). Image files are encoded in memory and written atomically;
a ProRes file is written under a temp name and renamed when complete, so an interrupted
export never leaves a half-written file under a final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first EXR use in cv2

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError, MediaError  # noqa: E402
from .matte import encode_alpha  # noqa: E402
from .session import TMP_SUFFIX, Session, atomic_write, remove_stray_temps  # noqa: E402

FORMATS = ("png", "labels", "exr", "alpha", "rgba", "prores")
PER_FRAME_OBJECT_FORMATS = ("png", "exr", "alpha", "rgba")


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
                 frames: Iterable[int] | None = None, *, hard: bool = False, source=None) -> Iterator[int]:
    """Write the mattes of `frames` (default: the mapped range) as `fmt`; yield each frame when done.

    `source` (a FrameSource of the session's clip) is needed by ``rgba`` and ``prores``.
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt in ("rgba", "prores") and source is None:
        raise InputError(f"the {fmt} export needs the source clip's frames")
    todo = _frames_to_export(session, frames)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"export target {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_stray_temps(out)
    objects = session.objects
    obj_dirs: dict[int, Path] = {}
    if fmt in PER_FRAME_OBJECT_FORMATS:
        for o in objects:
            d = out / str(o.id)
            d.mkdir(exist_ok=True)
            remove_stray_temps(d)
            obj_dirs[o.id] = d
    if fmt == "prores":
        yield from _export_prores(session, out, todo, hard, source)
        return
    h, w = session.source.height, session.source.width
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
            alphas = _alphas(session, f, labels, [o.id for o in objects], hard)
            image = source.get(f) if fmt == "rgba" else None
            for oid, d in obj_dirs.items():
                a = alphas[oid]
                if fmt in ("exr", "alpha"):
                    data = encode_alpha(a, fmt)
                else:
                    data = _encode(".png", _premultiplied_rgba16(image, a))
                atomic_write(d / frame_name(f, "exr" if fmt == "exr" else "png"), data, sync_dir=False)
        yield f


def _alphas(session: Session, frame: int, labels: np.ndarray, obj_ids: list[int], hard: bool) -> dict[int, np.ndarray]:
    """Float32 alpha per object on `frame`: the session's soft alpha where fresh, else the hard mask."""
    soft = None if hard else session.read_alpha(frame, labels)
    soft = soft or {}
    return {o: soft[o] if o in soft else (labels == o).astype(np.float32) for o in obj_ids}


def _foreground(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The object's own colour (float 0..1 RGB) under its alpha: background spill removed at soft edges."""
    from ..models.matting import foreground

    return foreground(image, alpha)


def _premultiplied_rgba16(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """16-bit BGRA (what cv2 writes as a PNG's RGBA) of the decontaminated foreground times alpha."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    rgb = _foreground(image, alpha) * a
    rgba = np.concatenate([rgb[..., ::-1], a], axis=2)  # cv2 wants BGRA
    return np.round(rgba * 65535.0).astype(np.uint16)


def _export_prores(session: Session, out: Path, todo: list[int], hard: bool, source) -> Iterator[int]:
    """One ProRes 4444 .mov per object (straight alpha), all objects written in one pass over the frames."""
    import imageio_ffmpeg

    h, w = session.source.height, session.source.width
    objects = [o.id for o in session.objects]
    writers, temps = {}, {}
    done = False
    try:
        for oid in objects:
            temps[oid] = out / f".{oid}.mov{TMP_SUFFIX}"
            writers[oid] = imageio_ffmpeg.write_frames(
                str(temps[oid]), (w, h), fps=session.source.fps or 24.0, codec="prores_ks",
                pix_fmt_in="rgba64le", pix_fmt_out="yuva444p10le", quality=None, macro_block_size=1,
                output_params=["-profile:v", "4444", "-alpha_bits", "16", "-f", "mov"])
            writers[oid].send(None)
        for f in todo:
            rec = session.read_mask(f)
            labels = rec.labels if rec is not None else np.zeros((h, w), dtype=np.uint8)
            alphas = _alphas(session, f, labels, objects, hard)
            image = source.get(f)
            for oid in objects:
                a = np.clip(alphas[oid], 0.0, 1.0)
                rgba = np.concatenate([_foreground(image, a), a[..., None]], axis=2)
                writers[oid].send(np.ascontiguousarray(np.round(rgba * 65535.0).astype("<u2")))
            yield f
        done = True
    finally:
        for wr in writers.values():
            try:
                wr.close()
            except Exception:  # noqa: BLE001 - a failed encoder: the temp file is dropped below
                done = False
        for oid, tmp in temps.items():
            if done and tmp.exists():
                os.replace(tmp, out / f"{oid}.mov")
            else:
                tmp.unlink(missing_ok=True)
