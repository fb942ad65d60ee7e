"""The worker protocol: versioned, newline-delimited JSON messages (stdlib only).

Imported by the worker and by the Blender side / CLI (no torch, no numpy), so both ends
encode and check messages with the same code.

Channels
--------
* Requests go client -> worker on the worker's **stdin**, one message per line.
* Events go worker -> client on a **dedicated pipe**, never on stdout: the client makes an
  ``os.pipe()``, hands the write end to the child (POSIX: ``pass_fds`` and
  ``--events-fd N``; Windows: an inheritable handle in the ``handle_list`` and
  ``--events-handle H``) and closes its own copy, so end-of-file on that pipe means the
  worker is gone. At start-up the worker also points fd 1 at stderr, so whatever a
  library prints (to ``sys.stdout`` or from C) lands in the log, not in the protocol.
  A worker started by hand without either option writes events to a private duplicate
  of its original stdout (same redirection of fd 1), which is handy for debugging.

Messages (UTF-8 JSON objects, one line each, at most ``MAX_MESSAGE_BYTES`` with the "\\n")
-------------------------------------------------------------------------------------
* request: ``{"v": 1, "id": N, "cmd": "track", "params": {...}}`` (``id`` >= 0, unique
  per client; ``params`` may be omitted and then means ``{}``).
* event: ``{"v": 1, "req": N | null, "kind": K, "data": {...}}`` with K one of
  ``progress`` (data: stage, done, total, frame, fps, eta_s, message), ``result`` (the
  request's answer, ends it), ``error`` (data: message, error = the TamError class
  name, traceback for unexpected failures; ends the request), ``warning`` and ``log``
  (data: message). ``req`` is null for events about no particular request (e.g. a line
  that could not be parsed at all).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import TamError

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
EVENT_KINDS = ("progress", "result", "warning", "error", "log")
TERMINAL_KINDS = ("result", "error")
PROGRESS_FIELDS = ("stage", "done", "total", "frame", "fps", "eta_s", "message")


class ProtocolError(TamError):
    """A message that breaks the protocol: malformed, truncated, oversized or wrong version.

    `req` is the request id when it could still be read from the broken message, so the
    answer can name the request it refuses.
    """

    def __init__(self, message: str, req: int | None = None) -> None:
        super().__init__(message)
        self.req = req


class ProtocolVersionError(ProtocolError):
    """A message in a protocol version this side does not speak."""

    def __init__(self, version: Any, req: int | None = None, side: str = "worker") -> None:
        super().__init__(f"protocol version {version!r} not supported ({side} speaks {PROTOCOL_VERSION})", req)
        self.version = version


@dataclass
class Request:
    """One client -> worker message."""

    id: int
    cmd: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Event:
    """One worker -> client message; the client adds kind 'exited' when the worker ends."""

    kind: str
    req: int | None
    data: dict[str, Any] = field(default_factory=dict)


def _is_int(value: Any) -> bool:
    """True for a JSON integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _dump(obj: dict[str, Any]) -> bytes:
    """Serialise one message as a single line; refuse NaN/inf and oversized messages."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message cannot be encoded as JSON: {exc}") from None
    line = text.encode("utf-8") + b"\n"
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too large ({len(line)} bytes, limit {MAX_MESSAGE_BYTES})")
    return line


def encode_request(req_id: int, cmd: str, params: dict[str, Any] | None = None) -> bytes:
    """One request line for the worker's stdin."""
    if not _is_int(req_id) or req_id < 0:
        raise ProtocolError(f"request id must be a non-negative integer, got {req_id!r}")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError(f"command must be a non-empty string, got {cmd!r}")
    return _dump({"v": PROTOCOL_VERSION, "id": req_id, "cmd": cmd, "params": dict(params or {})})


def encode_event(req: int | None, kind: str, data: dict[str, Any] | None = None) -> bytes:
    """One event line for the events channel."""
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"unknown event kind {kind!r}")
    if req is not None and not _is_int(req):
        raise ProtocolError(f"event req must be an integer or null, got {req!r}")
    return _dump({"v": PROTOCOL_VERSION, "req": req, "kind": kind, "data": dict(data or {})})


def _load(line: bytes) -> dict[str, Any]:
    """Parse one raw line (with its "\\n") into a JSON object, checking size and framing."""
    if len(line) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message too large ({len(line)} bytes, limit {MAX_MESSAGE_BYTES})")
    if not line.endswith(b"\n"):
        raise ProtocolError(f"truncated message ({len(line)} bytes without the final newline)")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("malformed message: not UTF-8") from None
    except ValueError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"malformed message: expected a JSON object, got {type(obj).__name__}")
    return obj


def decode_request(line: bytes) -> Request:
    """Check and parse one request line; ProtocolError says what is wrong with it."""
    obj = _load(line)
    req_id = obj.get("id")
    known_id = req_id if _is_int(req_id) and req_id >= 0 else None
    if "v" not in obj:
        raise ProtocolError("malformed request: no protocol version 'v'", known_id)
    if obj["v"] != PROTOCOL_VERSION:
        raise ProtocolVersionError(obj["v"], known_id)
    if known_id is None:
        raise ProtocolError(f"malformed request: 'id' must be a non-negative integer, got {req_id!r}")
    cmd = obj.get("cmd")
    if not isinstance(cmd, str) or not cmd:
        raise ProtocolError(f"malformed request: 'cmd' must be a non-empty string, got {cmd!r}", known_id)
    params = obj.get("params", {})
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ProtocolError(
            f"malformed request: 'params' must be an object, got {type(params).__name__}", known_id
        )
    return Request(known_id, cmd, params)


def decode_event(line: bytes) -> Event:
    """Check and parse one event line; ProtocolError says what is wrong with it."""
    obj = _load(line)
    req = obj.get("req")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolVersionError(obj.get("v"), req if _is_int(req) else None, side="client")
    kind = obj.get("kind")
    if kind not in EVENT_KINDS:
        raise ProtocolError(f"malformed event: unknown kind {kind!r}")
    if req is not None and not _is_int(req):
        raise ProtocolError(f"malformed event: 'req' must be an integer or null, got {req!r}")
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise ProtocolError(f"malformed event: 'data' must be an object, got {type(data).__name__}")
    return Event(kind, req, data)


class LineReader:
    """Reads whole messages from a binary stream without ever holding more than the limit.

    `read()` returns one line including its "\\n", or b"" at end of stream. A line longer
    than the limit is discarded up to its newline and reported as a ProtocolError, so the
    stream stays in step; a last line cut off by end of stream is reported as truncated.
    """

    def __init__(self, stream: IO[bytes], limit: int = MAX_MESSAGE_BYTES) -> None:
        self.stream = stream
        self.limit = limit

    def read(self) -> bytes:
        """The next complete line, b"" at end of stream; ProtocolError for a bad one."""
        line = self.stream.readline(self.limit + 1)
        if not line:
            return b""
        if line.endswith(b"\n") and len(line) <= self.limit:
            return line
        if len(line) <= self.limit:  # end of stream in the middle of a message
            raise ProtocolError(f"truncated message ({len(line)} bytes without the final newline)")
        size = len(line)
        while not line.endswith(b"\n"):
            line = self.stream.readline(1 << 20)
            if not line:
                break
            size += len(line)
        raise ProtocolError(f"message too large ({size} bytes, limit {self.limit})")


def _finite(value: Any) -> float | None:
    """A JSON-safe float: None for missing, NaN or infinite values."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def progress_data(progress: Any) -> dict[str, Any]:
    """The event data of one engine `Progress` (duck-typed: stage, done, total, ...)."""
    frame = getattr(progress, "frame", None)
    return {
        "stage": str(getattr(progress, "stage", "")),
        "done": int(getattr(progress, "done", 0)),
        "total": int(getattr(progress, "total", 0)),
        "frame": None if frame is None else int(frame),
        "fps": _finite(getattr(progress, "fps", 0.0)) or 0.0,
        "eta_s": _finite(getattr(progress, "eta_s", None)),
        "message": str(getattr(progress, "message", "") or ""),
    }
