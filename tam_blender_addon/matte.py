"""Soft mattes from hard masks: `tam matte VIDEO --masks DIR --out DIR`, and the alpha file formats.

Worker side (OpenCV). Input masks are laid out as MASKS/<object_id>/<frame:05d>.png (0/255,
any size with the video's aspect: smaller masks count as a tracker's processing grid and set
the refinement's scale). Output has the same layout: OUT/<object_id>/<frame:05d>.png as 16-bit
alpha (``alpha``) or .exr float32 alpha (``exr``). Frames are refined in order, one at a time,
each object with the previous frame's state (temporal stability) and the mask's motion (from
the neighbouring frames' masks); every file is written atomically, so a cancelled run keeps
every finished frame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first EXR use in cv2

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from .errors import InputError, MediaError  # noqa: E402
from .progress import Progress, RateMeter  # noqa: E402
from .session import atomic_write, remove_stray_temps  # noqa: E402

ALPHA_FORMATS = ("alpha", "exr")
ALPHA_EXT = {"alpha": "png", "exr": "exr"}
_FRAME_RE = re.compile(r"^(\d+)\.png$")


def encode_alpha(alpha: np.ndarray, fmt: str) -> bytes:
    """One alpha (float 0..1, (H, W)) as file bytes: 16-bit grey PNG (``alpha``) or float32 EXR (``exr``)."""
    a = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    if fmt == "alpha":
        ok, buf = cv2.imencode(".png", np.round(a * 65535.0).astype(np.uint16))
    elif fmt == "exr":
        try:
            ok, buf = cv2.imencode(".exr", a, [cv2.IMWRITE_EXR_TYPE, cv2.IMWRITE_EXR_TYPE_FLOAT])
        except cv2.error:
            raise MediaError("OpenCV cannot write EXR in this process (OPENCV_IO_ENABLE_OPENEXR was not set "
                             "before its first EXR use); write 16-bit PNG alpha instead") from None
    else:
        raise InputError(f"unknown alpha format {fmt!r}; use one of {', '.join(ALPHA_FORMATS)}")
    if not ok:
        raise MediaError(f"cannot encode {fmt} alpha")
    return buf.tobytes()


def chroma_trust(path: str | Path, files: list[str] | None = None) -> float:
    """How far a source's own chroma can be trusted at full resolution: 1.0 (RGB, 4:4:4), 0.0 (subsampled).

    Video files are probed (4:2:0 / 4:2:2 / unknown -> 0); image sequences count as full
    colour unless they are JPEG (whose chroma is usually subsampled).
    """
    p = Path(path)
    first = Path(files[0]) if files else None
    if first is None and p.is_dir():
        first = next((q for q in sorted(p.iterdir()) if q.is_file()), None)
    if first is not None or any(ch in str(p) for ch in "*%"):
        name = (first or p).name.lower()
        return 0.0 if name.endswith((".jpg", ".jpeg")) else 1.0
    try:
        import imageio_ffmpeg

        reader = imageio_ffmpeg.read_frames(str(p))
        try:
            pix = str(next(reader).get("pix_fmt", ""))
        finally:
            reader.close()
    except Exception:  # noqa: BLE001 - unprobeable: assume the common subsampled case
        return 0.0
    return 1.0 if any(k in pix for k in ("444", "rgb", "gbr", "bgr")) else 0.0


def _read_mask(path: Path) -> np.ndarray:
    """A mask PNG as bool (>= half of the pixel type's range is foreground); MediaError if unreadable."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MediaError(f"mask {path} cannot be read")
    if img.ndim == 3:
        img = img[..., 0]
    top = 65535 if img.dtype == np.uint16 else 255
    return img.astype(np.float32) >= top / 2.0


def _mask_table(masks_dir: Path) -> dict[str, dict[int, Path]]:
    """Object folder -> {frame: file} under MASKS_DIR, checked."""
    if not masks_dir.is_dir():
        raise InputError(f"masks folder {masks_dir} does not exist")
    table: dict[str, dict[int, Path]] = {}
    for d in sorted(p for p in masks_dir.iterdir() if p.is_dir()):
        frames = {int(m.group(1)): p for p in d.iterdir() if (m := _FRAME_RE.match(p.name)) and p.is_file()}
        if frames:
            table[d.name] = frames
    if not table:
        raise InputError(f"masks folder {masks_dir} holds no <object_id>/<frame:05d>.png masks")
    return table


def _centroid(mask: np.ndarray) -> tuple[float, float] | None:
    """Mask centroid (x, y) in px, None when empty."""
    m = cv2.moments(mask.astype(np.uint8), True)
    return None if m["m00"] == 0 else (m["m10"] / m["m00"], m["m01"] / m["m00"])


def matte_folder(video: str | Path, masks_dir: str | Path, out_dir: str | Path, fmt: str = "alpha",
                 should_stop: Callable[[], bool] | None = None, matter=None) -> Iterator[Progress]:
    """Refine every mask of MASKS_DIR into soft alpha under OUT_DIR (same layout); one Progress per frame."""
    from ..models.matting import EdgeMatter, MatteState
    from .frames import open_source

    if fmt not in ALPHA_FORMATS:
        raise InputError(f"unknown matte format {fmt!r}; use one of {', '.join(ALPHA_FORMATS)}")
    table = _mask_table(Path(masks_dir))
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, not a folder")
    matter = matter or EdgeMatter(chroma=chroma_trust(video))
    ext = ALPHA_EXT[fmt]
    frames = sorted({f for t in table.values() for f in t})
    with open_source(video) as src:
        if frames[-1] >= src.num_frames:
            raise InputError(f"masks go up to frame {frames[-1]} but {video} has frames 0..{src.num_frames - 1}")
        for name in table:
            (out / name).mkdir(parents=True, exist_ok=True)
            remove_stray_temps(out / name)
        state: dict[str, MatteState] = {}
        cache: dict[tuple[str, int], np.ndarray] = {}

        def mask(name: str, f: int) -> np.ndarray | None:
            if f not in table[name]:
                return None
            if (name, f) not in cache:
                m = _read_mask(table[name][f])
                if abs(m.shape[1] / m.shape[0] - src.width / src.height) > 0.02:
                    raise InputError(f"mask {table[name][f]} is {m.shape[1]}x{m.shape[0]}, not the shape of the "
                                     f"{src.width}x{src.height} video")
                cache[(name, f)] = m
            return cache[(name, f)]

        meter = RateMeter(len(frames))
        for f in frames:
            if should_stop is not None and should_stop():
                return
            img = src.get(f)
            for name in table:
                m = mask(name, f)
                if m is None:
                    state.pop(name, None)
                    continue
                scale = max(src.height / m.shape[0], src.width / m.shape[1])
                alpha = matter.matte(img, m, scale, prev=state.get(name), motion=_motion(mask, name, f, scale))
                atomic_write(out / name / f"{f:05d}.{ext}", encode_alpha(alpha, fmt), sync_dir=False)
                hard = m if m.shape == alpha.shape else alpha >= 0.5
                state[name] = MatteState(img, hard, alpha)
            for key in [k for k in cache if k[1] < f]:
                del cache[key]
            yield meter.progress("matte", frame=f)


def _motion(mask: Callable[[str, int], np.ndarray | None], name: str, f: int, scale: float) -> tuple[float, float]:
    """Mask motion at frame f in source px/frame: central difference of the centroids, one-sided at the ends."""
    here = _centroid(mask(name, f))
    cs = {d: _centroid(m) if (m := mask(name, f + d)) is not None else None for d in (-1, 1)}
    if cs[-1] is not None and cs[1] is not None:
        a, b, n = cs[-1], cs[1], 2.0
    elif here is not None and (cs[1] is not None or cs[-1] is not None):
        a, b, n = (here, cs[1], 1.0) if cs[1] is not None else (cs[-1], here, 1.0)
    else:
        return 0.0, 0.0
    return (b[0] - a[0]) / n * scale, (b[1] - a[1]) / n * scale


def processing_scale(width: int, height: int, short_side: int = 480) -> float:
    """Processing-to-source scale of a tracker working at `short_side` px (XMem's 480): >= 1."""
    return max(1.0, min(width, height) / float(short_side))


class SessionMatter:
    """The engine's matte hook: after a frame's label map is written, refine it into soft alpha in the session.

    Keeps each object's previous frame (for temporal stability and motion) while frames come
    in order; a jump (another span, the other direction) starts the object afresh.
    """

    def __init__(self, session, scale: float | None = None, matter=None) -> None:
        """`scale`: the tracker's processing-to-source factor (default: `processing_scale` of the source)."""
        from ..models.matting import EdgeMatter

        self.session = session
        src = session.source
        self.scale = processing_scale(src.width, src.height) if scale is None else float(scale)
        self.matter = matter or EdgeMatter(chroma=chroma_trust(src.path, src.files))
        self._prev: dict[int, tuple[int, object]] = {}

    def __call__(self, frame: int, image: np.ndarray, labels: np.ndarray) -> None:
        """Refine every object present in `labels` on `frame` and store the alphas (session.write_alpha)."""
        from ..models.matting import MatteState

        alphas = {}
        for obj in (o.id for o in self.session.objects):
            hard = labels == obj
            last = self._prev.get(obj)
            prev = last[1] if last is not None and abs(last[0] - frame) == 1 else None
            if not hard.any():
                self._prev.pop(obj, None)
                continue
            alpha = self.matter.matte(image, hard, self.scale, prev=prev)
            self._prev[obj] = (frame, MatteState(image, hard, alpha))
            alphas[obj] = alpha
        self.session.write_alpha(frame, alphas, labels)
