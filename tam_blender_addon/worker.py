"""The background worker: runs the engine for Blender / the CLI behind the message protocol.

Started as ``python tam_blender_addon/launch.py worker [--events-fd N | --events-handle H]
[--log PATH]`` by `client.WorkerClient`. Requests arrive on stdin, events leave on the
dedicated events channel (see `protocol`); stdout is pointed at stderr before anything
else is imported, so nothing a library prints can corrupt a message.

Commands (params; ``?`` = optional) and their result data:

* short, answered on the main thread:
  ``hello`` -> protocol, worker, pid, python, executable, platform, torch, cuda, devices
  [{id, name}], auto_device (cuda, mps or cpu), backends (the table's kinds); ``weights{dir?}`` -> folder, sam_names{vit_b: registry name, ...},
  checkpoints [{name, filename, kind, size, sha256, installed, path, page, note}];
  ``create_session{path, source, scene_start?, source_start?, length?,
  backend?, device?, weights?, weights_dir?, sam_model?, sam2_model?, refine?, half?, log?}`` and
  ``open_session{path, backend?, ...same engine options..., log?}`` -> path, backend,
  backend_label, synthetic, source{...}, objects, mask_frames, settings (the session's
  tracker settings: max_resolution, mem_every, max_memory_frames, half_precision; null =
  default), engine{device, half, refine, sam_model, sam2_model, weights}; ``close_session``;
  ``add_object{name?, color?, obj_id?}``, ``remove_object{obj}``, ``update_object{obj, name?,
  color?}``, ``add_click{frame, obj,
  x, y, positive?}``, ``add_box{frame, obj, x0, y0, x1, y1}``, ``clear_prompts{frame,
  obj?}``, ``undo_prompt{frame, obj?}``, ``add_mask{frame, obj, runs}``; ``embed{frame}``; ``segment{frame, obj?}`` ->
  frame, obj_ids, confidence, areas, kind (the mask itself is in the session);
  ``cancel{req?}`` -> cancelled, req; ``shutdown`` -> bye; ``_noise{lines?}`` (diagnostics:
  prints junk to stdout/stderr).
* long jobs, one at a time, in a job thread (progress events, then the result: cmd, done,
  total, progress_events, seconds): ``track{start?, end?, direction?}``,
  ``refine{frames?}``, ``inpaint{objects, out, dilate?, feather?, frames?}``,
  ``export{format, out, frames?}``, ``shapes{out, known?}``.

The worker is the session's single writer (it holds the lock), so object and prompt
edits go through it too; the Blender side follows with a read-only `Session`. Engine
commands are refused as "busy" while a job runs. Long jobs are one table, `JOBS`: each
entry makes a generator of `Progress` from the engine. `cancel` sets the flag the engine
polls through ``should_stop``, so a job stops between frames (error event ``Cancelled``)
and every finished frame stays on disk; a generator that yields again after the cancel
is closed between those two yields. `shutdown` waits for the job to end before it
closes the session. User errors (TamError) come back as error
events with the class name in ``data.error``; anything else also carries
``data.traceback`` and is written to the worker log and the session log. WARNING
records of the package's loggers are sent as warning events for the request in hand.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import Cancelled, InputError, SessionError, TamError, as_user_error
from .protocol import (
    PROTOCOL_VERSION,
    LineReader,
    ProtocolError,
    Request,
    decode_request,
    encode_event,
    progress_data,
)

if TYPE_CHECKING:
    from .pipeline import Engine
    from .progress import Progress
    from .session import Session

LOG = logging.getLogger(__name__)
PACKAGE_LOGGER = __name__.split(".")[0]  # "track_anything": the worker, session, frames, engine loggers
_current = threading.local()  # .req: the request the running thread works for
ROOT = Path(__file__).resolve().parents[1]
JOIN_ON_EXIT_S = 30.0  # at exit, a warning every this often while a cancelled job finishes its frame


# --------------------------------------------------------------------------- channel
class EventChannel:
    """The worker's end of the events pipe: whole lines, one writer at a time."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self.closed = False

    def send(self, req: int | None, kind: str, data: dict[str, Any] | None = None) -> bool:
        """Write one event; False once the client has gone (broken pipe)."""
        try:
            line = encode_event(req, kind, _jsonable(data or {}))
        except ProtocolError as exc:  # an answer too large or not JSON: say so instead
            if kind not in ("result", "error"):
                LOG.warning("dropped a %s event: %s", kind, exc)
                return not self.closed
            line = encode_event(req, "error", {"message": f"the worker's answer could not be sent: {exc}",
                                               "error": "ProtocolError"})
        with self._lock:
            if self.closed:
                return False
            try:
                self._stream.write(line)
                self._stream.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.closed = True
                return False
        return True

    def close(self) -> None:
        """Close the pipe so the client sees end-of-file."""
        with self._lock:
            self.closed = True
            try:
                self._stream.close()
            except OSError:
                pass


class WarningForwarder(logging.Handler):
    """Send WARNING+ records of the package's loggers to the client as warning events.

    The event names the request the logging thread works for, so a warning during
    `open_session` (e.g. a stale lock taken over) reaches the caller of that request.
    """

    def __init__(self, channel: EventChannel) -> None:
        super().__init__(logging.WARNING)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == LOG.name:  # the worker's own complaints already went out as error events
            return
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not break the worker
            message = str(record.msg)
        self.channel.send(getattr(_current, "req", None), "warning",
                          {"message": message.splitlines()[0] if message else "", "logger": record.name})


def _jsonable(value: Any) -> Any:
    """Plain JSON types from engine results (numpy scalars and arrays, paths, tuples, sets)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return _jsonable(value.tolist())
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def open_channels(events_fd: int | None = None, events_handle: int | None = None) -> tuple[IO[bytes], IO[bytes]]:
    """(requests in, events out); afterwards fd 1 writes to stderr and fd 0 reads nothing.

    Done first thing in `main`, before torch or OpenCV are imported, so that neither they
    nor their C code can write into the events channel or read from the requests.
    """
    if events_fd is not None:
        out_fd = events_fd
        os.set_inheritable(out_fd, False)  # not to be passed on to ffmpeg & co.
    elif events_handle is not None:
        import msvcrt  # Windows: the client passed an inheritable pipe handle

        out_fd = msvcrt.open_osfhandle(events_handle, os.O_WRONLY)
    else:  # started by hand: events go to (a private copy of) the original stdout
        out_fd = os.dup(1)
    in_fd = os.dup(0)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return os.fdopen(in_fd, "rb", buffering=1 << 16), os.fdopen(out_fd, "wb", buffering=1 << 16)


# --------------------------------------------------------------------------- params
Check = tuple[str, Callable[[Any], bool]]
_INT: Check = ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
_OPT_INT: Check = ("an integer or null", lambda v: v is None or _INT[1](v))
_STR: Check = ("a string", lambda v: isinstance(v, str))
_OPT_STR: Check = ("a string or null", lambda v: v is None or isinstance(v, str))
_OPT_BOOL: Check = ("true, false or null", lambda v: v is None or isinstance(v, bool))
_NUM: Check = ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
_BOOL: Check = ("true or false", lambda v: isinstance(v, bool))
_OPT_RGB: Check = ("three numbers or null", lambda v: v is None or (isinstance(v, list) and len(v) == 3
                                                                   and all(_NUM[1](c) for c in v)))
_INT_LIST: Check = ("a list of integers", lambda v: isinstance(v, list) and all(_INT[1](x) for x in v))
_OPT_INT_LIST: Check = ("a list of integers or null", lambda v: v is None or _INT_LIST[1](v))
_OPT_DICT: Check = ("an object or null", lambda v: v is None or isinstance(v, dict))

# command -> {param: (check, required)}
PARAMS: dict[str, dict[str, tuple[Check, bool]]] = {
    "hello": {},
    "weights": {"dir": (_OPT_STR, False)},
    "open_session": {
        "path": (_STR, True), "backend": (_OPT_STR, False), "device": (_STR, False),
        "weights": (_STR, False), "weights_dir": (_OPT_STR, False), "sam_model": (_STR, False),
        "refine": (_OPT_BOOL, False), "half": (_OPT_BOOL, False), "log": (_OPT_STR, False),
        "sam2_model": (_OPT_STR, False),
    },
    "create_session": {
        "path": (_STR, True), "source": (_STR, True), "scene_start": (_INT, False),
        "source_start": (_INT, False), "length": (_OPT_INT, False),
        "backend": (_OPT_STR, False), "device": (_STR, False),
        "weights": (_STR, False), "weights_dir": (_OPT_STR, False), "sam_model": (_STR, False),
        "refine": (_OPT_BOOL, False), "half": (_OPT_BOOL, False), "log": (_OPT_STR, False),
        "sam2_model": (_OPT_STR, False),
    },
    "close_session": {},
    "add_object": {"name": (_OPT_STR, False), "color": (_OPT_RGB, False), "obj_id": (_OPT_INT, False)},
    "remove_object": {"obj": (_INT, True)},
    "update_object": {"obj": (_INT, True), "name": (_OPT_STR, False), "color": (_OPT_RGB, False)},
    "add_click": {"frame": (_INT, True), "obj": (_INT, True), "x": (_NUM, True), "y": (_NUM, True),
                  "positive": (_BOOL, False)},
    "add_box": {"frame": (_INT, True), "obj": (_INT, True), "x0": (_NUM, True), "y0": (_NUM, True),
                "x1": (_NUM, True), "y1": (_NUM, True)},
    "clear_prompts": {"frame": (_INT, True), "obj": (_OPT_INT, False)},
    "undo_prompt": {"frame": (_INT, True), "obj": (_OPT_INT, False)},
    "embed": {"frame": (_INT, True)},
    "segment": {"frame": (_INT, True), "obj": (_OPT_INT, False)},
    "track": {"start": (_OPT_INT, False), "end": (_OPT_INT, False), "direction": (_STR, False)},
    "refine": {"frames": (_OPT_INT_LIST, False)},
    "inpaint": {"objects": (_INT_LIST, True), "out": (_STR, True), "dilate": (_INT, False),
                "feather": (_INT, False), "frames": (_OPT_INT_LIST, False)},
    "export": {"format": (_STR, True), "out": (_STR, True), "frames": (_OPT_INT_LIST, False)},
    "shapes": {"out": (_STR, True), "known": (_OPT_DICT, False)},
    "add_mask": {"frame": (_INT, True), "obj": (_INT, True), "runs": (_INT_LIST, True)},
    "cancel": {"req": (_OPT_INT, False)},
    "shutdown": {},
    "_noise": {"lines": (_INT, False)},
}


def check_params(cmd: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params of `cmd` if they have the documented names and types, else ProtocolError."""
    spec = PARAMS[cmd]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ProtocolError(f"{cmd}: unknown parameter {unknown[0]!r} (expected: {', '.join(spec) or 'none'})")
    for name, ((what, ok), required) in spec.items():
        if name not in params:
            if required:
                raise ProtocolError(f"{cmd}: missing parameter {name!r}")
            continue
        if not ok(params[name]):
            raise ProtocolError(f"{cmd}: parameter {name!r} must be {what}, got {params[name]!r:.60}")
    return params


def _given(params: dict[str, Any], *names: str) -> dict[str, Any]:
    """The subset of `params` that was sent (so the engine's own defaults apply otherwise)."""
    return {n: params[n] for n in names if n in params and params[n] is not None}


StopFn = Callable[[], bool]
# A long job: (engine, checked params, should_stop) -> a generator of Progress, one per
# finished frame; what it returns (a dict, or None) joins the job's result.
JobFn = Callable[["Engine", dict[str, Any], StopFn], Iterator["Progress"]]

JOBS: dict[str, JobFn] = {
    "track": lambda engine, p, stop: engine.track(**_given(p, "start", "end", "direction"), should_stop=stop),
    "refine": lambda engine, p, stop: engine.refine(**_given(p, "frames"), should_stop=stop),
    "inpaint": lambda engine, p, stop: engine.inpaint(p["objects"], p["out"],
                                                      **_given(p, "dilate", "feather", "frames"), should_stop=stop),
    "export": lambda engine, p, stop: engine.export(p["format"], p["out"], **_given(p, "frames"), should_stop=stop),
    "shapes": lambda engine, p, stop: engine.shapes(p["out"], should_stop=stop, **_given(p, "known")),
}
LONG_JOBS = tuple(JOBS)


def _test_delay(cmd: str) -> None:
    """Tests only: sleep ``$TAM_TEST_DELAY_<CMD>`` seconds, a slow real worker (no mock)."""
    delay = os.environ.get(f"TAM_TEST_DELAY_{cmd.upper()}")
    if delay:
        time.sleep(float(delay))


# --------------------------------------------------------------------------- worker
@dataclass
class Job:
    """The long job in flight."""

    req: int
    cmd: str
    cancel: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    finished: threading.Event = field(default_factory=threading.Event)  # set just before the answer


def worker_version() -> str:
    """The extension's version from blender_manifest.toml, or the installed package's."""
    manifest = ROOT / "blender_manifest.toml"
    try:
        import tomllib

        with open(manifest, "rb") as fh:
            return str(tomllib.load(fh)["version"])
    except (OSError, KeyError, ValueError):
        pass
    try:
        from importlib.metadata import version

        return version("track-anything-blender")
    except Exception:  # noqa: BLE001 - any metadata failure just means "unknown"
        return "unknown"


def runtime_info() -> dict[str, Any]:
    """Python, torch and accelerator facts for `hello` (torch imported here, lazily)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "torch": None,
        "cuda": False,
        "devices": [{"id": "cpu", "name": platform.processor() or platform.machine() or "CPU"}],
    }
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is reported, not fatal
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
        return info
    info["torch"] = str(torch.__version__)
    try:
        info["cuda"] = bool(torch.cuda.is_available())
        if info["cuda"]:
            for i in range(torch.cuda.device_count()):
                info["devices"].append({"id": f"cuda:{i}", "name": torch.cuda.get_device_name(i)})
        from ..models.device import mps_available, resolve_device

        if mps_available():
            info["devices"].append({"id": "mps", "name": "Apple Metal (MPS)"})
        info["auto_device"] = resolve_device("auto").type  # what device "auto" runs on (models/device.py)
    except Exception as exc:  # noqa: BLE001 - driver trouble: report it in hello
        info["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return info


class Worker:
    """Request dispatch, the session/engine, and the one long job."""

    def __init__(self, channel: EventChannel, log_path: str | None = None) -> None:
        self.channel = channel
        self.session: Session | None = None
        self.engine: Engine | None = None
        self.job: Job | None = None
        self._lock = threading.Lock()
        self._log_handler: logging.Handler | None = None
        self._stop = False
        if log_path:
            self.set_log_file(log_path)

    # ---------------------------------------------------------------- plumbing
    def set_log_file(self, path: str) -> None:
        """Append the worker's log (and every unexpected traceback) to `path`."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s %(process)d] %(message)s"))
        package = logging.getLogger(PACKAGE_LOGGER)
        if self._log_handler is not None:
            package.removeHandler(self._log_handler)
            self._log_handler.close()
        package.addHandler(handler)
        self._log_handler = handler

    def serve(self, requests: IO[bytes]) -> int:
        """Answer requests until `shutdown` or end of input; the exit status."""
        reader = LineReader(requests)
        LOG.info("worker %s ready (pid %d, protocol %d)", worker_version(), os.getpid(), PROTOCOL_VERSION)
        while not self._stop:
            try:
                line = reader.read()
            except ProtocolError as exc:
                self.channel.send(exc.req, "error", {"message": str(exc), "error": "ProtocolError"})
                continue
            if not line:
                LOG.info("end of requests: the client has gone")
                break
            try:
                request = decode_request(line)
            except ProtocolError as exc:
                LOG.warning("refused a request: %s", exc)
                self.channel.send(exc.req, "error", {"message": str(exc), "error": "ProtocolError"})
                continue
            self.handle(request)
        self._finish()
        return 0

    def _finish(self) -> None:
        """Stop the job (between frames), release the session, close the channel."""
        self._stop_job()
        self._close_session()
        self.channel.close()

    def _stop_job(self) -> None:
        """Cancel the running job and wait until its thread has ended, however long its frame takes.

        The session is closed only after this: a job thread must never write into a closed one.
        """
        job = self.job
        if job is None or job.thread is None:
            return
        job.cancel.set()
        job.thread.join(JOIN_ON_EXIT_S)
        while job.thread.is_alive():
            LOG.warning("waiting for %s (request %d) to reach its next frame before closing the session",
                        job.cmd, job.req)
            job.thread.join(JOIN_ON_EXIT_S)

    def handle(self, request: Request) -> None:
        """Run one request: short ones here, long ones in the job thread."""
        req, cmd = request.id, request.cmd
        _current.req = req
        try:
            if cmd not in PARAMS:
                raise ProtocolError(f"unknown command {cmd!r}")
            params = check_params(cmd, request.params)
            if cmd in LONG_JOBS:
                self._start_job(req, cmd, params)
                return
            result = getattr(self, "cmd_" + cmd.lstrip("_"))(req, **params)
            self.channel.send(req, "result", result)
        except Exception as exc:  # noqa: BLE001 - user errors plainly, anything else with its traceback
            user = as_user_error(exc)
            if user is None:
                self._report_crash(req, cmd, exc)
            else:
                self.channel.send(req, "error", {"message": str(user), "error": type(user).__name__})
        finally:
            _current.req = None

    def _report_crash(self, req: int | None, cmd: str, exc: BaseException) -> None:
        """An unexpected exception: error event with the traceback, logged everywhere we log."""
        self.channel.send(req, "error", self._crash_data(req, cmd, exc))

    def _crash_data(self, req: int | None, cmd: str, exc: BaseException) -> dict[str, Any]:
        """Log an unexpected exception (worker log, session log); the error event's data."""
        tb = "".join(traceback.format_exception(exc))
        first = (str(exc).strip().splitlines() or [""])[0]
        message = f"{cmd} failed: {type(exc).__name__}: {first}".rstrip(": ")
        LOG.error("%s (request %s)\n%s", message, req, tb)
        if self.session is not None:
            try:
                self.session.log("worker_error", cmd=cmd, req=req, message=message, traceback=tb)
            except Exception:  # noqa: BLE001 - the session itself may be what broke
                LOG.exception("could not write the error to the session log")
        return {"message": message, "error": type(exc).__name__, "traceback": tb}

    def _busy(self) -> Job | None:
        """The running long job, if any."""
        job = self.job
        if job is not None and not job.finished.is_set():
            return job
        return None

    def _refuse_if_busy(self, cmd: str) -> None:
        job = self._busy()
        if job is not None:
            raise TamError(f"busy: {job.cmd} (request {job.req}) is still running; cancel it or wait before {cmd}")

    def _need_engine(self, cmd: str) -> Engine:
        if self.engine is None:
            raise SessionError(f"{cmd}: no session is open in the worker (send open_session first)")
        return self.engine

    # ---------------------------------------------------------------- short commands
    def cmd_hello(self, rid: int, /) -> dict[str, Any]:
        """Protocol version, worker version, Python, torch, CUDA and devices."""
        from ..models.backends import BACKENDS

        info = runtime_info()
        return {"protocol": PROTOCOL_VERSION, "worker": worker_version(), "pid": os.getpid(), **info,
                "backends": list(BACKENDS)}

    def cmd_weights(self, rid: int, /, dir: str | None = None) -> dict[str, Any]:
        """The checkpoint registry: folder, and per checkpoint its file, size, sha256 and whether installed."""
        from ..models.weights import registry_state

        return registry_state(dir)

    def cmd_open_session(self, rid: int, /, path: str, log: str | None = None, **options: Any) -> dict[str, Any]:
        """Open the session at `path` and build its engine (backend, device, weights...)."""
        self._refuse_if_busy("open_session")
        if log:
            self.set_log_file(log)
        from .session import Session

        self._close_session()
        return self._attach(Session.open(path), options)

    def cmd_create_session(self, rid: int, /, path: str, source: str, log: str | None = None,
                           **options: Any) -> dict[str, Any]:
        """Probe the video / image sequence `source`, make a new session for it, open it."""
        self._refuse_if_busy("create_session")
        if log:
            self.set_log_file(log)
        from .frames import open_source
        from .session import FrameMapping, Session

        with open_source(source) as src:
            info = src.info()
        mapping = FrameMapping(**_given(options, "scene_start", "source_start", "length"))
        self._close_session()
        session = Session.create(path, info, mapping, backend=options.get("backend") or "classic")
        if options.get("sam2_model"):  # a session setting: every later engine on it uses this size
            session.settings["sam2_model"] = options["sam2_model"]
            session.save()
        return self._attach(session, options)

    def _attach(self, session: Session, options: dict[str, Any]) -> dict[str, Any]:
        """Build the engine for a freshly opened session and describe both."""
        from .pipeline import Engine

        try:
            engine = Engine(session, **_given(options, "backend", "device", "weights", "weights_dir",
                                              "sam_model", "refine", "half", "sam2_model"))
        except BaseException:
            session.close()
            raise
        self.session, self.engine = session, engine
        label = engine.backend_label()
        session.log("worker_open", pid=os.getpid(), backend=label)
        LOG.info("opened session %s (%s)", session.path, label)
        src = session.source
        return {
            "path": str(session.path),
            "backend": engine.backend,
            "backend_label": label,
            "synthetic": engine.synthetic,
            "source": {"path": src.path, "kind": src.kind, "width": src.width, "height": src.height,
                       "fps": src.fps, "num_frames": src.num_frames},
            "objects": [{"id": o.id, "name": o.name, "color": list(o.color)} for o in session.objects],
            "mask_frames": len(session.mask_frames()),
            "settings": session.tracker_settings(),
            "engine": {"device": engine.device, "half": engine.half, "refine": engine.refine_enabled,
                       "sam_model": engine.sam_model, "sam2_model": engine.sam2_model, "weights": engine.weights},
        }

    def cmd_close_session(self, rid: int, /) -> dict[str, Any]:
        """Release the open session (and its lock) without stopping the worker."""
        self._refuse_if_busy("close_session")
        was = str(self.session.path) if self.session is not None else None
        self._close_session()
        return {"closed": was}

    def _close_session(self) -> None:
        engine, session = self.engine, self.session
        self.engine = self.session = None
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - closing must not stop the next open
                LOG.exception("closing the engine failed")
        if session is not None:
            try:
                session.close()
            except Exception:  # noqa: BLE001
                LOG.exception("closing the session failed")

    # The worker holds the session's writer lock, so edits of objects and prompts go
    # through it too; the Blender side follows them with a read-only Session handle.
    def _writable_session(self, cmd: str) -> Session:
        self._refuse_if_busy(cmd)
        return self._need_engine(cmd).session

    def cmd_add_object(self, rid: int, /, **params: Any) -> dict[str, Any]:
        """Add an object (ids from 1 in order added); its id, name and colour."""
        session = self._writable_session("add_object")
        color = tuple(params["color"]) if params.get("color") is not None else None
        info = session.add_object(params.get("name"), color, params.get("obj_id"))
        return {"id": info.id, "name": info.name, "color": list(info.color)}

    def cmd_remove_object(self, rid: int, /, obj: int) -> dict[str, Any]:
        """Remove an object with its prompts and its pixels in every stored mask."""
        self._writable_session("remove_object").remove_object(obj)
        return {"removed": obj}

    def cmd_update_object(self, rid: int, /, obj: int, name: str | None = None,
                          color: list[float] | None = None) -> dict[str, Any]:
        """Rename and/or recolour an object (the panel's edits reach the session)."""
        info = self._writable_session("update_object").update_object(obj, name, color)
        return {"id": info.id, "name": info.name, "color": list(info.color)}

    def cmd_add_click(self, rid: int, /, frame: int, obj: int, x: float, y: float,
                      positive: bool = True) -> dict[str, Any]:
        """Record a click (positive or negative) on a source frame."""
        click = self._writable_session("add_click").add_click(frame, obj, x, y, positive)
        return {"frame": click.frame, "obj": click.obj, "x": click.x, "y": click.y, "positive": click.positive}

    def cmd_add_box(self, rid: int, /, frame: int, obj: int, x0: float, y0: float, x1: float,
                    y1: float) -> dict[str, Any]:
        """Record a box prompt on a source frame."""
        box = self._writable_session("add_box").add_box(frame, obj, x0, y0, x1, y1)
        return {"frame": box.frame, "obj": box.obj, "x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1}

    def cmd_clear_prompts(self, rid: int, /, frame: int, obj: int | None = None) -> dict[str, Any]:
        """Remove the prompts on `frame` (only `obj`'s if given)."""
        session = self._writable_session("clear_prompts")
        session.clear_prompts(frame, obj)
        return {"frame": frame, "left": len(session.prompts(frame=frame))}

    def cmd_undo_prompt(self, rid: int, /, frame: int, obj: int | None = None) -> dict[str, Any]:
        """Remove the latest prompt on `frame`; says whether there was one."""
        undone = self._writable_session("undo_prompt").undo_prompt(frame, obj)
        return {"frame": frame, "undone": undone is not None}

    def cmd_add_mask(self, rid: int, /, frame: int, obj: int, runs: list[int]) -> dict[str, Any]:
        """Make a whole mask (run lengths, e.g. an edited spline) the object's keyframe on `frame`."""
        from .session import runs_to_mask
        from .spline_raster import matte_digest

        session = self._writable_session("add_mask")
        try:
            mask = runs_to_mask(runs, session.source.width, session.source.height)
        except ValueError as exc:
            raise InputError(f"add_mask: {exc}") from None
        session.add_mask(frame, obj, mask)
        rec = self._need_engine("add_mask").segment(frame, obj)
        stored = rec.labels == obj
        return {"frame": frame, "obj": obj, "area": int(stored.sum()), "digest": matte_digest(stored)}

    def cmd_embed(self, rid: int, /, frame: int) -> dict[str, Any]:
        """Warm the segmenter's embedding of `frame` so the first click answers at once."""
        self._refuse_if_busy("embed")
        engine = self._need_engine("embed")
        t0 = time.monotonic()
        engine.embed(frame)
        return {"frame": frame, "seconds": round(time.monotonic() - t0, 4)}

    def cmd_segment(self, rid: int, /, frame: int, obj: int | None = None) -> dict[str, Any]:
        """Segment the prompts on `frame`; the mask is in the session, the answer says where."""
        self._refuse_if_busy("segment")
        engine = self._need_engine("segment")
        t0 = time.monotonic()
        _test_delay("segment")
        rec = engine.segment(frame, obj)
        areas = {int(o): int((rec.labels == o).sum()) for o in rec.obj_ids}
        return {"frame": int(rec.frame), "obj_ids": [int(o) for o in rec.obj_ids],
                "confidence": {str(k): float(v) for k, v in rec.confidence.items()},
                "areas": {str(k): v for k, v in areas.items()}, "kind": rec.kind,
                "seconds": round(time.monotonic() - t0, 4)}

    def cmd_cancel(self, rid: int, /, req: int | None = None) -> dict[str, Any]:
        """Ask the running job (or the one with id `req`) to stop before its next frame."""
        target = req
        job = self._busy()
        if job is None or (target is not None and target != job.req):
            return {"cancelled": False, "req": target}
        job.cancel.set()
        LOG.info("cancel requested for %s (request %d)", job.cmd, job.req)
        return {"cancelled": True, "req": job.req}

    def cmd_shutdown(self, rid: int, /) -> dict[str, Any]:
        """Stop the job between frames (waiting for it to end), close the session, leave the loop."""
        self._stop_job()
        self._close_session()
        self._stop = True
        return {"bye": True}

    def cmd_noise(self, rid: int, /, lines: int = 3) -> dict[str, Any]:
        """Diagnostics: print junk (fake events included) to stdout and stderr, as libraries do."""
        fake = encode_event(rid, "result", {"fake": True}).decode()
        for i in range(lines):
            print(f"noise {i} on sys.stdout", fake.strip(), "{not json", flush=True)
            os.write(1, b"noise on fd 1 " + fake.encode())
            os.write(1, b"{\"v\": 1, \"req\": null, \"kind\": \"log\"")  # a line cut short
            print(f"noise {i} on sys.stderr", file=sys.stderr, flush=True)
            os.write(2, b"noise on fd 2\n")
        return {"printed": lines}

    # ---------------------------------------------------------------- long jobs
    def _start_job(self, req: int, cmd: str, params: dict[str, Any]) -> None:
        with self._lock:
            self._refuse_if_busy(cmd)
            self._need_engine(cmd)
            job = Job(req, cmd)
            job.thread = threading.Thread(target=self._run_job, args=(job, params), name=f"tam-{cmd}-{req}",
                                          daemon=True)
            self.job = job
            try:
                job.thread.start()
            except BaseException:
                job.finished.set()
                raise

    def _run_job(self, job: Job, params: dict[str, Any]) -> None:
        """Run the job to its end, then send its result or error."""
        _current.req = job.req
        kind, data = self._job_outcome(job, params)
        job.finished.set()  # before the answer: a request sent on receipt of it must not find us busy
        self.channel.send(job.req, kind, data)

    def _job_outcome(self, job: Job, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Run the job's generator from the table; ("result"|"error", data)."""
        t0 = time.monotonic()
        tally = _Tally()
        try:
            steps = JOBS[job.cmd](self._need_engine(job.cmd), params, job.cancel.is_set)
            result = self._drive(job, steps, tally)
            if job.cancel.is_set() and (result is None or tally.done < tally.total):
                raise Cancelled(f"{job.cmd} cancelled after {tally.done} of {tally.total} frames; "
                                "finished frames are kept")
            LOG.info("%s (request %d) finished: %d/%d in %.1fs", job.cmd, job.req, tally.done, tally.total,
                     time.monotonic() - t0)
            return "result", {"cmd": job.cmd, "done": tally.done, "total": tally.total,
                              "progress_events": tally.count, "seconds": round(time.monotonic() - t0, 3),
                              **(result or {})}
        except Exception as exc:  # noqa: BLE001 - user errors plainly, anything else with its traceback
            user = as_user_error(exc)
            if user is None:
                return "error", self._crash_data(job.req, job.cmd, exc)
            LOG.info("%s (request %d) ended: %s", job.cmd, job.req, user)
            return "error", {"message": str(user), "error": type(user).__name__, "done": tally.done}

    def _drive(self, job: Job, steps: Iterator[Progress], tally: _Tally) -> dict[str, Any] | None:
        """One progress event per yield; the generator's return value, or None when closed early.

        After a cancel the generator is resumed once more with ``should_stop`` true, so an
        engine job stops before its next frame with its own message; one that yields
        again anyway is closed right there, between two yields.
        """
        resumed_after_cancel = False
        try:
            while True:
                try:
                    progress = next(steps)
                except StopIteration as end:
                    return dict(end.value or {})
                tally.count += 1
                tally.last = progress
                if not self.channel.send(job.req, "progress", progress_data(progress)):
                    job.cancel.set()  # the client has gone: stop at the next frame
                if job.cancel.is_set():
                    if resumed_after_cancel:
                        return None
                    resumed_after_cancel = True
        finally:
            steps.close()


@dataclass
class _Tally:
    """Progress seen so far in one job: how many events, and the latest."""

    count: int = 0
    last: Progress | None = None

    @property
    def done(self) -> int:
        return self.last.done if self.last is not None else 0

    @property
    def total(self) -> int:
        return self.last.total if self.last is not None else 0


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command line of the worker (given by the client; see the module docstring)."""
    ap = argparse.ArgumentParser(prog="launch.py worker", description="Track Anything background worker")
    ap.add_argument("--events-fd", type=int, default=None, help="POSIX: write events to this inherited fd")
    ap.add_argument("--events-handle", type=int, default=None, help="Windows: write events to this handle")
    ap.add_argument("--log", default=None, help="append the worker log and tracebacks to this file")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Set up the channels, then serve requests until shutdown; the exit status."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    requests, events = open_channels(args.events_fd, args.events_handle)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [%(name)s] %(message)s"))
    channel = EventChannel(events)
    package = logging.getLogger(PACKAGE_LOGGER)
    package.addHandler(handler)  # worker, engine, session and frames logs: stderr -> the client's log
    package.addHandler(WarningForwarder(channel))
    package.setLevel(logging.INFO)
    package.propagate = False
    logging.captureWarnings(True)  # Python warnings (torch & co.) go to stderr as log lines
    logging.getLogger("py.warnings").addHandler(handler)
    worker = Worker(channel, log_path=args.log)
    try:
        return worker.serve(requests)
    except KeyboardInterrupt:
        worker._finish()
        return 130
