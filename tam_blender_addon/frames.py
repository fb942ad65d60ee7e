"""Frame sources: random access to the RGB frames of a video file or an image sequence.

Worker side (imageio-ffmpeg, OpenCV). Frames stream: a video is decoded by one running
ffmpeg process that is reused for sequential reads and short forward jumps and
restarted with an input seek (``-ss`` before ``-i``) for anything else; decoded frames
live in a small LRU cache, so memory does not grow with the video's length. Every wait
on ffmpeg has a timeout; corrupt, truncated or missing files raise `MediaError` naming
the file and, where it matters, the frame.

Pixel rule for image sequences: 8-bit images are used as they are; 16-bit integer
images are scaled to 8 bits (v * 255 / 65535, rounded); float images (EXR, float TIFF)
are taken as scene-linear, encoded with the sRGB transfer curve, clipped to 0..1 and
scaled to 0..255 (NaN -> 0). Grey images are repeated to RGB and alpha is dropped.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # must precede the first EXR use in cv2

import cv2  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import numpy as np  # noqa: E402

from .errors import MediaError  # noqa: E402
from .session import SourceInfo  # noqa: E402

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp", ".jp2", ".hdr", ".tga")
CACHE_FRAMES = 8  # decoded frames kept (LRU)
# Stepping backwards through a video decodes from the previous keyframe each time; one
# seek therefore fills a larger block of frames, bounded by memory (not by video length).
BACKWARD_BUDGET_BYTES = 128 * 2**20
BACKWARD_MAX_FRAMES = 64
FORWARD_REUSE = 32  # a forward jump up to this many frames decodes on instead of seeking
DEFAULT_TIMEOUT = 30.0  # seconds to wait for ffmpeg's header or for one frame
DEFAULT_IMAGE_FPS = 24.0

_PRINTF_RE = re.compile(r"%(0?)(\d*)d")
# ffmpeg log lines that mean the stream itself is damaged (not just a warning).
_DAMAGE_RE = re.compile(r"corrupt|invalid data|error submitting|error while decoding|truncat|concealing", re.I)

logger = logging.getLogger(__name__)


def natural_key(s: str) -> list:
    """Sort key that orders 'f2' before 'f10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def to_rgb8(img: np.ndarray) -> np.ndarray:
    """Convert an OpenCV image (BGR/BGRA/grey, uint8/uint16/float) to RGB uint8 by the module's rule."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, 2::-1]
    elif img.ndim == 3 and img.shape[2] == 3:
        img = img[:, :, ::-1]
    else:
        raise ValueError(f"unsupported image shape {img.shape}")
    if img.dtype == np.uint8:
        out = img
    elif img.dtype == np.uint16:
        out = ((img.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.floating):
        x = np.nan_to_num(img.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        x = np.clip(x, 0.0, 1.0)
        x = np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)
        out = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    elif np.issubdtype(img.dtype, np.integer):
        out = np.clip(img, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported pixel type {img.dtype}")
    return np.ascontiguousarray(out)


def read_image(path: str | Path) -> np.ndarray:
    """Read one image file as RGB uint8; MediaError if it is missing or cannot be decoded."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise MediaError(f"image {p} is not a regular file")  # a pipe or device would block a read
    try:
        data = np.fromfile(p, dtype=np.uint8)  # works with any path encoding, unlike cv2.imread
    except FileNotFoundError:
        raise MediaError(f"image {p} is missing") from None
    except OSError as e:
        raise MediaError(f"image {p} cannot be read ({e.strerror or e})") from None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MediaError(f"image {p} is corrupt or not a supported image")
    try:
        return to_rgb8(img)
    except ValueError as e:
        raise MediaError(f"image {p}: {e}") from None


class FrameSource:
    """Random access to the frames of one source; a context manager. Use `open_source`."""

    kind: str = ""

    def __init__(self, path: str, width: int, height: int, fps: float, num_frames: int,
                 cache_frames: int = CACHE_FRAMES) -> None:
        """Common metadata and the bounded frame cache."""
        self.path = str(path)
        self.width = int(width)
        self.height = int(height)
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, int(cache_frames))
        self._capacity = self._cache_frames  # grows temporarily while stepping backwards
        self._lock = threading.RLock()
        self._last_request: int | None = None  # previous get() index (spots backward stepping)
        self.warnings: list[str] = []  # non-fatal problems found while opening, for the user
        self.closed = False

    def __len__(self) -> int:
        """Number of frames."""
        return self.num_frames

    def __enter__(self) -> FrameSource:
        """Context-manager form; closes on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the `with` block."""
        self.close()

    def __repr__(self) -> str:
        """Kind, path and size, for logs."""
        return f"<{type(self).__name__} {self.path} {self.width}x{self.height} {self.num_frames}f @{self.fps:g}>"

    def _check_index(self, index: Any) -> int:
        """A valid frame index or MediaError naming the range."""
        if self.closed:
            raise MediaError(f"source {self.path} is closed")
        try:
            i = int(index)
        except (TypeError, ValueError):
            raise MediaError(f"{self.path}: frame index must be a whole number, got {index!r}") from None
        if not 0 <= i < self.num_frames:
            raise MediaError(f"{self.path}: frame {i} is outside the source (frames 0..{self.num_frames - 1})")
        return i

    def _cache_get(self, i: int) -> np.ndarray | None:
        """A copy of a cached frame (callers may modify what they get), or None."""
        arr = self._cache.get(i)
        if arr is None:
            return None
        self._cache.move_to_end(i)
        return arr.copy()

    def _cache_put(self, i: int, arr: np.ndarray) -> None:
        """Remember a decoded frame, evicting the least recently used beyond the cache size."""
        arr.flags.writeable = False
        self._cache[i] = arr
        self._cache.move_to_end(i)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def get(self, index: int) -> np.ndarray:
        """Frame `index` as RGB uint8 (H, W, 3); MediaError naming the file and frame."""
        with self._lock:
            i = self._check_index(index)
            stepping_back = self._last_request is not None and i == self._last_request - 1
            if not stepping_back and self._capacity != self._cache_frames:
                self._capacity = self._cache_frames  # leave the backward block: back to the small cache
                while len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
            hit = self._cache_get(i)
            if hit is not None:
                self._last_request = i
                return hit
            arr = self._read(i)
            self._last_request = i
            if arr.shape != (self.height, self.width, 3):
                raise MediaError(
                    f"{self._name_of(i)}: frame {i} is {arr.shape[1]}x{arr.shape[0]}, "
                    f"the source is {self.width}x{self.height}"
                )
            self._cache_put(i, arr)
            return arr.copy()

    def __getitem__(self, index: int) -> np.ndarray:
        """Same as `get`."""
        return self.get(index)

    def _name_of(self, index: int) -> str:
        """The file that holds frame `index` (for messages)."""
        return self.path

    def _read(self, index: int) -> np.ndarray:
        """Decode frame `index` (subclasses)."""
        raise NotImplementedError

    def info(self) -> SourceInfo:
        """The session's description of this source."""
        raise NotImplementedError

    def close(self) -> None:
        """Release decoders and the cache."""
        self.closed = True
        self._cache.clear()


# ----------------------------------------------------------------------------- images


class ImageSequenceSource(FrameSource):
    """An ordered list of image files, one per frame, all the same size."""

    kind = "images"

    def __init__(self, path: str, files: list[str], fps: float = DEFAULT_IMAGE_FPS,
                 size: tuple[int, int] | None = None) -> None:
        """`files` in frame order; `size` (w, h) skips reading the first image."""
        if not files:
            raise MediaError(f"{path}: no image files found")
        if size is None:
            first = read_image(files[0])
            size = (first.shape[1], first.shape[0])
        super().__init__(path, size[0], size[1], fps, len(files))
        self.files = [str(f) for f in files]

    def _name_of(self, index: int) -> str:
        """The image file of frame `index`."""
        return self.files[index]

    def _read(self, index: int) -> np.ndarray:
        """Read the image of frame `index`, naming file and frame on failure."""
        try:
            return read_image(self.files[index])
        except MediaError as e:
            raise MediaError(f"frame {index}: {e}") from None

    def info(self) -> SourceInfo:
        """Source description including the ordered file list."""
        return SourceInfo(self.path, "images", self.width, self.height, self.fps, self.num_frames,
                          list(self.files))


def list_image_sequence(path: str | Path) -> list[str]:
    """Files of an image sequence given as a folder, a glob pattern or a printf pattern (frame_%04d.png)."""
    s = str(path)
    p = Path(s)
    if p.is_dir():
        names = [n for n in os.listdir(p) if n.lower().endswith(IMAGE_EXTENSIONS) and (p / n).is_file()]
        return [str(p / n) for n in sorted(names, key=natural_key)]
    if _PRINTF_RE.search(p.name):
        m = _PRINTF_RE.search(p.name)
        assert m is not None
        pad, width = m.group(1), m.group(2)
        digits = rf"\d{{{int(width)},}}" if pad and width else r"\d+"
        rx = re.compile(re.escape(p.name[: m.start()]) + f"({digits})" + re.escape(p.name[m.end():]) + "$")
        folder = p.parent
        if not folder.is_dir():
            return []
        found = []
        for n in os.listdir(folder):
            mm = rx.match(n)
            if mm and (folder / n).is_file():
                found.append((int(mm.group(1)), n))
        return [str(folder / n) for _, n in sorted(found)]
    if any(c in s for c in "*?["):
        return sorted((f for f in _glob.glob(s) if os.path.isfile(f)), key=natural_key)
    return []


# ----------------------------------------------------------------------------- video


def _ffmpeg_reason(text: str) -> str:
    """The useful part of an ffmpeg error log: its distinct '[component] message' lines."""
    msgs: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"^(?:\[[^\]]*\]\s*)+(.+)$", line)
        msg = m.group(1) if m else (line if line.lower().startswith(("error", "could not")) else "")
        msg = msg.removeprefix("Error opening input: ").strip()
        if msg and msg not in msgs and not msg.startswith("==="):
            msgs.append(msg)
    return "; ".join(msgs[-3:])[:300] or "ffmpeg could not read it"


class _Reader:
    """One running imageio-ffmpeg generator, advanced in a helper thread so every wait has a timeout."""

    def __init__(self, path: str, start: int, fps: float | None, timeout: float) -> None:
        """Start ffmpeg at frame `start` (input seek) and read its header; fps None = header probe only."""
        self.path = path
        self.timeout = timeout
        self.next_index = start
        self.process: Any = None
        self.log_catcher: Any = None
        self.dead = False
        input_params: list[str] = []
        output_params: list[str] = []
        if fps is not None:
            if start > 0:
                # Seek a quarter frame early: timestamp rounding cannot skip `start`, and the
                # constant-rate output still rounds it to output frame 0 (half a frame would
                # add a duplicate at the end).
                input_params = ["-ss", f"{(start - 0.25) / fps:.6f}"]
            # Constant-rate output: frame i is the picture shown at time i / fps, both when
            # reading on and after a seek (variable-rate files included).
            output_params = ["-fps_mode", "cfr", "-r", f"{fps:.6f}"]
        self.gen = imageio_ffmpeg.read_frames(path, input_params=input_params, output_params=output_params)
        try:
            self.meta: dict = self._next("the header")
        except StopIteration:
            self.close()
            raise MediaError(f"video {path}: ffmpeg ended before its header") from None
        except BaseException:
            self.close()
            raise

    def _grab_process(self) -> None:
        """Find the generator's ffmpeg process (to kill a stuck read) and its stderr catcher."""
        if self.process is None:
            frame = getattr(self.gen, "gi_frame", None)
            if frame is not None:
                self.process = frame.f_locals.get("process")
                self.log_catcher = frame.f_locals.get("log_catcher")

    def damage_lines(self) -> list[str]:
        """ffmpeg stderr lines (of the last ones kept) that report a damaged stream."""
        if self.log_catcher is None:
            return []
        try:
            text = self.log_catcher.get_text(0.2)
        except Exception:  # noqa: BLE001 - diagnostics only
            return []
        return [ln.strip() for ln in text.splitlines() if _DAMAGE_RE.search(ln)]

    def _next(self, what: str) -> Any:
        """next(gen) with a timeout; StopIteration passes through, other failures become MediaError."""
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = next(self.gen)
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = e

        t = threading.Thread(target=run, name="tam-ffmpeg-read", daemon=True)
        t.start()
        t.join(self.timeout)
        self._grab_process()
        if t.is_alive():
            self.kill()
            t.join(2.0)
            self.dead = True
            raise MediaError(f"video {self.path}: timed out after {self.timeout:g} s reading {what}")
        err = box.get("error")
        if err is not None:
            self.dead = True
            if isinstance(err, StopIteration):
                raise err
            raise MediaError(f"video {self.path}: cannot read {what} ({_ffmpeg_reason(str(err))})") from None
        return box["value"]

    def read_frame(self, width: int, height: int) -> np.ndarray | None:
        """The next decoded frame, or None at the end of the stream."""
        what = f"frame {self.next_index}"
        try:
            data = self._next(what)
        except StopIteration:
            self.dead = True
            return None
        arr = np.frombuffer(data, dtype=np.uint8)
        if arr.size != width * height * 3:
            self.dead = True
            raise MediaError(f"video {self.path}: {what} has an unexpected size")
        self.next_index += 1
        return arr.reshape(height, width, 3)

    def kill(self) -> None:
        """End ffmpeg at once (used when a read is stuck)."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass

    def close(self) -> None:
        """Stop ffmpeg and the generator."""
        self.dead = True
        try:
            self.gen.close()
        except ValueError:  # still executing in a stuck helper thread
            self.kill()
        proc = self.process
        if proc is not None and proc.poll() is None:
            self.kill()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - best effort reaping
                pass


class VideoSource(FrameSource):
    """A video file decoded by imageio-ffmpeg, one frame at a time."""

    kind = "video"

    def __init__(self, path: str, *, timeout: float = DEFAULT_TIMEOUT,
                 known: SourceInfo | None = None, cache_frames: int = CACHE_FRAMES) -> None:
        """Open `path`; `known` (from a session) skips counting frames but checks the size."""
        p = Path(path)
        if not p.exists():
            raise MediaError(f"video {path} is missing")
        if not p.is_file():
            raise MediaError(f"video {path} is not a regular file")
        self.timeout = float(timeout)
        self._reader: _Reader | None = None
        probe: _Reader | None = _Reader(str(path), 0, None, self.timeout)
        try:
            meta = probe.meta
            w, h = (int(v) for v in meta.get("size") or (0, 0))
            fps = float(meta.get("fps") or 0.0)
            duration = float(meta.get("duration") or 0.0)
            if w <= 0 or h <= 0:
                raise MediaError(f"video {path} has no readable video stream")
            if fps <= 0:
                raise MediaError(f"video {path}: frame rate unknown, cannot seek in it")
            if known is not None:
                if (known.width, known.height) != (w, h):
                    raise MediaError(
                        f"video {path} is {w}x{h} but the session expects {known.width}x{known.height}; "
                        "the file has changed"
                    )
                super().__init__(str(path), w, h, known.fps or fps, known.num_frames, cache_frames)
                return
            super().__init__(str(path), w, h, fps, 0, cache_frames)
            probe.close()
            probe = None
            self.num_frames = self._count_frames(round(duration * fps))
            if self.num_frames <= 0:
                raise MediaError(f"video {path} holds no decodable frames")
        finally:
            if probe is not None:
                probe.close()

    def _count_frames(self, estimate: int) -> int:
        """Exact frame count: decode the last frames near the container's estimate (stepping back
        if the picture ends earlier), else count from the start.

        A count well below the estimate is an error when ffmpeg reported damage (a truncated
        or corrupt file); without damage it is a stream that is simply shorter than the
        container (longer audio), kept with a warning.
        """
        counted: int | None = None
        damage: list[str] = []
        if estimate > 0:
            for back in (2, 16, 128, 1024):
                start = max(0, estimate - back)
                n, damage = self._count_from(start)
                if n > 0 or start == 0:
                    counted = start + n
                    break
        if counted is None:
            counted, damage = self._count_from(0)
        if estimate > 0 and counted < estimate - max(2, estimate // 100):
            if damage:
                reason = _ffmpeg_reason(damage[-1])
                raise MediaError(
                    f"video {self.path} is truncated or corrupt: only {counted} of about {estimate} "
                    f"frames can be decoded (frame {counted} fails: {reason})"
                )
            msg = (f"video {self.path}: the picture ends after {counted} frames, {estimate - counted} "
                   "before the container's duration (other streams are longer)")
            self.warnings.append(msg)
            logger.warning(msg)
        return counted

    def _count_from(self, start: int) -> tuple[int, list[str]]:
        """How many frames decode from `start` to the end (0 if past the end), and damage reported."""
        reader = self._reader if (self._reader and not self._reader.dead
                                  and self._reader.next_index == start) else None
        if reader is None:
            self._drop_reader()
            reader = _Reader(self.path, start, self.fps, self.timeout)
        self._reader = None
        n = 0
        try:
            while reader.read_frame(self.width, self.height) is not None:
                n += 1
            damage = reader.damage_lines()
        finally:
            reader.close()
        return n, damage

    def _drop_reader(self) -> None:
        """Stop the running ffmpeg, if any."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read(self, index: int) -> np.ndarray:
        """Decode frame `index`, reusing the running reader when it is at or shortly before it."""
        r = self._reader
        backwards = self._last_request is not None and index == self._last_request - 1
        if r is None or r.dead or not (r.next_index <= index <= r.next_index + FORWARD_REUSE):
            self._drop_reader()
            start = index
            if backwards:
                # Stepping backwards: start a block earlier so the next requests are cache hits.
                block = self._backward_block()
                self._capacity = max(self._cache_frames, block)
                start = max(0, index - (block - 1))
            r = self._reader = _Reader(self.path, start, self.fps, self.timeout)
        while True:
            at = r.next_index
            try:
                arr = r.read_frame(self.width, self.height)
            except MediaError as e:
                self._drop_reader()
                raise MediaError(f"{e} (wanted frame {index})") from None
            if arr is None:
                self._drop_reader()
                raise MediaError(
                    f"video {self.path}: frame {index} cannot be decoded; the stream ends at frame {at} "
                    "(file truncated or corrupt?)"
                )
            if at == index:
                return arr
            self._cache_put(at, arr)

    def _backward_block(self) -> int:
        """Frames one backward seek decodes into the cache: as many as the memory budget allows."""
        per_frame = max(1, self.width * self.height * 3)
        return max(self._cache_frames, min(BACKWARD_MAX_FRAMES, BACKWARD_BUDGET_BYTES // per_frame))

    def info(self) -> SourceInfo:
        """Source description for the session."""
        return SourceInfo(self.path, "video", self.width, self.height, self.fps, self.num_frames, None)

    def close(self) -> None:
        """Stop ffmpeg and drop the cache."""
        with self._lock:
            self._drop_reader()
            super().close()


# ----------------------------------------------------------------------------- opening


def open_source(path: str | Path, *, fps: float | None = None, timeout: float = DEFAULT_TIMEOUT) -> FrameSource:
    """Open a video file, an image folder, a glob or a printf pattern; `fps` sets image-sequence rate."""
    s = str(path)
    p = Path(s)
    if p.is_dir() or _PRINTF_RE.search(p.name) or (not p.exists() and any(c in s for c in "*?[")):
        files = list_image_sequence(s)
        if not files:
            raise MediaError(f"no image files match {s}")
        return ImageSequenceSource(s, files, fps or DEFAULT_IMAGE_FPS)
    if not p.exists():
        raise MediaError(f"{s} is missing")
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageSequenceSource(s, [s], fps or DEFAULT_IMAGE_FPS)
    return VideoSource(s, timeout=timeout)


def open_from_info(info: SourceInfo, *, timeout: float = DEFAULT_TIMEOUT) -> FrameSource:
    """Reopen a session's source without re-scanning it; MediaError if the file no longer matches."""
    if info.kind == "images":
        files = info.files or list_image_sequence(info.path)
        if len(files) != info.num_frames:
            raise MediaError(f"image sequence {info.path} has {len(files)} frames, the session expects "
                             f"{info.num_frames}")
        return ImageSequenceSource(info.path, list(files), info.fps, size=(info.width, info.height))
    if info.kind == "video":
        return VideoSource(info.path, timeout=timeout, known=info)
    raise MediaError(f"unknown source kind {info.kind!r} for {info.path}")
