"""Setting up the worker: create its Python environment, download the checkpoints.

Both run as child processes (``subprocess.Popen``) whose output is read by a thread and
shown, a line at a time, in the preferences; a ``bpy.app.timers`` callback polls them, so
Blender never blocks, and ``tam.cancel`` stops them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ..tam_blender_addon.client import LAUNCH, Future
from ..tam_blender_addon.errors import InputError, TamError
from . import env_plan, runtime

# The worker's packages, pinned as in pyproject.toml (a test keeps the two equal).
WORKER_REQUIREMENTS = (
    "torch==2.14.1",
    "torchvision==0.29.1",
    "segment-anything==1.0",
    "numpy>=1.26,<2",
    "opencv-python-headless==4.11.0.86",
    "imageio-ffmpeg>=0.5",
    "einops>=0.7",
)
# the checkpoints each network backend needs (names the worker's `weights list` uses)
BACKEND_CHECKPOINTS = {
    "NEURAL": ("sam_{sam}", "xmem", "e2fgvi_hq"),
    "SAM2": ("sam2.1_{sam2}", "e2fgvi_hq"),
}
BACKEND_LABELS = {"NEURAL": "Neural", "SAM2": "SAM 2.1"}
CHECKPOINT_LABELS = {"sam": "SAM", "xmem": "XMem", "e2fgvi_hq": "E2FGVI-HQ", "sam2.1": "SAM 2.1"}


@dataclass
class Task:
    """A chain of commands run one after another in a child process."""

    label: str
    steps: list[list[str]]
    step: int = 0
    proc: subprocess.Popen | None = None
    lines: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    started: float = field(default_factory=time.monotonic)
    result: str = ""  # '' while running, then 'done' / 'failed: ...' / 'cancelled'
    cancelled: bool = False
    explain: Callable[[list[str], int | None], str] | None = None  # one line for a failed step
    on_end: Callable[[Task], None] | None = None  # runs once the task is over (may set result)

    @property
    def last_line(self) -> str:
        """The latest output line (progress of pip or of the download)."""
        return self.lines[-1] if self.lines else ""


TASKS: dict[str, Task] = {}


def _reader(task: Task, stream) -> None:
    """Collect the child's output lines (carriage-return progress counts as lines)."""
    buf = b""
    while True:
        chunk = stream.read1(4096) if hasattr(stream, "read1") else stream.read(4096)
        if not chunk:
            break
        buf += chunk
        parts = buf.replace(b"\r", b"\n").split(b"\n")
        buf = parts.pop()
        for part in parts:
            text = part.decode("utf-8", "replace").strip()
            if text:
                task.lines.append(text)
    if buf.strip():
        task.lines.append(buf.decode("utf-8", "replace").strip())


def _spawn(task: Task) -> None:
    """Start the current step of `task`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
    env["PYTHONUNBUFFERED"] = "1"
    task.proc = subprocess.Popen(task.steps[task.step], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
    threading.Thread(target=_reader, args=(task, task.proc.stdout), daemon=True).start()


def poll_task(key: str) -> float | None:
    """Advance task `key`: next step when one ends; the timer interval, None when over."""
    task = TASKS.get(key)
    if task is None or task.result:
        return None
    code = task.proc.poll() if task.proc is not None else None
    if code is None:
        if task.cancelled:
            task.proc.terminate()
        runtime.redraw()
        return 0.25
    if task.cancelled:
        task.result = "cancelled"
    elif code != 0:
        why = task.explain(list(task.lines), code) if task.explain else (task.last_line or f"exit code {code}")
        task.result = f"failed ({why})"
    elif task.step + 1 < len(task.steps):
        task.step += 1
        try:
            _spawn(task)
        except OSError as exc:
            task.result = f"failed ({exc})"
            _end(task)
            return None
        return 0.25
    else:
        task.result = "done"
    _end(task)
    runtime.redraw()
    return None


def _end(task: Task) -> None:
    """Run the task's end hook once; its error becomes the task's result."""
    hook, task.on_end = task.on_end, None
    if hook is None:
        return
    try:
        hook(task)
    except Exception as exc:  # noqa: BLE001 - any failure of the hook is the task's failure, in one line
        task.result = f"failed ({exc})"


def start_task(key: str, label: str, steps: list[list[str]], explain=None, on_end=None) -> Task:
    """Run `steps` in the background under `key` (one task per key at a time)."""
    old = TASKS.get(key)
    if old is not None and not old.result:
        raise RuntimeError(f"{old.label} is already running")
    task = Task(label, steps, explain=explain, on_end=on_end)
    TASKS[key] = task
    try:
        _spawn(task)
    except OSError as exc:
        task.result = f"failed ({exc})"
        _end(task)
        return task
    if bpy.app.background:
        while poll_task(key) is not None:
            time.sleep(0.1)
    else:
        bpy.app.timers.register(lambda: poll_task(key), first_interval=0.25)
    return task


def cancel_all() -> bool:
    """Ask every running setup task to stop; True if one was running."""
    running = [t for t in TASKS.values() if not t.result]
    for t in running:
        t.cancelled = True
    return bool(running)


# --------------------------------------------------------------------------- status


def network_backend(s: runtime.Settings) -> str:
    """The network backend the preferences point at (the classic one needs no checkpoint)."""
    return s.backend if s.backend in BACKEND_CHECKPOINTS else "NEURAL"


def checkpoint_status(s: runtime.Settings) -> tuple[list[str], list[str]]:
    """(installed, missing) checkpoint names of the preferred network backend in the checkpoint folder."""
    states = checkpoint_states(runtime.worker_python(s), s.checkpoint_dir)
    installed, missing = [], []
    for name in BACKEND_CHECKPOINTS[network_backend(s)]:
        name = name.format(sam=s.sam_model, sam2=s.sam2_model)
        (installed if states.get(name) == "installed" else missing).append(name)
    return installed, missing


_checkpoint_cache: dict[tuple, dict[str, str]] = {}
_asked: dict[tuple, Future] = {}  # weights requests to the running worker still on their way


def _remember(key: tuple, states: dict[str, str]) -> None:
    """Cache an answer (a few folder states at most: old ones are dropped)."""
    if len(_checkpoint_cache) >= 8:
        _checkpoint_cache.clear()
    _checkpoint_cache[key] = states


def _folder_stamp(folder: str) -> int:
    """Changes when a checkpoint lands in or leaves `folder` (0: no folder named, -1: none there)."""
    try:
        return os.stat(folder).st_mtime_ns if folder else 0
    except OSError:
        return -1


def checkpoint_states(python: str, folder: str) -> dict[str, str]:
    """{checkpoint: 'installed' | 'missing'}, without Blender importing ``models``.

    A running worker of that Python answers its ``weights`` command (a future: until it
    lands, and whenever no worker runs, the CLI below answers). Starting a worker only to
    ask would import torch (seconds); the CLI does not (0.2 s, cached per folder state).
    """
    client = runtime.RT.client
    if client is not None and client.alive and runtime.RT.worker_state == "ready" and client.python == python:
        key = ("worker", id(client), folder, _folder_stamp(folder))
        if key in _checkpoint_cache:
            return _checkpoint_cache[key]
        _ask_worker(client, key, folder)
        if key in _checkpoint_cache:  # answered at once (background mode waits)
            return _checkpoint_cache[key]
    return checkpoint_states_from_worker_cli(python, folder)


def _ask_worker(client, key: tuple, folder: str) -> None:
    """Send the worker a ``weights`` request for `folder` once; its answer fills the cache."""
    if key in _asked:
        return

    def answered(f: Future) -> None:
        _asked.pop(key, None)
        if f.exception() is None:
            _remember(key, {c["name"]: "installed" if c["installed"] else "missing"
                            for c in f.result()["checkpoints"]})
            runtime.redraw()

    future = client.request("weights", **({"dir": folder} if folder else {}))
    _asked[key] = future
    with contextlib.suppress(TamError):  # no answer: the CLI answers instead
        runtime.follow(future, answered, wait_s=30)


def checkpoint_states_from_worker_cli(python: str, folder: str) -> dict[str, str]:
    """{checkpoint: 'installed' | 'missing'} as ``launch.py cli weights list`` run with the
    worker's interpreter reports it (no worker needed; cached until the folder changes)."""
    key = (python, folder, _folder_stamp(folder))
    if key not in _checkpoint_cache:
        cmd = [python, str(LAUNCH), "cli", "weights", "list", *(["--dir", folder] if folder else [])]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        states = {}
        for line in out.splitlines():
            words = line.split()
            if len(words) >= 2 and words[-1] in ("installed", "missing"):
                states[words[0]] = words[-1]
        _remember(key, states)
    return _checkpoint_cache[key]


def _label(name: str) -> str:
    key = "sam2.1" if name.startswith("sam2.1_") else name.split("_vit")[0]
    return CHECKPOINT_LABELS.get(key, name)


def status_line(s: runtime.Settings) -> str:
    """What works, in words an editor understands, and the one thing to click if not."""
    python = runtime.worker_python(s)
    if not Path(python).is_file():
        return f"Worker Python not found ({python}): set it or click Create Environment"
    parts = ["Ready: classic backend."]
    _, missing = checkpoint_status(s)
    if missing:
        what = ", ".join(_label(m) for m in missing)
        plural = "s" if len(missing) > 1 else ""
        parts.append(f"{BACKEND_LABELS[network_backend(s)]}: {what} checkpoint{plural} missing — click Download.")
    else:
        parts.append(f"{BACKEND_LABELS[network_backend(s)]}: ready.")
    if runtime.RT.client is not None and runtime.RT.client.alive:
        info = runtime.RT.client.info
        devices = info.get("devices") or info.get("device") or ""
        parts.append(f"Worker running (torch {info.get('torch', '?')}{', ' + str(devices) if devices else ''}).")
    return " ".join(parts)


# --------------------------------------------------------------------------- operators


PLANS: dict[str, dict] = {}  # the last size check, per settings key (shown before the download starts)


def _pip_version(python: str) -> str:
    """The pip a new venv of `python` will get (ensurepip's), '' if unknown."""
    try:
        out = subprocess.run([python, "-c", "import ensurepip; print(ensurepip.version())"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _plan_key(base: str, build: str, packages: list[str]) -> str:
    return "|".join([base, build, *packages])


class _EnvOptions:
    """The choices both environment operators share."""

    base_python: StringProperty(name="Base Python", subtype="FILE_PATH",
                                description="Python 3.11 to build the environment from (default: Blender's)")
    torch_build: EnumProperty(name="Torch Build", items=env_plan.BUILD_ITEMS, default="AUTO",
                              description="Which torch to install: the GPU decides what runs fast")
    requirements: StringProperty(name="Packages", default=" ".join(WORKER_REQUIREMENTS),
                                 description="Pinned packages to install, separated by spaces")

    def resolved(self, context) -> tuple[str, str, env_plan.Gpu, list[str]]:
        """(base python, build, GPU, pip index options)."""
        base = bpy.path.abspath(self.base_python) if self.base_python else sys.executable
        gpu = env_plan.detect_gpu()
        build = env_plan.choose_build(self.torch_build, gpu)
        try:
            index = env_plan.index_args(build, gpu) if self.requirements.split() else []
        except ValueError as exc:
            raise InputError(str(exc)) from None
        return base, build, gpu, index


class TAM_OT_worker_env_plan(_EnvOptions, bpy.types.Operator):
    """Find out which torch build suits this computer and how much the environment downloads"""

    bl_idname = "tam.worker_env_plan"
    bl_label = "Check Download Size"
    bl_options = {"REGISTER"}

    def execute(self, context) -> set[str]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Online access is off (Preferences > System > Network): allow it to continue")
            return {"CANCELLED"}
        try:
            base, build, gpu, index = self.resolved(context)
        except InputError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        packages = self.requirements.split()
        report = Path(tempfile.mkdtemp(prefix="tam-plan-")) / "report.json"
        cmd = [base, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               *index, *packages]
        key = _plan_key(base, build, packages)

        def measured(task: Task) -> None:
            if task.result != "done":
                return
            size, files = env_plan.download_size(json.loads(report.read_text("utf-8")))
            shutil.rmtree(report.parent, ignore_errors=True)
            PLANS[key] = {"size": size, "files": files, "build": build, "gpu": gpu.describe()}
            task.lines.append(f"{gpu.describe()}: torch {build.lower()} build, "
                              f"{files} packages, {env_plan.format_size(size)} to download")

        task = start_task("env_plan", "Checking the download", [cmd], explain=env_plan.explain_failure,
                          on_end=measured)
        if task.result and task.result != "done":
            self.report({"ERROR"}, f"{task.label}: {task.result}")
            return {"CANCELLED"}
        self.report({"INFO"}, task.last_line if task.result == "done" else f"{task.label}...")
        return {"FINISHED"}


class TAM_OT_worker_env_create(_EnvOptions, bpy.types.Operator):
    """Create a Python environment with torch for the worker (checks the download size first)"""

    bl_idname = "tam.worker_env_create"
    bl_label = "Create Environment"
    bl_options = {"REGISTER"}

    location: StringProperty(name="Folder", subtype="DIR_PATH",
                             description="Where to create it (default: the add-on's user folder)")
    with_pip: BoolProperty(name="With pip", default=True, description="Install pip into the environment")
    system_site_packages: BoolProperty(
        name="Use the Base Python's Packages", default=False,
        description="Let the environment see the base Python's packages, so pip installs only what is missing "
                    "(a Python that already has torch, e.g. a conda env or a development .venv; works offline)")
    confirmed: BoolProperty(name="Confirmed", default=False, options={"HIDDEN", "SKIP_SAVE"},
                            description="The download size was shown: build without asking again")

    @classmethod
    def poll(cls, context) -> bool:
        for key in ("env", "env_plan"):
            task = TASKS.get(key)
            if task is not None and not task.result:
                cls.poll_message_set("The environment is being checked or created")
                return False
        return True

    def invoke(self, context, event) -> set[str]:
        # a click first says how much will be downloaded; the button then shown starts the build
        base = bpy.path.abspath(self.base_python) if self.base_python else sys.executable
        key = _plan_key(base, env_plan.choose_build(self.torch_build, env_plan.detect_gpu()),
                        self.requirements.split())
        if not self.confirmed and self.requirements.split() and key not in PLANS:
            return bpy.ops.tam.worker_env_plan(base_python=self.base_python, torch_build=self.torch_build,
                                               requirements=self.requirements)
        return self.execute(context)

    def execute(self, context) -> set[str]:
        try:
            base, build, gpu, index = self.resolved(context)
        except InputError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        where = Path(bpy.path.abspath(self.location)) if self.location else runtime.env_python().parents[1]
        where = Path(os.path.normpath(where))
        part = env_plan.partial_dir(where)
        env_plan.clear_partial(where)  # what an interrupted build left
        python = env_plan.env_python(part)
        # with the base's packages, pip (and setuptools) are the base's too: an own older copy would shadow them
        venv_opts = [*([] if self.with_pip and not self.system_site_packages else ["--without-pip"]),
                     *(["--system-site-packages"] if self.system_site_packages else [])]
        steps = [[base, "-m", "venv", *venv_opts, str(part)]]
        if self.system_site_packages:  # also when the base Python is itself a venv (e.g. a checkout's .venv)
            try:
                steps.append([str(python), "-c", env_plan.LINK_SCRIPT, *env_plan.site_dirs(base)])
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                self.report({"ERROR"}, f"Base Python: {exc}")
                return {"CANCELLED"}
        packages = self.requirements.split()
        if packages:
            offline = not bpy.app.online_access
            if offline and not self.system_site_packages:
                self.report({"ERROR"}, "Online access is off (Preferences > System > Network): "
                                       "allow it to install the worker's packages")
                return {"CANCELLED"}
            # offline, pip may only take what the base Python already has
            steps.append([str(python), "-m", "pip", "install", *env_plan.progress_args(_pip_version(base)),
                          *(["--no-index"] if offline else index), *packages])
            # the real worker, started from this extension in the new environment, answers hello
            steps.append([str(python), "-c", env_plan.VERIFY_SCRIPT, str(Path(LAUNCH).parent)])

        def finish(task: Task) -> None:
            if task.result != "done":
                env_plan.clear_partial(where)  # cancelled or failed: nothing that looks like an environment
                return
            hello = env_plan.parse_hello(list(task.lines)) if packages else {"torch": None, "note": "no packages"}
            why = env_plan.check_hello(hello, build) if packages else ""
            if why:
                env_plan.clear_partial(where)
                raise RuntimeError(why)
            env_plan.finish_build(where, {**(hello or {}), "build": build, "gpu": gpu.describe()})
            if packages:
                devices = ", ".join(d.get("name", d.get("id", "?")) for d in hello.get("devices") or [])
                task.lines.append(f"ready: torch {hello['torch']} ({build.lower()} build) on {devices}")

        plan = PLANS.get(_plan_key(base, build, packages))
        size = f", {env_plan.format_size(plan['size'])} to download" if plan else ""
        task = start_task("env", f"Creating the worker environment (torch {build.lower()}{size})", steps,
                          explain=env_plan.explain_failure, on_end=finish)
        if task.result and task.result != "done":
            self.report({"ERROR"}, f"{task.label}: {task.result}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{task.label} in {where}" + (f": {task.last_line}" if task.result == "done" else "..."))
        return {"FINISHED"}


def draw_env_buttons(layout) -> None:
    """Create Environment, with the download size once it was checked (the next click builds)."""
    plan = next(reversed(PLANS.values()), None) if PLANS else None
    if plan is None:
        layout.operator("tam.worker_env_create", text="Create Environment")
        return
    op = layout.operator("tam.worker_env_create", text=f"Create ({env_plan.format_size(plan['size'])})")
    op.confirmed = True
    op.torch_build = plan["build"]


class TAM_OT_weights_download(bpy.types.Operator):
    """Download and verify the official checkpoints of the preferred network backend (Neural or SAM 2.1)"""

    bl_idname = "tam.weights_download"
    bl_label = "Download Checkpoints"
    bl_options = {"REGISTER"}

    names: StringProperty(name="Checkpoints", description="Names separated by spaces (default: the missing ones)")
    url: StringProperty(name="URL", description="Fetch one checkpoint from this address instead: a mirror, "
                                                "or file:///path of a file downloaded by hand")

    @classmethod
    def poll(cls, context) -> bool:
        task = TASKS.get("weights")
        if task is not None and not task.result:
            cls.poll_message_set("Checkpoints are being downloaded")
            return False
        return True

    def execute(self, context) -> set[str]:
        if not bpy.app.online_access:
            self.report({"ERROR"}, "Online access is off (Preferences > System > Network): "
                                   "allow it to download the checkpoints")
            return {"CANCELLED"}
        s = runtime.settings(context)
        names = self.names.split() or checkpoint_status(s)[1]
        if not names:
            self.report({"INFO"}, "all checkpoints are installed")
            return {"FINISHED"}
        if self.url and len(names) != 1:
            self.report({"ERROR"}, "a URL is for one checkpoint: name it in Checkpoints")
            return {"CANCELLED"}
        cmd = [runtime.worker_python(s), str(LAUNCH), "cli", "weights", "download", *names, "--dir", s.checkpoint_dir]
        if self.url:
            cmd += ["--url", self.url]
        task = start_task("weights", "Downloading checkpoints", [cmd])
        if task.result and task.result != "done":
            self.report({"ERROR"}, f"{task.label}: {task.result}")
            return {"CANCELLED"}
        self.report({"INFO"}, f"{task.label}: {' '.join(names)}")
        return {"FINISHED"}


CLASSES = (TAM_OT_worker_env_plan, TAM_OT_worker_env_create, TAM_OT_weights_download)
