"""The one worker per Blender session, its open session, and every request in flight.

Blender never waits on the worker: starting it, opening the session, an edit, a
segmentation preview and a long job are all requests whose `Future` is resolved by
`pump`, which runs their follow-ups on the main thread. In the UI `pump` runs from
``bpy.app.timers``; in background mode (scripts, where timers never fire) each request
is waited for (`blocking`), so scripts see results when the operator returns; tests may
switch that off and call `pump` themselves.

Requests reach the worker in the order they are sent and it answers them in that
order, so a click can be sent while the worker is still starting or segmenting: nothing
waits on the Blender side. Segmentation previews are queued here, one in flight at a
time, so a click on a frame whose preview has not been sent yet joins it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from ..tam_blender_addon.client import Future, WorkerClient, check_hello
from ..tam_blender_addon.errors import SessionError, TamError
from . import env_plan

ADDON = __package__.rpartition(".")[0]  # "bl_ext.<repo>.track_anything", or "track_anything" in tests
POLL_INTERVAL_S = 0.1
START_TIMEOUT_S = 120.0
JOURNAL_LIMIT = 512  # session edits remembered for undo
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
    sam2_model: str = "base_plus"
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
        sam2_model=prefs.sam2_model,
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
class Step:
    """One worker job of a chain, and how its result lands in the scene (returns words for the user)."""

    cmd: str
    params: dict[str, Any]
    apply: Callable[[bpy.types.Scene, dict], str | None] | None = None


@dataclass
class Job:
    """A user action made of long worker jobs run one after another (e.g. shapes, then export)."""

    label: str
    scene: str
    steps: list[Step]
    summary: Callable[[list[str]], str] | None = None  # the parts the steps returned -> the final message
    undo: bool = False  # one undo step when the whole action has landed
    future: Future | None = None
    parts: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    file: int = 0  # RT.files when started: results never land in a file loaded since


@dataclass
class Edit:
    """A session edit Blender's undo can take back: the worker commands that redo and undo it."""

    serial: int
    scene: str
    session: str
    label: str
    redo: list[tuple[str, dict]]
    undo: list[tuple[str, dict]]
    frames: list[tuple[int, int]] = field(default_factory=list)  # (source frame, object) to preview again
    applied: bool = True


class Runtime:
    """Module-level state: the worker client, its open session, the requests in flight."""

    def __init__(self) -> None:
        self.client: WorkerClient | None = None
        self.opened: tuple | None = None  # (path, backend, device, weights_dir, sam, half) open in the worker
        self.worker_state = ""  # '' (not started), 'starting', 'ready', or why it failed / stopped
        self.session_state = ""  # '', 'opening', 'open', or why opening failed
        self.started_at = 0.0
        self.job: Job | None = None
        self.futures: list[Future] = []  # short requests whose follow-up the pump still owes
        # (scene, src, obj) queued -> the callback of its newest request
        self.previews: OrderedDict[tuple[str, int, int], Callable | None] = OrderedDict()
        self.preview: tuple[tuple[str, int, int], Future] | None = None  # the one in flight
        self.superseded: set[int] = set()  # request ids of previews a newer click made stale
        self.journal: list[Edit] = []
        self.last_error: str = ""
        self.timer_on = False
        self.block_in_background = True  # scripts see results at once; tests may pump instead
        self.undo_in_background = False  # push undo steps in background mode (tests of undo)
        self.files = 0  # .blend files loaded so far


RT = Runtime()


def blocking() -> bool:
    """True where operators wait for their requests (background mode, unless a test pumps)."""
    return bpy.app.background and RT.block_in_background


def _safely(fn: Callable[..., Any], *args: Any) -> None:
    """Run a follow-up; a bug in it is printed, never allowed to stop the pump."""
    try:
        fn(*args)
    except TamError as exc:
        RT.last_error = str(exc)
        print(f"Track Anything: {exc}")
    except Exception:  # noqa: BLE001 - the timer must survive
        traceback.print_exc()


def track_future(future: Future) -> Future:
    """Keep the pump running (timer) until `future` is resolved; returns it."""
    RT.futures.append(future)
    _ensure_timer()
    return future


def follow(future: Future, on_done: Callable[[Future], None] | None = None,
           wait_s: float = START_TIMEOUT_S) -> Future:
    """`track_future` with `on_done(future)` run by the pump once it lands; where operators
    block (`blocking`), wait up to `wait_s` for it (the worker's TamError is raised)."""
    if on_done is not None:
        future.add_done_callback(on_done)
    track_future(future)
    if blocking():
        future.result(wait_s)
    return future


def _ensure_timer() -> None:
    if not bpy.app.background and not RT.timer_on:
        RT.timer_on = True
        bpy.app.timers.register(pump, first_interval=POLL_INTERVAL_S, persistent=True)


def get_client(context: bpy.types.Context | None = None) -> WorkerClient:
    """The worker, spawned on first use without waiting for it (its hello is a future).

    Requests sent meanwhile queue in the worker's input and are answered once it has
    started; `worker_state` says where it stands, for the panel.
    """
    if RT.client is not None and RT.client.alive:
        return RT.client
    if RT.client is not None:
        RT.client.shutdown(timeout=1)
    s = settings(context)
    python = worker_python(s)
    env = {"TAM_WEIGHTS_DIR": s.checkpoint_dir} if s.checkpoint_dir else {}
    client = WorkerClient(python, env=env, log_path=str(user_dir("logs") / "worker.log"))
    hint = f"(worker Python: {python}; set it in the add-on preferences or click Create Environment)"
    try:
        client.spawn()
        hello = client.request("hello")
    except TamError as exc:
        RT.worker_state = f"failed: {exc}"
        raise TamError(f"{exc} {hint}") from None
    RT.client, RT.opened, RT.session_state = client, None, ""
    RT.worker_state, RT.started_at = "starting", time.monotonic()

    def hello_done(f: Future) -> None:
        try:
            info = f.result()
            check_hello(info, python)
        except TamError as exc:
            RT.worker_state = f"failed: the worker did not start: {exc} {hint}"
            if RT.client is client:
                RT.client, RT.opened = None, None
            client.shutdown(timeout=1)
            return
        client.info = info
        RT.worker_state = "ready"
        redraw()

    follow(hello, hello_done)
    if blocking() and RT.worker_state != "ready":
        raise TamError(RT.worker_state.removeprefix("failed: "))
    return client


def _session_key(context, state) -> tuple:
    s = settings(context)
    return (bpy.path.abspath(state.session_path), state.backend.lower(), DEVICE_NAMES.get(s.device, "auto"),
            s.checkpoint_dir, s.sam_model, s.half_precision)


def open_session(context: bpy.types.Context | None, state) -> WorkerClient:
    """The worker with the scene's session open, or an ``open_session`` request on its way.

    Opened (or reopened) only when the session or the settings it was opened with changed.
    """
    if not state.session_path:
        raise SessionError("no session: select a movie or image strip and click New Session")
    key = _session_key(context, state)
    client = get_client(context)
    if RT.opened != key:
        path, backend, device, weights_dir, sam_model, half = key
        future = client.request("open_session", path=path, backend=backend, device=device,
                                weights_dir=weights_dir or None, sam_model=sam_model, half=half)
        RT.opened, RT.session_state = key, "opening"

        def opened(f: Future) -> None:
            if f.exception() is not None:
                if RT.opened == key:
                    RT.opened = None
                RT.session_state = f"failed: {f.exception()}"
                RT.last_error = str(f.exception())
            elif RT.opened == key:
                RT.session_state = "open"
            redraw()

        follow(future, opened)
    return client


def warm_up(context: bpy.types.Context, state) -> None:
    """Start the worker and open the session in the background if not done yet (panels call
    this from `draw`, so it only schedules; the state shows in the panel)."""
    if bpy.app.background or not state.session_path or RT.opened == _session_key(context, state):
        return
    if RT.worker_state.startswith("failed") or RT.session_state.startswith("failed") or _warming:
        return  # a failure is said once in the panel; New Session or a click tries again
    scene = context.scene.name

    def start() -> None:
        _warming.clear()
        sc = bpy.data.scenes.get(scene)
        if sc is not None and sc.tam.session_path:
            _safely(open_session, None, sc.tam)

    _warming.add(scene)
    bpy.app.timers.register(start, first_interval=0.0)


_warming: set[str] = set()  # a warm-up timer is on its way


def release_session() -> None:
    """Make the worker let go of its session (and its writer lock)."""
    if RT.client is not None and RT.client.alive and RT.opened is not None:
        follow(RT.client.request("close_session"), wait_s=30)
    RT.opened, RT.session_state = None, ""


def worker_status() -> str:
    """The worker and session state in words, for the panel ('' when there is nothing to say)."""
    if RT.worker_state == "starting":
        return f"Starting the worker... {time.monotonic() - RT.started_at:.0f} s"
    if RT.worker_state.startswith("failed"):
        return "Worker " + RT.worker_state
    if RT.session_state == "opening":
        return "Opening the session in the worker..."
    if RT.session_state.startswith("failed"):
        return "Session " + RT.session_state
    return ""


def submit(
    context: bpy.types.Context | None,
    state,
    cmd: str,
    params: dict[str, Any],
    on_result: Callable[[bpy.types.Scene, dict], None] | None = None,
    on_error: Callable[[bpy.types.Scene, TamError], None] | None = None,
) -> Future:
    """Send a session request (an edit, a preview); `on_result(scene, data)` runs when it is in.

    Returns at once; in blocking mode it waits and raises the worker's TamError.
    """
    if RT.job is not None:
        raise TamError(f"{RT.job.label} is running: wait for it or cancel it first")
    scene_name = state.id_data.name
    file = RT.files
    future = open_session(context, state).request(cmd, **params)

    return follow(future, lambda f: _land(scene_name, file, f, on_result, on_error))


def _land(scene_name: str, file: int, future: Future, on_result: Callable | None,
          on_error: Callable | None = None) -> None:
    """An answer arrived: into the scene's message if it failed, else to `on_result`; nothing when
    its scene is gone or another .blend was loaded since the request was sent (`file`)."""
    scene = bpy.data.scenes.get(scene_name) if file == RT.files else None
    if scene is None:
        return
    error = future.exception()
    if error is not None:
        scene.tam.message = str(error)
        RT.last_error = str(error)
        if on_error is not None:
            _safely(on_error, scene, error)
    elif on_result is not None:
        _safely(on_result, scene, future.result())
    redraw()


def session_objects(state) -> list:
    """The session's object table as the worker last wrote it."""
    with read_session(state) as session:
        return session.objects


def read_session(state):
    """The scene's session opened read-only (close it after use)."""
    from ..tam_blender_addon.session import Session

    return Session.open(bpy.path.abspath(state.session_path), writable=False)


# --------------------------------------------------------------------------- previews


def request_preview(context, state, src: int, obj: int,
                    on_result: Callable[[bpy.types.Scene, dict], None] | None = None) -> None:
    """Queue a segmentation of `obj` on source frame `src`, sent when the worker is free of
    the previous one. A preview already queued for that frame and object absorbs this one;
    one in flight is superseded (its answer is no longer announced)."""
    key = (state.id_data.name, src, obj)
    if RT.preview is not None and RT.preview[0] == key:
        RT.superseded.add(RT.preview[1].req)
    RT.previews[key] = on_result  # a key already queued keeps its place; the newest callback wins
    _send_preview(context)
    if blocking():
        while RT.preview is not None:
            RT.preview[1].result(START_TIMEOUT_S)


def previews_pending() -> int:
    """How many previews are queued or in flight."""
    return len(RT.previews) + (RT.preview is not None)


def preview_text() -> str:
    """'segmenting frame N…' for the panel while previews are on their way ('' otherwise)."""
    if RT.preview is None:
        return ""
    scene_name, src, _ = RT.preview[0]
    scene = bpy.data.scenes.get(scene_name)
    frame = scene.tam.mapping.source_to_scene(src) if scene is not None else src
    more = f" ({len(RT.previews)} more queued)" if RT.previews else ""
    return f"segmenting frame {frame}…{more}"


def _send_preview(context=None) -> None:
    """Send the oldest queued preview if none is in flight."""
    while RT.preview is None and RT.previews:
        key, on_result = RT.previews.popitem(last=False)
        scene = bpy.data.scenes.get(key[0])
        if scene is None or not scene.tam.session_path:
            continue
        try:
            future = open_session(context, scene.tam).request("segment", frame=key[1], obj=key[2])
        except TamError as exc:
            scene.tam.message = str(exc)
            RT.last_error = str(exc)
            continue
        RT.preview = (key, future)
        future.add_done_callback(lambda f, key=key, cb=on_result, file=RT.files: _preview_done(key, f, cb, file))
        track_future(future)


def _preview_done(key: tuple[str, int, int], future: Future, on_result, file: int) -> None:
    """A preview answered: announce it unless a newer click superseded it, then send the next."""
    if RT.preview is not None and RT.preview[1] is future:
        RT.preview = None
    stale = future.req in RT.superseded
    RT.superseded.discard(future.req)
    if not stale:
        _land(key[0], file, future, on_result)
    redraw()
    _send_preview()


# --------------------------------------------------------------------------- undo journal


def record_edit(state, label: str, redo: list[tuple[str, dict]], undo: list[tuple[str, dict]],
                frames: list[tuple[int, int]] | None = None) -> Edit:
    """Note an edit just sent, so Blender's undo/redo can take it back in the session too.

    Bumps ``scene.tam.edit_serial`` (inside the operator's undo step): after an undo the
    serial is lower than the edits still applied, and `follow_undo` reverses them.
    """
    scene, session = state.id_data.name, bpy.path.abspath(state.session_path)
    RT.journal = [e for e in RT.journal if e.applied or e.scene != scene]  # a new edit drops the redo branch
    del RT.journal[:-JOURNAL_LIMIT]  # far more than Blender's undo steps (32 by default)
    edit = Edit(state.edit_serial + 1, scene, session, label, redo, undo, list(frames or []))
    state.edit_serial = edit.serial
    RT.journal.append(edit)
    return edit


def follow_undo() -> None:
    """After undo/redo: send the worker the commands that bring each session to the scene's serial."""
    for scene in bpy.data.scenes:
        state = getattr(scene, "tam", None)
        if state is None or not state.session_path:
            continue
        session = bpy.path.abspath(state.session_path)
        mine = [e for e in RT.journal if e.scene == scene.name and e.session == session]
        back = sorted((e for e in mine if e.applied and e.serial > state.edit_serial), key=lambda e: -e.serial)
        forth = sorted((e for e in mine if not e.applied and e.serial <= state.edit_serial), key=lambda e: e.serial)
        for edit, redo in [*((e, False) for e in back), *((e, True) for e in forth)]:
            edit.applied = redo
            commands = edit.redo if redo else edit.undo
            try:
                for i, (cmd, params) in enumerate(commands):
                    last = i == len(commands) - 1
                    submit(None, state, cmd, params, (lambda sc, _d, e=edit: _preview_again(sc, e)) if last else None)
            except TamError as exc:
                state.message = f"could not {'redo' if redo else 'undo'} {edit.label}: {exc}"


def _preview_again(scene, edit: Edit) -> None:
    """Segment the frames an undone/redone edit touched again, where prompts remain."""
    with read_session(scene.tam) as session:
        todo = [(src, obj) for src, obj in edit.frames if session.prompts(frame=src, obj=obj)]
    for src, obj in todo:
        request_preview(None, scene.tam, src, obj)


def clear_journal() -> None:
    """Forget the undo journal (another file was loaded)."""
    RT.journal.clear()


# --------------------------------------------------------------------------- jobs


def busy() -> bool:
    """True while a long job runs."""
    return RT.job is not None


def start_job(
    scene: bpy.types.Scene,
    label: str,
    steps: list[Step],
    summary: Callable[[list[str]], str] | None = None,
    undo: bool = True,
) -> Job:
    """Run `steps` one after another in the worker; progress shows in ``scene.tam``.

    Each step's `apply` runs when its result arrives; when the last has landed the
    message says what was done and (with `undo`) one undo step records the action. In
    blocking mode this waits until the job has ended.
    """
    if RT.job is not None:
        raise TamError(f"{RT.job.label} is already running: wait for it or cancel it")
    if previews_pending():
        raise TamError(f"{preview_text() or 'segmenting'}: wait a moment")
    state = scene.tam
    open_session(None, state)
    job = Job(label, scene.name, list(steps), summary, undo, file=RT.files)
    RT.job = job
    RT.last_error = ""
    state.job, state.job_stage, state.message = label, steps[0].cmd, f"{label}..."
    state.job_done = state.job_total = 0
    state.job_fps, state.job_eta, state.job_progress = 0.0, -1.0, 0.0
    try:
        _next_step(job)
    except TamError:
        RT.job = None
        state.job = ""
        raise
    if blocking():
        while RT.job is job and job.future is not None:
            try:
                job.future.result()
            except TamError:
                pass  # _finish has put it into the message and RT.last_error
    return job


def _next_step(job: Job) -> None:
    step = job.steps[0]
    client = get_client()
    job.future = client.request(step.cmd, **step.params)
    job.future.add_event_callback(lambda event: _job_event(job, event))
    job.future.add_done_callback(lambda f: _step_done(job, f))
    track_future(job.future)


def _job_state(job: Job):
    """(scene, ``scene.tam``) of the job; (None, None) if the scene or its file is gone."""
    scene = bpy.data.scenes.get(job.scene) if job.file == RT.files else None
    return (scene, scene.tam) if scene is not None else (None, None)


def _job_event(job: Job, event) -> None:
    """Progress and warnings of the job's current step -> the scene state."""
    _, state = _job_state(job)
    if state is None:
        return
    d = event.data
    if event.kind == "progress":
        state.job_stage = str(d.get("stage") or job.steps[0].cmd)
        state.job_done, state.job_total = int(d.get("done") or 0), int(d.get("total") or 0)
        state.job_fps = float(d.get("fps") or 0.0)
        eta = d.get("eta_s")
        state.job_eta = -1.0 if eta is None else float(eta)
        state.job_progress = 100.0 * state.job_done / state.job_total if state.job_total else 0.0
    elif event.kind == "warning":
        state.message = str(d.get("message", ""))


def _step_done(job: Job, future: Future) -> None:
    """A step answered: apply it, then the next step or the end of the job."""
    if RT.job is not job:
        return
    error = future.exception()
    if error is not None:
        _finish(job, f"{job.label}: {error}", True)
        return
    step = job.steps.pop(0)
    scene, _ = _job_state(job)
    try:
        if step.apply is not None and scene is not None:
            part = step.apply(scene, future.result())
            if part:
                job.parts.append(part)
    except TamError as exc:
        _finish(job, f"{job.label}: {exc}", True)
        return
    except Exception as exc:  # noqa: BLE001 - a bug in a follow-up must not kill the timer
        traceback.print_exc()
        _finish(job, f"{job.label} failed while applying the result: {exc}", True)
        return
    if job.steps and scene is not None:
        try:
            _next_step(job)
        except TamError as exc:
            _finish(job, f"{job.label}: {exc}", True)
        return
    message = job.summary(job.parts) if job.summary else ("; ".join(job.parts) or f"{job.label}: done")
    _finish(job, message, False)
    if job.undo and scene is not None:
        undo_push(job.label)


def _finish(job: Job, message: str, error: bool) -> None:
    """End `job`: clear the progress, keep the message, redraw."""
    RT.job = None
    _, state = _job_state(job)
    if state is not None:
        state.job = ""
        state.message = message
        if not error:
            state.job_progress = 100.0
    if error:
        RT.last_error = message
        print(f"Track Anything: {message}")
    redraw()


def file_loaded() -> None:
    """Another .blend was loaded: the running job's results have nowhere to go, stop it."""
    RT.files += 1
    RT.previews.clear()
    clear_journal()
    cancel()


def _unclaimed(event) -> None:
    """An event no future claimed: the worker's exit, or a warning of no request in particular."""
    if event.kind == "exited":
        RT.client, RT.opened, RT.session_state = None, None, ""
        if not event.data.get("expected"):
            RT.worker_state = f"stopped (code {event.data.get('returncode')}): it restarts on the next request"
        else:
            RT.worker_state = ""
        if RT.job is not None:
            _finish(RT.job, f"{RT.job.label} failed: the worker stopped", True)
        return
    if event.kind in ("warning", "error"):
        print(f"Track Anything worker {event.kind}: {event.data.get('message', '')}")


def pump() -> float | None:
    """Resolve every answered request and run its follow-up; the timer interval, None when idle.

    Registered with ``bpy.app.timers`` while requests are in flight; call it directly
    where timers do not fire (background mode, tests).
    """
    client = RT.client
    if client is not None:
        for event in client.pump():
            _unclaimed(event)
        if RT.worker_state == "starting" and time.monotonic() - RT.started_at > START_TIMEOUT_S:
            RT.worker_state = f"failed: the worker did not answer within {START_TIMEOUT_S:g} s"
            RT.client, RT.opened = None, None
            client.shutdown(timeout=1)
            for event in client.pump():
                _unclaimed(event)
    if RT.job is not None and RT.client is None:
        _finish(RT.job, f"{RT.job.label} failed: the worker stopped", True)
    RT.futures = [f for f in RT.futures if not f.done()]
    if RT.futures or RT.job is not None or RT.previews:
        if RT.job is not None or RT.preview is not None:
            redraw()
        return POLL_INTERVAL_S
    RT.timer_on = False
    return None


def cancel() -> bool:
    """Ask the running job to stop between frames (finished frames are kept)."""
    job = RT.job
    if job is None or job.future is None or RT.client is None:
        return False
    job.steps[1:] = []  # no further step after the one running
    RT.client.cancel(job.future.req)
    return True


def undo_push(message: str) -> None:
    """Add an undo step for data a follow-up changed (background mode: only when asked for)."""
    if bpy.app.background and not RT.undo_in_background:
        return
    try:
        bpy.ops.ed.undo_push(message=f"Track Anything: {message}")
    except RuntimeError:
        pass


def redraw() -> None:
    """Redraw sequencer and clip editors and the preferences so progress and overlays follow."""
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
    RT.job, RT.preview = None, None
    RT.previews.clear()
    RT.futures.clear()
    RT.worker_state = RT.session_state = ""
    close_views()
    client, RT.client, RT.opened = RT.client, None, None
    if client is not None:
        client.shutdown(timeout=5)


_views: dict[str, Any] = {}


def session_view(state):
    """A read-only handle on the scene's session, kept between panel draws (it follows the writer).

    None when the folder is missing or unreadable (the panel then just shows less).
    """
    path = bpy.path.abspath(state.session_path)
    view = _views.get(path)
    if view is None:
        from ..tam_blender_addon.session import Session

        try:
            view = Session.open(path, writable=False)
        except (TamError, OSError):
            return None
        _views[path] = view
    return view


def close_views() -> None:
    """Drop the panels' read-only session handles."""
    for view in _views.values():
        view.close()
    _views.clear()
