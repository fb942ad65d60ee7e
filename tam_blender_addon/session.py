"""The session directory: the crash-safe source of truth for objects, prompts, masks and the job log.

Imported inside Blender, so numpy and the standard library only. Layout (format
"tam-session", version 2)::

    session.json        {"format", "version", "source", "mapping", "backend", "settings"}
    objects.json        {"next_id", "objects": [{"id", "name", "color"}]}
    prompts.json        {"prompts": [{"type": "click"|"box"|"mask", ...}]}  (mask: run lengths)
    masks/f000123.npz   labels uint8 (H, W), obj_ids int32 (K,), confidence float32 (K,), kind str
    alpha/f000123.npz   soft alpha (version 2): labels_crc uint32, obj_ids int32 (K,), and per object
                        box_<id> int32 (y0, x0) + alpha_<id> uint16 crop where the alpha is not the
                        hard mask (0..65535); stale (crc differs from the mask's) = absent
    log.jsonl           job log, one JSON object per line
    ledger.json         the log compacted: {"log_offset", "log_head", "spans"} (see `read_ledger`)
    .lock               writer lock: {"pid", "host", "time", "token"}

Every file is written atomically (`atomic.atomic_write`: temp file in the same folder,
flush, fsync, os.replace), so a crash leaves either the old or the new version of a file,
never half of one. Stray temp files from a crash are removed when the session is next
opened for writing. The layout is known here only: other code asks `Session` for paths
(`mask_path`, `masks_stamp`, `exists`).

Tracker settings that belong to the session (``settings`` in session.json, listed in
`TRACKER_SETTINGS`): ``max_resolution`` (processing size, 0 = source size), ``mem_every``
and ``max_memory_frames`` (XMem's memory), ``half_precision`` (the default of the engine's
``half``), ``sam2_model`` (the SAM 2.1 size of the sam2 backend). They shape every
tracked mask and are part of each finished span's signature, so they are fixed when the session is made (from Blender's preferences) and read from the
session by every engine that opens it: changing a preference later does not mix masks
made two ways into one session. The worker returns them in its session info.

Version 1 sessions (no alpha) open as they are; opening one for writing migrates it to
version 2 (adds the alpha folder, rewrites session.json). Frames without fresh alpha read
their alpha as the hard mask.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
import weakref
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import TMP_SUFFIX, atomic_write, remove_stray_temps
from .errors import InputError, SessionError

FORMAT = "tam-session"
VERSION = 2  # 2: soft alpha (alpha/) beside the hard label maps
MAX_OBJECTS = 255
MASK_KINDS = ("keyframe", "tracked", "refined")
TRACKER_SETTINGS = ("max_resolution", "mem_every", "max_memory_frames", "half_precision", "sam2_model")

SESSION_FILE = "session.json"
OBJECTS_FILE = "objects.json"
PROMPTS_FILE = "prompts.json"
LOG_FILE = "log.jsonl"
LEDGER_FILE = "ledger.json"
LOCK_FILE = ".lock"
MASKS_DIR = "masks"

ALPHA_DIR = "alpha"

_MASK_RE = re.compile(r"^f(\d+)\.npz$")
_OWN_NAMES = {SESSION_FILE, OBJECTS_FILE, PROMPTS_FILE, LOG_FILE, LEDGER_FILE, LOCK_FILE, MASKS_DIR, ALPHA_DIR}

logger = logging.getLogger(__name__)

# Distinct default colours (linear-ish RGB 0..1) for the first objects; later ids walk
# the hue circle by the golden ratio so neighbours stay far apart.
_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.20, 0.20),
    (0.20, 0.70, 0.25),
    (0.20, 0.40, 0.95),
    (0.95, 0.80, 0.15),
    (0.75, 0.25, 0.85),
    (0.10, 0.80, 0.80),
    (0.95, 0.50, 0.10),
    (0.55, 0.85, 0.15),
    (0.95, 0.40, 0.65),
    (0.45, 0.30, 0.15),
    (0.50, 0.55, 0.95),
    (0.60, 0.60, 0.60),
)


# ----------------------------------------------------------------------------- helpers


def _write_json(path: Path, data: Any) -> None:
    """Atomically write `data` as pretty JSON (small files, human-inspectable)."""
    atomic_write(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _last_newline_end(f: Any, chunk: int = 1 << 16) -> int | None:
    """Where a file should be cut to drop a half-written last line; None when it ends whole.

    Reads backwards from the end in chunks, so a long log costs one chunk, not its size.
    """
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return None
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return None
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        f.seek(start)
        i = f.read(pos - start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
    return 0


def _pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this machine (zombies count as alive)."""
    if pid <= 0:
        return False
    if sys.platform.startswith("win"):
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == 259  # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _check_int(value: Any, what: str) -> int:
    """Accept Python/numpy integers (and integral floats); anything else is an InputError."""
    if isinstance(value, bool):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    raise InputError(f"{what} must be a whole number, got {value!r}")


def _check_float(value: Any, what: str) -> float:
    """A finite coordinate, or an InputError naming it."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    return f


def default_color(obj_id: int) -> tuple[float, float, float]:
    """A distinct display colour for object `obj_id` (fixed palette, then golden-ratio hues)."""
    if 1 <= obj_id <= len(_PALETTE):
        return _PALETTE[obj_id - 1]
    h = ((obj_id - 1) * 0.6180339887498949) % 1.0
    s, v = 0.7, 0.9
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (round(rgb[0], 4), round(rgb[1], 4), round(rgb[2], 4))


def _crc(labels: np.ndarray) -> int:
    """CRC-32 of a label map: ties a soft alpha to the exact mask it was made from."""
    import zlib

    return zlib.crc32(np.ascontiguousarray(labels, np.uint8).tobytes()) & 0xFFFFFFFF


def npz_bytes(**arrays: np.ndarray) -> bytes:
    """A compressed .npz (what np.load reads) built in memory with fast deflate level 1.

    np.savez_compressed uses level 6, about 3x slower on label maps for no useful gain.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, arr in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def mask_filename(frame: int) -> str:
    """File name of the mask record of source frame `frame` (f000123.npz)."""
    return f"f{frame:06d}.npz"


# ----------------------------------------------------------------------------- records


@dataclass
class SourceInfo:
    """What the session tracks: a video file or an ordered image sequence."""

    path: str
    kind: str  # 'video' | 'images'
    width: int
    height: int
    fps: float
    num_frames: int
    files: list[str] | None = None  # image sequences: ordered file paths

    def to_dict(self) -> dict:
        """JSON form for session.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SourceInfo:
        """Inverse of `to_dict`; raises KeyError/TypeError/ValueError on a malformed dict."""
        files = d.get("files")
        return cls(
            path=str(d["path"]),
            kind=str(d["kind"]),
            width=int(d["width"]),
            height=int(d["height"]),
            fps=float(d["fps"]),
            num_frames=int(d["num_frames"]),
            files=[str(f) for f in files] if files is not None else None,
        )


@dataclass
class FrameMapping:
    """Linear map between Blender scene frames and 0-based source frame indices.

    `scene_start` is the scene frame that shows source frame `source_start`; `length`
    (None = to the end of the source) is how many source frames the strip shows.
    Both conversions are plain linear maps; use `contains_scene`/`contains_source` to
    ask whether a frame is inside the mapped range.
    """

    scene_start: int = 0
    source_start: int = 0
    length: int | None = None

    def scene_to_source(self, scene_frame: int) -> int:
        """Source index shown at `scene_frame`."""
        return int(scene_frame) - self.scene_start + self.source_start

    def source_to_scene(self, index: int) -> int:
        """Scene frame at which source index `index` is shown."""
        return int(index) - self.source_start + self.scene_start

    def contains_source(self, index: int, num_frames: int | None = None) -> bool:
        """True if source `index` lies in the mapped range (and inside a source of `num_frames`)."""
        if index < self.source_start or index < 0:
            return False
        if self.length is not None and index >= self.source_start + self.length:
            return False
        return num_frames is None or index < num_frames

    def contains_scene(self, scene_frame: int, num_frames: int | None = None) -> bool:
        """True if `scene_frame` shows a frame of the mapped source range."""
        return self.contains_source(self.scene_to_source(scene_frame), num_frames)

    def source_of(self, scene_frame: int, num_frames: int | None = None) -> int:
        """Source index shown at `scene_frame`; InputError when the strip does not show that frame."""
        if self.contains_scene(scene_frame, num_frames):
            return self.scene_to_source(scene_frame)
        first = self.source_to_scene(max(0, self.source_start))
        if self.length is not None or num_frames is not None:
            shown = self.source_range(num_frames if num_frames is not None else self.source_start + self.length)
            where = f"frames {first}..{first + len(shown) - 1}"
        else:
            where = f"frames from {first}"
        raise InputError(f"frame {int(scene_frame)} is outside the strip ({where})")

    def source_range(self, num_frames: int) -> range:
        """The source indices the mapping covers, clipped to a source of `num_frames`."""
        start = max(0, self.source_start)
        stop = num_frames if self.length is None else min(num_frames, self.source_start + self.length)
        return range(start, max(start, stop))

    def to_dict(self) -> dict:
        """JSON form for session.json."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FrameMapping:
        """Inverse of `to_dict`."""
        length = d.get("length")
        return cls(int(d.get("scene_start", 0)), int(d.get("source_start", 0)),
                   None if length is None else int(length))


@dataclass
class ObjectInfo:
    """One tracked object: its label id (1..255), a display name and colour."""

    id: int
    name: str
    color: tuple[float, float, float]


@dataclass
class Click:
    """A positive (include) or negative (exclude) click on source frame `frame`."""

    frame: int
    obj: int
    x: float
    y: float
    positive: bool = True


@dataclass
class Box:
    """A box prompt on source frame `frame`, corners in pixels (x0 < x1, y0 < y1)."""

    frame: int
    obj: int
    x0: float
    y0: float
    x1: float
    y1: float


@dataclass
class MaskPrompt:
    """A whole object mask given on source frame `frame` (an edited spline): run lengths, row-major.

    `runs` alternates background and object pixel counts, starting with background;
    the mask is the keyframe for `obj` on that frame, like a box or clicks are.
    """

    frame: int
    obj: int
    runs: list[int]

    def mask(self, width: int, height: int) -> np.ndarray:
        """The boolean (height, width) mask these runs encode."""
        return runs_to_mask(self.runs, width, height)


Prompt = Click | Box | MaskPrompt


def mask_to_runs(mask: np.ndarray) -> list[int]:
    """Row-major run lengths of a boolean mask, alternating background/object, starting with background."""
    flat = np.asarray(mask, dtype=bool).ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], edges, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def runs_to_mask(runs: list[int], width: int, height: int) -> np.ndarray:
    """Inverse of `mask_to_runs`; ValueError if the runs do not cover width x height pixels."""
    counts = np.asarray(runs, dtype=np.int64)
    if counts.sum() != width * height or (counts < 0).any():
        raise ValueError(f"mask runs cover {int(counts.sum())} pixels, not {width}x{height}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


@dataclass
class MaskRecord:
    """The stored segmentation of one source frame: a label map plus per-object confidence."""

    frame: int
    labels: np.ndarray  # uint8 (H, W)
    obj_ids: list[int]
    confidence: dict[int, float]
    kind: str

    def mask(self, obj: int) -> np.ndarray:
        """Boolean mask of object `obj` on this frame."""
        return self.labels == int(obj)


def _prompt_to_dict(p: Prompt) -> dict:
    """JSON form of a prompt, tagged with its type."""
    d = asdict(p)
    d["type"] = "click" if isinstance(p, Click) else "box" if isinstance(p, Box) else "mask"
    return d


def _prompt_from_dict(d: dict) -> Prompt:
    """Inverse of `_prompt_to_dict`."""
    d = dict(d)
    kind = d.pop("type")
    if kind == "click":
        return Click(int(d["frame"]), int(d["obj"]), float(d["x"]), float(d["y"]), bool(d.get("positive", True)))
    if kind == "box":
        return Box(int(d["frame"]), int(d["obj"]), float(d["x0"]), float(d["y0"]), float(d["x1"]), float(d["y1"]))
    if kind == "mask":
        return MaskPrompt(int(d["frame"]), int(d["obj"]), [int(r) for r in d["runs"]])
    raise ValueError(f"unknown prompt type {kind!r}")


# ----------------------------------------------------------------------------- lock


def _read_lock(path: Path) -> dict | None:
    """The lock's content, {} if unreadable, None if there is no lock."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _acquire_lock(session_dir: Path) -> str:
    """Take the writer lock of `session_dir` (stale locks of dead local pids are taken over)."""
    lock = session_dir / LOCK_FILE
    host = socket.gethostname()
    token = uuid.uuid4().hex
    payload = json.dumps({"pid": os.getpid(), "host": host, "time": time.time(), "token": token}).encode()
    for _attempt in range(5):
        # Write the content first, then hard-link it into place: the lock appears
        # atomically with its content, and link() fails if a lock already exists.
        fd, tmp = tempfile.mkstemp(prefix=".lock.", suffix=TMP_SUFFIX, dir=session_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, lock)
                return token
            except FileExistsError:
                pass
            except OSError:
                # File systems without hard links: exclusive create, then write.
                try:
                    lfd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                except FileExistsError:
                    pass
                else:
                    with os.fdopen(lfd, "wb") as f:
                        f.write(payload)
                        f.flush()
                        os.fsync(f.fileno())
                    return token
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        held = _read_lock(lock)
        if held is None:
            continue  # released between our attempt and the read: try again
        pid = held.get("pid")
        lock_host = held.get("host")
        if not isinstance(pid, int) or not held:
            logger.warning("session %s: unreadable lock file, taking it over", session_dir)
        elif lock_host == host and pid == os.getpid():
            raise SessionError(f"session {session_dir} is already open for writing in this process")
        elif lock_host == host and not _pid_alive(pid):
            logger.warning("session %s: taking over the stale lock of dead process %d", session_dir, pid)
        elif lock_host != host:
            raise SessionError(
                f"session {session_dir} is open in another process (pid {pid} on host {lock_host}); "
                f"if that is wrong, delete {lock}"
            )
        else:
            raise SessionError(f"session {session_dir} is open in another process (pid {pid})")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    raise SessionError(f"session {session_dir}: could not take the writer lock")


def _release_lock(session_dir: Path, token: str) -> None:
    """Remove the writer lock if it is still ours."""
    lock = session_dir / LOCK_FILE
    held = _read_lock(lock)
    if held and held.get("token") == token:
        with contextlib.suppress(OSError):
            os.unlink(lock)


# ----------------------------------------------------------------------------- session


class Session:
    """An open session directory; writable sessions hold the writer lock until `close`."""

    def __init__(self, path: Path, writable: bool, _token: str | None) -> None:
        """Use `Session.create` or `Session.open`."""
        self.path = Path(path)
        self.writable = writable
        self.closed = False
        self._token = _token
        self._mutex = threading.RLock()
        self._finalizer = (
            weakref.finalize(self, _release_lock, self.path, _token) if writable and _token else None
        )
        self._stamps: dict[str, tuple] = {}
        self._objects: list[ObjectInfo] = []
        self._next_id = 1
        self._prompts: list[Prompt] = []
        self.source: SourceInfo
        self.mapping: FrameMapping
        self.backend: str
        self.settings: dict

    # -- construction

    @classmethod
    def create(
        cls,
        path: str | Path,
        source: SourceInfo,
        mapping: FrameMapping | None = None,
        backend: str = "classic",
    ) -> Session:
        """Make a new session directory for `source` and open it for writing."""
        path = Path(path)
        if source.width <= 0 or source.height <= 0 or source.num_frames <= 0:
            raise InputError(
                f"source {source.path} has no frames to work on "
                f"({source.width}x{source.height}, {source.num_frames} frames)"
            )
        if source.kind not in ("video", "images"):
            raise InputError(f"source kind must be 'video' or 'images', got {source.kind!r}")
        if (path / SESSION_FILE).exists():
            raise SessionError(f"session {path} already exists; open it instead")
        if path.exists():
            if not path.is_dir():
                raise SessionError(f"cannot create session {path}: it is a file")
            foreign = [p.name for p in path.iterdir()
                       if p.name not in _OWN_NAMES and not p.name.endswith(TMP_SUFFIX)]
            if foreign:
                raise SessionError(f"cannot create session {path}: the folder holds other files ({foreign[0]})")
        path.mkdir(parents=True, exist_ok=True)
        (path / MASKS_DIR).mkdir(exist_ok=True)
        token = _acquire_lock(path)
        self = cls(path, True, token)
        try:
            remove_stray_temps(path)
            remove_stray_temps(path / MASKS_DIR)
            self.source = source
            self.mapping = mapping or FrameMapping()
            self.backend = backend
            self.settings = {}
            self._save_objects()
            self._save_prompts()
            # session.json last: its presence marks a complete session.
            self.save()
        except BaseException:
            self.close()
            raise
        return self

    @classmethod
    def open(cls, path: str | Path, writable: bool = True) -> Session:
        """Open an existing session; SessionError if locked, newer, damaged or not a session."""
        path = Path(path)
        meta = cls._read_session_json(path)
        token = _acquire_lock(path) if writable else None
        self = cls(path, writable, token)
        try:
            self._apply_session_json(meta)
            if writable:
                self._recover()
                if meta["version"] < VERSION:
                    self._migrate(meta["version"])
            self._reload_tables(force=True)
        except BaseException:
            self.close()
            raise
        return self

    @staticmethod
    def _read_session_json(path: Path) -> dict:
        """Load and check session.json (format, version)."""
        f = path / SESSION_FILE
        if not path.is_dir() or not f.is_file():
            raise SessionError(f"{path} is not a Track Anything session (no {SESSION_FILE})")
        try:
            meta = json.loads(f.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise SessionError(f"session {path}: {SESSION_FILE} is unreadable ({e})") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SessionError(f"{path} is not a Track Anything session (format is not {FORMAT!r})")
        version = meta.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise SessionError(f"session {path} has an unknown format version {version!r}")
        if version > VERSION:
            raise SessionError(
                f"session {path} was written by a newer version of the add-on "
                f"(format version {version}; this one reads up to {VERSION})"
            )
        return meta

    def _migrate(self, version: int) -> None:
        """Bring an older session up to VERSION in place (1 -> 2: an empty alpha folder)."""
        (self.path / ALPHA_DIR).mkdir(exist_ok=True)
        self.save()
        self.log("migrated", from_version=version, to_version=VERSION)

    def _apply_session_json(self, meta: dict) -> None:
        """Fill source/mapping/backend/settings from a checked session.json dict."""
        try:
            self.source = SourceInfo.from_dict(meta["source"])
            self.mapping = FrameMapping.from_dict(meta.get("mapping") or {})
        except (KeyError, TypeError, ValueError) as e:
            raise SessionError(f"session {self.path}: {SESSION_FILE} is damaged ({e!r})") from None
        self.backend = str(meta.get("backend", "classic"))
        settings = meta.get("settings") or {}
        self.settings = dict(settings) if isinstance(settings, dict) else {}

    def _recover(self) -> None:
        """Clean up after a crash: stray temp files, a half-written last log line."""
        (self.path / MASKS_DIR).mkdir(exist_ok=True)
        for folder in (self.path, self.path / MASKS_DIR, self.path / ALPHA_DIR):
            for p in remove_stray_temps(folder):
                logger.info("session %s: removed stray temp file %s", self.path, p.name)
        log = self.path / LOG_FILE
        if log.is_file():
            with open(log, "rb+") as f:
                end = _last_newline_end(f)
                if end is not None:
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
                    logger.warning("session %s: dropped a half-written log line", self.path)

    def close(self) -> None:
        """Release the writer lock; the session object cannot be used afterwards."""
        if self.closed:
            return
        self.closed = True
        if self._finalizer is not None:
            self._finalizer()  # releases the lock once

    def __enter__(self) -> Session:
        """Context-manager form: closes (and unlocks) on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the `with` block."""
        self.close()

    def __repr__(self) -> str:
        """Path and mode, for logs."""
        mode = "closed" if self.closed else ("rw" if self.writable else "ro")
        return f"<Session {self.path} {mode}>"

    # -- internals

    def _check_open(self) -> None:
        """SessionError if the session was closed."""
        if self.closed:
            raise SessionError(f"session {self.path} is closed")

    def _check_writable(self) -> None:
        """SessionError if this handle may not write."""
        self._check_open()
        if not self.writable:
            raise SessionError(f"session {self.path} is open read-only")

    def _stamp(self, name: str) -> tuple | None:
        """A change stamp for a session file (inode, mtime, size), None if absent."""
        try:
            st = os.stat(self.path / name)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load_json(self, name: str, default: Any) -> Any:
        """Read a session JSON table; missing -> default, damaged -> SessionError."""
        f = self.path / name
        try:
            return json.loads(f.read_text("utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as e:
            raise SessionError(f"session {self.path}: {name} is damaged ({e})") from None

    def _reload_tables(self, force: bool = False) -> None:
        """(Re)read objects.json and prompts.json; read-only handles follow the writer's changes."""
        if not force and self.writable:
            return
        with self._mutex:
            st = self._stamp(OBJECTS_FILE)
            if force or st != self._stamps.get(OBJECTS_FILE):
                data = self._load_json(OBJECTS_FILE, {"next_id": 1, "objects": []})
                try:
                    objects = [ObjectInfo(int(o["id"]), str(o["name"]), tuple(float(c) for c in o["color"]))
                               for o in data["objects"]]
                    next_id = int(data.get("next_id", 1))
                except (KeyError, TypeError, ValueError) as e:
                    raise SessionError(f"session {self.path}: {OBJECTS_FILE} is damaged ({e!r})") from None
                self._objects = sorted(objects, key=lambda o: o.id)
                self._next_id = max([next_id] + [o.id + 1 for o in objects])
                self._stamps[OBJECTS_FILE] = st
            st = self._stamp(PROMPTS_FILE)
            if force or st != self._stamps.get(PROMPTS_FILE):
                data = self._load_json(PROMPTS_FILE, {"prompts": []})
                try:
                    self._prompts = [_prompt_from_dict(d) for d in data["prompts"]]
                except (KeyError, TypeError, ValueError) as e:
                    raise SessionError(f"session {self.path}: {PROMPTS_FILE} is damaged ({e!r})") from None
                self._stamps[PROMPTS_FILE] = st

    def _save_objects(self) -> None:
        """Persist the object table."""
        _write_json(self.path / OBJECTS_FILE, {
            "next_id": self._next_id,
            "objects": [{"id": o.id, "name": o.name, "color": list(o.color)} for o in self._objects],
        })
        self._stamps[OBJECTS_FILE] = self._stamp(OBJECTS_FILE)

    def _save_prompts(self) -> None:
        """Persist the prompt list."""
        _write_json(self.path / PROMPTS_FILE, {"prompts": [_prompt_to_dict(p) for p in self._prompts]})
        self._stamps[PROMPTS_FILE] = self._stamp(PROMPTS_FILE)

    def _check_frame(self, frame: Any) -> int:
        """A valid source frame index, or an InputError naming the range."""
        f = _check_int(frame, "frame")
        if not 0 <= f < self.source.num_frames:
            raise InputError(f"frame {f} is outside the source (frames 0..{self.source.num_frames - 1})")
        return f

    # -- whole-session state

    def save(self) -> None:
        """Persist session.json (source, mapping, backend, settings) after changing them."""
        self._check_writable()
        with self._mutex:
            _write_json(self.path / SESSION_FILE, {
                "format": FORMAT,
                "version": VERSION,
                "source": self.source.to_dict(),
                "mapping": self.mapping.to_dict(),
                "backend": self.backend,
                "settings": self.settings,
            })

    def reload(self) -> None:
        """Re-read everything from disk (for read-only handles that follow a writer)."""
        self._check_open()
        with self._mutex:
            self._apply_session_json(self._read_session_json(self.path))
            self._reload_tables(force=True)

    # -- objects

    @property
    def objects(self) -> list[ObjectInfo]:
        """The objects, sorted by id."""
        self._check_open()
        self._reload_tables()
        return list(self._objects)

    def get_object(self, obj_id: int) -> ObjectInfo:
        """The object with id `obj_id`; InputError if there is none."""
        self._check_open()
        self._reload_tables()
        oid = _check_int(obj_id, "object id")
        for o in self._objects:
            if o.id == oid:
                return o
        raise InputError(f"there is no object {oid} in this session")

    def add_object(self, name: str | None = None, color: Any = None, obj_id: int | None = None) -> ObjectInfo:
        """Add an object; ids are given from 1 in the order objects are added (max 255)."""
        self._check_writable()
        with self._mutex:
            used = {o.id for o in self._objects}
            if obj_id is not None:
                oid = _check_int(obj_id, "object id")
                if not 1 <= oid <= MAX_OBJECTS:
                    raise InputError(f"object id must be 1..{MAX_OBJECTS}, got {oid}")
                if oid in used:
                    raise InputError(f"object id {oid} is already used")
            elif self._next_id <= MAX_OBJECTS and self._next_id not in used:
                oid = self._next_id
            else:
                free = [i for i in range(1, MAX_OBJECTS + 1) if i not in used]
                if not free:
                    raise InputError(f"a session holds at most {MAX_OBJECTS} objects")
                oid = free[0]
            if color is None:
                rgb = default_color(oid)
            else:
                try:
                    rgb = tuple(float(c) for c in color)
                except (TypeError, ValueError):
                    raise InputError(f"colour must be three numbers, got {color!r}") from None
                if len(rgb) != 3:
                    raise InputError(f"colour must be three numbers, got {color!r}")
            obj = ObjectInfo(oid, str(name) if name else f"Object {oid}", rgb)  # type: ignore[arg-type]
            self._objects = sorted([*self._objects, obj], key=lambda o: o.id)
            self._next_id = max(self._next_id, oid + 1)
            self._save_objects()
            return obj

    def update_object(self, obj_id: int, name: str | None = None, color: Any = None) -> ObjectInfo:
        """Rename or recolour an object."""
        self._check_writable()
        with self._mutex:
            old = self.get_object(obj_id)
            rgb = old.color
            if color is not None:
                try:
                    rgb = tuple(float(c) for c in color)  # type: ignore[assignment]
                except (TypeError, ValueError):
                    raise InputError(f"colour must be three numbers, got {color!r}") from None
                if len(rgb) != 3:
                    raise InputError(f"colour must be three numbers, got {color!r}")
            new = ObjectInfo(old.id, str(name) if name else old.name, rgb)
            self._objects = [new if o.id == old.id else o for o in self._objects]
            self._save_objects()
            return new

    def remove_object(self, obj_id: int) -> None:
        """Delete an object, its prompts and its pixels in every stored mask."""
        self._check_writable()
        with self._mutex:
            oid = self.get_object(obj_id).id
            # Masks first, the object table last: an interrupted removal can simply be redone.
            for frame in self.mask_frames():
                rec = self.read_mask(frame)
                if rec is None or oid not in rec.obj_ids:
                    continue
                labels = rec.labels.copy()
                labels[labels == oid] = 0
                conf = {k: v for k, v in rec.confidence.items() if k != oid}
                self._store_mask(frame, labels, [i for i in rec.obj_ids if i != oid], conf, rec.kind)
            self._prompts = [p for p in self._prompts if p.obj != oid]
            self._save_prompts()
            self._objects = [o for o in self._objects if o.id != oid]
            self._save_objects()

    # -- prompts

    def add_click(self, frame: int, obj: int, x: float, y: float, positive: bool = True) -> Click:
        """Record a click; InputError if the frame, point or object is invalid."""
        self._check_writable()
        with self._mutex:
            f = self._check_frame(frame)
            oid = self.get_object(obj).id
            fx, fy = _check_float(x, "x"), _check_float(y, "y")
            w, h = self.source.width, self.source.height
            if not (0 <= fx < w and 0 <= fy < h):
                raise InputError(f"the click at ({fx:g}, {fy:g}) is outside the frame ({w}x{h})")
            click = Click(f, oid, fx, fy, bool(positive))
            self._prompts.append(click)
            self._save_prompts()
            return click

    def add_box(self, frame: int, obj: int, x0: float, y0: float, x1: float, y1: float) -> Box:
        """Record a box (corners in any order, inside [0, W] x [0, H], non-empty)."""
        self._check_writable()
        with self._mutex:
            f = self._check_frame(frame)
            oid = self.get_object(obj).id
            xs = sorted((_check_float(x0, "x0"), _check_float(x1, "x1")))
            ys = sorted((_check_float(y0, "y0"), _check_float(y1, "y1")))
            w, h = self.source.width, self.source.height
            if xs[0] < 0 or ys[0] < 0 or xs[1] > w or ys[1] > h:
                raise InputError(
                    f"the box ({xs[0]:g}, {ys[0]:g})-({xs[1]:g}, {ys[1]:g}) is outside the frame ({w}x{h})"
                )
            if xs[1] - xs[0] < 1 or ys[1] - ys[0] < 1:
                raise InputError(f"the box ({xs[0]:g}, {ys[0]:g})-({xs[1]:g}, {ys[1]:g}) is empty")
            box = Box(f, oid, xs[0], ys[0], xs[1], ys[1])
            self._prompts.append(box)
            self._save_prompts()
            return box

    def add_mask(self, frame: int, obj: int, mask: np.ndarray) -> MaskPrompt:
        """Make `mask` the object's keyframe on `frame`; it replaces that object's earlier prompts there."""
        self._check_writable()
        with self._mutex:
            f = self._check_frame(frame)
            oid = self.get_object(obj).id
            m = np.asarray(mask)
            w, h = self.source.width, self.source.height
            if m.shape != (h, w):
                raise InputError(f"the mask is {m.shape[1] if m.ndim == 2 else '?'}x{m.shape[0]}, not the source's {w}x{h}")
            if not m.any():
                raise InputError(f"the mask for object {oid} on frame {f} is empty")
            prompt = MaskPrompt(f, oid, mask_to_runs(m.astype(bool)))
            self._prompts = [p for p in self._prompts if not (p.frame == f and p.obj == oid)] + [prompt]
            self._save_prompts()
            return prompt

    def prompts(self, frame: int | None = None, obj: int | None = None) -> list[Prompt]:
        """The prompts in the order given, optionally only those on `frame` and/or for `obj`."""
        self._check_open()
        self._reload_tables()
        return [p for p in self._prompts
                if (frame is None or p.frame == int(frame)) and (obj is None or p.obj == int(obj))]

    def clear_prompts(self, frame: int, obj: int | None = None) -> None:
        """Remove the prompts on `frame` (only those of `obj` if given)."""
        self._check_writable()
        with self._mutex:
            f = int(frame)
            self._prompts = [p for p in self._prompts
                             if not (p.frame == f and (obj is None or p.obj == int(obj)))]
            self._save_prompts()

    def undo_prompt(self, frame: int, obj: int | None = None) -> Prompt | None:
        """Remove and return the latest prompt on `frame` (of `obj` if given); None if there is none."""
        self._check_writable()
        with self._mutex:
            for i in range(len(self._prompts) - 1, -1, -1):
                p = self._prompts[i]
                if p.frame == int(frame) and (obj is None or p.obj == int(obj)):
                    del self._prompts[i]
                    self._save_prompts()
                    return p
            return None

    def keyframes(self) -> list[int]:
        """Sorted source frames that hold prompts."""
        self._check_open()
        self._reload_tables()
        return sorted({p.frame for p in self._prompts})

    # -- masks

    def write_mask(
        self,
        frame: int,
        labels: np.ndarray,
        confidence: dict[int, float] | None = None,
        kind: str = "tracked",
    ) -> None:
        """Store the label map of `frame` (replacing any earlier one) atomically."""
        self._check_writable()
        with self._mutex:
            f = self._check_frame(frame)
            if kind not in MASK_KINDS:
                raise InputError(f"mask kind must be one of {', '.join(MASK_KINDS)}, got {kind!r}")
            arr = np.asarray(labels)
            shape = (self.source.height, self.source.width)
            if arr.shape != shape:
                raise InputError(f"label map of frame {f} has shape {arr.shape}, expected {shape}")
            if arr.dtype == np.bool_:
                raise InputError("write_mask takes a uint8 label map, not a bool mask")
            if arr.dtype != np.uint8:
                if not np.issubdtype(arr.dtype, np.integer) or (arr.size and (arr.min() < 0 or arr.max() > 255)):
                    raise InputError(f"label map of frame {f} must hold ids 0..255, got dtype {arr.dtype}")
                arr = arr.astype(np.uint8)
            known = {o.id for o in self._objects}
            counts = np.bincount(arr.ravel(), minlength=256)
            present = {int(v) for v in np.flatnonzero(counts[1:]) + 1}
            conf = {}
            for k, v in (confidence or {}).items():
                conf[_check_int(k, "object id")] = _check_float(v, "confidence")
            unknown = sorted((present | set(conf)) - known)
            if unknown:
                raise InputError(f"label map of frame {f} holds unknown object id(s) {unknown}")
            obj_ids = sorted(present | set(conf))
            conf = {i: conf.get(i, 1.0) for i in obj_ids}
            areas = counts[np.asarray(obj_ids, dtype=np.int64)] if obj_ids else np.zeros(0, np.int64)
            self._store_mask(f, np.ascontiguousarray(arr), obj_ids, conf, kind, areas)

    def _store_mask(self, frame: int, labels: np.ndarray, obj_ids: list[int],
                    confidence: dict[int, float], kind: str, areas: np.ndarray | None = None) -> None:
        """Write one mask record as a compressed npz, atomically.

        `areas` (pixels per object) lets summaries skip decompressing the label map.
        """
        if areas is None:
            counts = np.bincount(labels.ravel(), minlength=256)
            areas = counts[np.asarray(obj_ids, dtype=np.int64)] if obj_ids else np.zeros(0, np.int64)
        data = npz_bytes(
            labels=labels.astype(np.uint8, copy=False),
            obj_ids=np.asarray(obj_ids, dtype=np.int32),
            confidence=np.asarray([confidence[i] for i in obj_ids], dtype=np.float32),
            kind=np.asarray(kind),
            areas=np.asarray(areas, dtype=np.int64),
        )
        atomic_write(self.mask_path(frame), data, sync_dir=False)

    def read_mask(self, frame: int) -> MaskRecord | None:
        """The mask record of `frame`; None if absent or unreadable (logged, then set aside)."""
        self._check_open()
        f = int(frame)
        p = self.mask_path(f)
        try:
            with np.load(p, allow_pickle=False) as z:
                labels = z["labels"]
                obj_ids = [int(i) for i in z["obj_ids"]]
                conf_arr = z["confidence"]
                kind = str(z["kind"])
            shape = (self.source.height, self.source.width)
            if labels.dtype != np.uint8 or labels.shape != shape:
                raise ValueError(f"labels are {labels.dtype} {labels.shape}, expected uint8 {shape}")
            if conf_arr.shape != (len(obj_ids),):
                raise ValueError("confidence and obj_ids differ in length")
            if kind not in MASK_KINDS:
                raise ValueError(f"unknown kind {kind!r}")
        except FileNotFoundError:
            return None
        except OSError as e:  # the file is there but cannot be opened now: not damage
            logger.warning("session %s: mask of frame %d cannot be read now (%s)", self.path, f, e)
            return None
        except Exception as e:  # noqa: BLE001 - bad zip, missing keys, wrong shapes: damage
            self._set_aside_bad_mask(p, f, e)
            return None
        return MaskRecord(f, labels, obj_ids, {i: float(c) for i, c in zip(obj_ids, conf_arr, strict=True)}, kind)

    def mask_summary(self, frame: int) -> tuple[str, dict[int, tuple[float, int]]] | None:
        """(kind, {object: (confidence, pixel count)}) of `frame` without loading its label map.

        Cheap on long 4K shots: only the small arrays are decompressed (older records
        without stored areas fall back to counting the labels). None if absent/unreadable.
        """
        self._check_open()
        p = self.mask_path(frame)
        try:
            with np.load(p, allow_pickle=False) as z:
                obj_ids = [int(i) for i in z["obj_ids"]]
                conf = [float(c) for c in z["confidence"]]
                kind = str(z["kind"])
                if "areas" in z.files:
                    areas = [int(a) for a in z["areas"]]
                else:
                    counts = np.bincount(z["labels"].ravel(), minlength=256)
                    areas = [int(counts[i]) for i in obj_ids]
        except Exception:  # noqa: BLE001 - absent or damaged: read_mask reports damage
            return None
        if not (len(obj_ids) == len(conf) == len(areas)):
            return None
        return kind, {o: (c, a) for o, c, a in zip(obj_ids, conf, areas, strict=True)}

    def doubtful_frames(self, threshold: float = 0.5, frames=None) -> list[tuple[int, int, float]]:
        """(frame, object, confidence) wherever a tracked object is visible but unsure.

        Keyframes (the user's own masks) never count. `frames` limits the search.
        """
        wanted = None if frames is None else set(frames)
        out = []
        for f in self.mask_frames():
            if wanted is not None and f not in wanted:
                continue
            summary = self.mask_summary(f)
            if summary is None or summary[0] == "keyframe":
                continue
            for o, (c, area) in summary[1].items():
                if c < threshold and area > 0:
                    out.append((f, o, c))
        return out

    def _set_aside_bad_mask(self, p: Path, frame: int, err: Exception) -> None:
        """Log an unreadable mask file; a writer renames it to *.bad so the frame counts as absent."""
        logger.warning("session %s: mask of frame %d is unreadable (%s); treating it as absent",
                       self.path, frame, err)
        if self.writable and not self.closed:
            with self._mutex:
                with contextlib.suppress(OSError):
                    os.replace(p, p.with_name(p.name + ".bad"))
                self.log("mask_unreadable", frame=frame, error=str(err)[:200])

    # -- where things are (the folder layout is known here only)

    @staticmethod
    def exists(path: str | Path) -> bool:
        """True when `path` holds a session (its session.json), e.g. to open rather than create."""
        return (Path(path) / SESSION_FILE).is_file()

    @staticmethod
    def output_dir(path: str | Path, name: str) -> Path:
        """The folder inside the session at `path` for an output called `name` (mattes, shapes,
        a removal); InputError for a name that is not a plain folder name or is the session's own."""
        if name in _OWN_NAMES or name != Path(name).name or name in ("", ".", ".."):
            raise InputError(f"{name!r} cannot name an output folder inside a session")
        return Path(path) / name

    def tracker_settings(self) -> dict[str, Any]:
        """The session's own tracker settings (see the module docstring); None = the backend's default."""
        return {k: self.settings.get(k) for k in TRACKER_SETTINGS}

    def mask_path(self, frame: int) -> Path:
        """The file of source frame `frame`'s mask record (for change stamps; read it with `read_mask`)."""
        return self.path / MASKS_DIR / mask_filename(int(frame))

    def masks_stamp(self) -> tuple[int, int, int]:
        """(files, total bytes, newest mtime in ns) of the stored masks: changes whenever a mask does."""
        folder = self.path / MASKS_DIR
        if not folder.is_dir():
            return 0, 0, 0
        stats = [e.stat() for e in os.scandir(folder) if _MASK_RE.match(e.name)]
        return len(stats), sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)

    def mask_frames(self) -> list[int]:
        """Sorted source frames that have a stored mask record."""
        self._check_open()
        folder = self.path / MASKS_DIR
        if not folder.is_dir():
            return []
        out = []
        for name in os.listdir(folder):
            m = _MASK_RE.match(name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def object_mask(self, frame: int, obj: int) -> np.ndarray:
        """Boolean mask of `obj` on `frame`; all False if the frame has no record."""
        rec = self.read_mask(frame)
        if rec is None:
            return np.zeros((self.source.height, self.source.width), dtype=bool)
        return rec.mask(obj)

    # -- soft alpha (format version 2)

    def write_alpha(self, frame: int, alphas: dict[int, np.ndarray], labels: np.ndarray | None = None) -> None:
        """Store the soft alpha (float 0..1, (H, W)) of objects on `frame`, tied to its current label map.

        Only the box where the alpha differs from the hard mask is kept (16-bit). If the mask is
        later rewritten (re-tracked, object removed), the alpha is stale and reads as absent.
        `labels`: the label map just written for `frame` (saves reading it back; if it is not
        the stored one, the alpha simply reads as stale).
        """
        self._check_writable()
        with self._mutex:
            f = self._check_frame(frame)
            if labels is None:
                rec = self.read_mask(f)
                if rec is None:
                    raise InputError(f"frame {f} has no mask to attach soft alpha to")
                labels = rec.labels
            labels = np.asarray(labels, np.uint8)
            arrays: dict[str, np.ndarray] = {"labels_crc": np.asarray(_crc(labels), np.uint32)}
            ids = []
            for obj, a in sorted(alphas.items()):
                a = np.asarray(a, np.float32)
                if a.shape != labels.shape:
                    raise InputError(f"alpha of object {obj} on frame {f} has shape {a.shape}, "
                                     f"expected {labels.shape}")
                q = np.round(np.clip(a, 0.0, 1.0) * 65535.0).astype(np.uint16)
                diff = q != np.where(labels == obj, np.uint16(65535), np.uint16(0))
                ys, xs = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
                y0, x0 = (int(ys[0]), int(xs[0])) if ys.size else (0, 0)
                y1, x1 = (int(ys[-1]) + 1, int(xs[-1]) + 1) if ys.size else (0, 0)
                arrays[f"box_{int(obj)}"] = np.asarray([y0, x0], np.int32)
                arrays[f"alpha_{int(obj)}"] = np.ascontiguousarray(q[y0:y1, x0:x1])
                ids.append(int(obj))
            arrays["obj_ids"] = np.asarray(ids, np.int32)
            folder = self.path / ALPHA_DIR
            folder.mkdir(exist_ok=True)
            atomic_write(folder / mask_filename(f), npz_bytes(**arrays), sync_dir=False)

    def read_alpha(self, frame: int, labels: np.ndarray | None = None) -> dict[int, np.ndarray] | None:
        """{object: float32 alpha (H, W)} of `frame`; None if absent, unreadable or stale.

        `labels` (the frame's current label map) saves reading the mask again.
        """
        self._check_open()
        f = int(frame)
        if labels is None:
            rec = self.read_mask(f)
            if rec is None:
                return None
            labels = rec.labels
        try:
            with np.load(self.path / ALPHA_DIR / mask_filename(f), allow_pickle=False) as z:
                if int(z["labels_crc"]) != _crc(labels):
                    return None
                out = {}
                for obj in (int(i) for i in z["obj_ids"]):
                    a = (labels == obj).astype(np.float32)
                    y0, x0 = (int(v) for v in z[f"box_{obj}"])
                    crop = z[f"alpha_{obj}"]
                    a[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop.astype(np.float32) / 65535.0
                    out[obj] = a
                return out
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001 - damaged alpha: the hard mask still stands
            logger.warning("session %s: soft alpha of frame %d is unreadable (%s); using the mask", self.path, f, e)
            return None

    def object_alpha(self, frame: int, obj: int) -> np.ndarray:
        """Float32 alpha of `obj` on `frame`: the stored soft alpha if fresh, else the hard mask (0/1)."""
        rec = self.read_mask(frame)
        if rec is None:
            return np.zeros((self.source.height, self.source.width), dtype=np.float32)
        soft = self.read_alpha(frame, rec.labels)
        if soft is not None and obj in soft:
            return soft[obj]
        return rec.mask(obj).astype(np.float32)

    def delete_mask(self, frame: int) -> None:
        """Forget the stored mask of `frame` (kept: the matting branch's alpha tests use it)."""
        self._check_writable()
        with self._mutex, contextlib.suppress(FileNotFoundError):
            os.unlink(self.mask_path(frame))

    # -- job log

    def log(self, event: str, **fields: Any) -> None:
        """Append {"t": time, "event": event, **fields} to log.jsonl and fsync it."""
        self._check_writable()
        entry = {"t": time.time(), "event": str(event), **fields}
        line = json.dumps(entry, default=str) + "\n"
        with self._mutex, open(self.path / LOG_FILE, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def read_log(self) -> list[dict]:
        """All log entries in order (a half-written last line from a crash is skipped)."""
        return self.log_tail(0)[0]

    def log_tail(self, offset: int) -> tuple[list[dict], int]:
        """The log entries after byte `offset` and the offset just past the last whole line.

        Reading from a `read_ledger` offset costs what was logged since, not the whole log.
        """
        self._check_open()
        try:
            with open(self.path / LOG_FILE, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            return [], offset
        whole = data[: data.rfind(b"\n") + 1]  # a half-written last line waits for its end
        out: list[dict] = []
        for line in whole.decode("utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out, offset + len(whole)

    def _log_head(self) -> str:
        """Fingerprint of the log's first line: tells a ledger of this log from one of a replaced log."""
        try:
            with open(self.path / LOG_FILE, "rb") as f:
                return hashlib.sha1(f.readline()).hexdigest()[:16]
        except FileNotFoundError:
            return ""

    def read_ledger(self) -> dict:
        """The compacted log: {"log_offset": bytes covered, "spans": {...}}; empty if absent or stale.

        The engine keeps its per-span tracking state here and replays only `log_tail`
        from ``log_offset``, so resuming a long track does not re-read the whole log.
        """
        self._check_open()
        try:
            data = self._load_json(LEDGER_FILE, None)
        except SessionError:  # derived data: a damaged ledger is rebuilt from the log
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("log_offset"), int):
            return {}
        try:
            size = (self.path / LOG_FILE).stat().st_size
        except FileNotFoundError:
            size = 0
        if data["log_offset"] > size or data.get("log_head") != self._log_head():
            return {}  # the log was truncated or replaced: the ledger no longer describes it
        return data

    def write_ledger(self, log_offset: int, **state: Any) -> None:
        """Record the state the log up to byte `log_offset` adds up to (atomically)."""
        self._check_writable()
        _write_json(self.path / LEDGER_FILE, {"log_offset": int(log_offset), "log_head": self._log_head(), **state})
