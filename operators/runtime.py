"""The one worker per Blender session, its open session, and the long job in flight.

The worker (a Python with torch) is started lazily with the interpreter set in the
preferences and kept for the whole Blender session. Long jobs (track, shapes, export,
inpaint) are sent without waiting; `pump` reads the worker's events, mirrors progress
into ``scene.tam`` and runs the job's follow-up when its result arrives. In the UI
`pump` runs from ``bpy.app.timers``; in background mode (where timers never fire)
`start_job` pumps until the job is done, and tests may call `pump` directly.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..tam_blender_addon.client import WorkerClient
from ..tam_blender_addon.errors import SessionError, TamError
from . import env_plan

ADDON = __package__.rpartition(".")[0]  # "bl_ext.<repo>.track_anything", or "track_anything" in tests
POLL_INTERVAL_S = 0.1
START_TIMEOUT_S = 120.0
DEVICE_NAMES = {"AUTO": "auto", "CUDA": "cuda", "MPS": "mps", "CPU": "cpu"}


# --------------------------------------------------------------------------- preferences


@dataclass
class Settings:
    """The preferences the Blender side needs, with defaults when the add-on is not enabled."""

    python: str = ""
    device: str = "AUTO"
    backend: str = "NEURAL"
    checkpoint_dir: str = ""
    sam_model: str = "vit_b"
    max_resolution: int = 0
    mem_every: int = 5
    max_memory_frames: int = 10
    half_precision: bool = True


def user_dir(sub: str) -> Path:
    """A writable per-user folder for the add-on (never the extension's own folder)."""
    try:
        return Path(bpy.utils.extension_path_user(ADDON, path=sub, create=True))
    except (ValueError, AttributeError, RuntimeError):  # not installed as an extension (tests, 4.1-)
        path = Path(tempfile.gettempdir()) / "track_anything" / sub
        path.mkdir(parents=True, exist_ok=True)
        return path


def settings(context: bpy.types.Context | None = None) -> Settings:
    """Current preferences (AddonPreferences when the add-on is enabled, else defaults)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON)
    prefs = getattr(addon, "preferences", None)
    if prefs is None:
        return Settings(checkpoint_dir=str(user_dir("weights")))
    return Settings(
        python=bpy.path.abspath(prefs.worker_python) if prefs.worker_python else "",
        device=prefs.device,
        backend=prefs.backend,
        checkpoint_dir=bpy.path.abspath(prefs.checkpoint_dir) if prefs.checkpoint_dir else str(user_dir("weights")),
        sam_model=prefs.sam_model,
        max_resolution=prefs.max_resolution,
        mem_every=prefs.mem_every,
        max_memory_frames=prefs.max_memory_frames,
        half_precision=prefs.half_precision,
    )


def env_python() -> Path:
    """Interpreter of the worker environment `tam.worker_env_create` makes."""
    venv = user_dir("worker-env")
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def worker_python(s: Settings) -> str:
    """The worker interpreter: the preference, else the created environment, else this Python."""
    if s.python:
        return s.python
    made = env_python()
    if env_plan.is_ready(made.parents[1]):  # a build that did not finish never counts
        return str(made)
    return sys.executable


# --------------------------------------------------------------------------- runtime


@dataclass
class Job:
    """A long worker job and what to do with its result."""

    cmd: str
    params: dict[str, Any]
    scene: str
    label: str
    on_result: Callable[[bpy.types.Scene, dict], None] | None = None
    req: int | None = None
    started: float = field(default_factory=time.monotonic)
    file: int = 0  # RT.files when started: results never land in a file loaded since


class Runtime:
    """Module-level state: the worker client, which session it has open, the job in flight."""

    def __init__(self) -> None:
        self.client: WorkerClient | None = None
        self.opened: tuple | None = None  # (path, backend, device, weights_dir, sam) open in the worker
        self.job: Job | None = None
        self.last_error: str = ""
        self.timer_on = False
        self.started = 0  # jobs started so far: tells whether a follow-up chained another
        self.block_in_background = True  # scripts see results at once; tests may pump instead
        self.files = 0  # .blend files loaded so far


RT = Runtime()


def get_client(context: bpy.types.Context | None = None) -> WorkerClient:
    """The running worker, started on first use with the configured interpreter."""
    if RT.client is not None and RT.client.alive:
        return RT.client
    if RT.client is not None:
        RT.client.shutdown(timeout=1)
    s = settings(context)
    python = worker_python(s)
    env = {"TAM_WEIGHTS_DIR": s.checkpoint_dir} if s.checkpoint_dir else {}
    client = WorkerClient(python, env=env, log_path=str(user_dir("logs") / "worker.log"))
    try:
        client.start(timeout=START_TIMEOUT_S)
    except TamError as exc:
        raise TamError(
            f"{exc} (worker Python: {python}; set it in the add-on preferences or click Create Environment)"
        ) from None
    RT.client, RT.opened = client, None
    return client


def open_session(context: bpy.types.Context | None, state) -> WorkerClient:
    """The worker with the scene's session open (opened or reopened only when needed)."""
    if not state.session_path:
        raise SessionError("no session: select a movie or image strip and click New Session")
    s = settings(context)
    path = bpy.path.abspath(state.session_path)
    key = (path, state.backend.lower(), DEVICE_NAMES.get(s.device, "auto"), s.checkpoint_dir, s.sam_model,
           s.half_precision)
    client = get_client(context)
    if RT.opened != key:
        client.call(
            "open_session", timeout=START_TIMEOUT_S, path=path, backend=key[1], device=key[2],
            weights_dir=s.checkpoint_dir or None, sam_model=s.sam_model, half=s.half_precision,
        )
        RT.opened = key
    return client


def release_session() -> None:
    """Make the worker let go of its session (and its writer lock)."""
    if RT.client is not None and RT.client.alive and RT.opened is not None:
        RT.client.call("close_session", timeout=30)
    RT.opened = None


def session_command(context: bpy.types.Context, state, cmd: str, **params: Any) -> dict:
    """Send an edit (add_object, add_click, ...) to the worker, the session's one writer.

    The worker keeps the session (and SAM's embeddings) open, so a click costs only the
    edit and the segmentation, never a model reload.
    """
    if RT.job is not None:
        raise TamError(f"{RT.job.label} is running: wait for it or cancel it first")
    return open_session(context, state).call(cmd, timeout=START_TIMEOUT_S, **params)


def session_objects(state) -> list:
    """The session's object table as the worker last wrote it."""
    with read_session(state) as session:
        return session.objects


def read_session(state):
    """The scene's session opened read-only (close it after use)."""
    from ..tam_blender_addon.session import Session

    return Session.open(bpy.path.abspath(state.session_path), writable=False)


# --------------------------------------------------------------------------- jobs


def busy() -> bool:
    """True while a long job runs."""
    return RT.job is not None


def start_job(
    scene: bpy.types.Scene,
    cmd: str,
    params: dict[str, Any],
    label: str,
    on_result: Callable[[bpy.types.Scene, dict], None] | None = None,
) -> Job:
    """Send a long job to the worker; progress and result arrive through `pump`.

    In background mode (no timers) this pumps until the job has ended, so scripts
    and tests see the finished result when the operator returns.
    """
    if RT.job is not None:
        raise TamError(f"{RT.job.label} is already running: wait for it or cancel it")
    state = scene.tam
    client = open_session(None, state)
    job = Job(cmd, params, scene.name, label, on_result, file=RT.files)
    job.req = client.request(cmd, **params)
    RT.job = job
    RT.started += 1
    RT.last_error = ""
    state.job, state.job_stage, state.message = label, cmd, f"{label}..."
    state.job_done = state.job_total = 0
    state.job_fps, state.job_eta, state.job_progress = 0.0, -1.0, 0.0
    if bpy.app.background and RT.block_in_background:
        wait()
    elif not RT.timer_on:
        RT.timer_on = True
        bpy.app.timers.register(pump, first_interval=POLL_INTERVAL_S, persistent=True)
    return job


def wait(timeout: float | None = None) -> None:
    """Pump events until no job is left (background mode, tests)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while RT.job is not None:
        if deadline is not None and time.monotonic() > deadline:
            raise TamError(f"{RT.job.label} did not finish within {timeout:g} s")
        if RT.client is None:
            break
        event = RT.client.wait_event(timeout=0.2)
        if event is not None:
            _handle(event)
        pump()


def _state(job: Job):
    """(scene, ``scene.tam``) of the job; (None, None) if the scene or its file is gone."""
    scene = bpy.data.scenes.get(job.scene) if job.file == RT.files else None
    return (scene, scene.tam) if scene is not None else (None, None)


def file_loaded() -> None:
    """Another .blend was loaded: the running job's results have nowhere to go, stop it."""
    RT.files += 1
    cancel()


def _finish(job: Job, message: str, error: bool) -> None:
    """End `job`: clear the progress, keep the message, redraw."""
    RT.job = None
    scene, state = _state(job)
    if state is not None:
        state.job = ""
        state.message = message
        if not error:
            state.job_progress = 100.0
    if error:
        RT.last_error = message
        print(f"Track Anything: {message}")
    redraw()


def _handle(event) -> None:
    """Apply one worker event to the job and the scene state."""
    job = RT.job
    if event.kind == "exited":
        RT.client, RT.opened = None, None
        if job is not None:
            _finish(job, f"{job.label} failed: {event.data.get('message', 'the worker stopped')}", True)
        return
    if job is None or event.req != job.req:
        if event.kind in ("warning", "error"):
            print(f"Track Anything worker {event.kind}: {event.data.get('message', '')}")
        return
    scene, state = _state(job)
    if event.kind == "progress":
        if state is not None:
            d = event.data
            state.job_stage = str(d.get("stage") or job.cmd)
            state.job_done, state.job_total = int(d.get("done") or 0), int(d.get("total") or 0)
            state.job_fps = float(d.get("fps") or 0.0)
            eta = d.get("eta_s")
            state.job_eta = -1.0 if eta is None else float(eta)
            state.job_progress = 100.0 * state.job_done / state.job_total if state.job_total else 0.0
        return
    if event.kind == "warning":
        if state is not None:
            state.message = str(event.data.get("message", ""))
        return
    if event.kind == "error":
        _finish(job, f"{job.label}: {event.data.get('message', 'failed')}", True)
        return
    if event.kind == "result":
        RT.job = None
        started = RT.started
        message = f"{job.label}: done"
        try:
            if job.on_result is not None and scene is not None:
                message = job.on_result(scene, event.data) or message
        except TamError as exc:
            _finish(job, f"{job.label}: {exc}", True)
            return
        except Exception as exc:  # noqa: BLE001 - a bug in a follow-up must not kill the timer
            traceback.print_exc()
            _finish(job, f"{job.label} failed while applying the result: {exc}", True)
            return
        if RT.started == started:  # the follow-up did not chain another job
            _finish(job, message, False)
            undo_push(job.label)


def pump() -> float | None:
    """Process every pending worker event; the timer interval, or None when idle.

    Registered with ``bpy.app.timers`` while a job runs; call it directly where timers
    do not fire (background mode, tests).
    """
    client = RT.client
    if client is not None:
        for event in client.poll():
            _handle(event)
        if RT.job is not None and not client.alive and RT.client is client:
            for event in client.poll():
                _handle(event)
    if RT.job is not None and RT.client is None:
        _finish(RT.job, f"{RT.job.label} failed: the worker stopped", True)
    if RT.job is not None:
        redraw()
        return POLL_INTERVAL_S
    RT.timer_on = False
    return None


def cancel() -> bool:
    """Ask the running job to stop between frames (finished frames are kept)."""
    job = RT.job
    if job is None or RT.client is None:
        return False
    RT.client.cancel(job.req)
    return True


def undo_push(message: str) -> None:
    """Add an undo step for data a timer changed (ignored where there is no undo stack)."""
    if bpy.app.background:
        return
    try:
        bpy.ops.ed.undo_push(message=f"Track Anything: {message}")
    except RuntimeError:
        pass


def redraw() -> None:
    """Redraw sequencer editors and panels so progress and overlays follow."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("SEQUENCE_EDITOR", "CLIP_EDITOR", "PREFERENCES"):
                area.tag_redraw()


def shutdown() -> None:
    """Stop the worker (on unregister / quit); a running job ends between frames."""
    if RT.timer_on and bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    RT.timer_on = False
    RT.job = None
    client, RT.client, RT.opened = RT.client, None, None
    if client is not None:
        client.shutdown(timeout=5)
