"""A new user's first run (issue 13 item 5): Create Environment in bpy 5.0.1, then track through it.

Runs offline: the base Python is this checkout's .venv and the build uses "Use the Base
Python's Packages", so pip finds every pinned package already there and downloads
nothing; the rest (a real venv, pip, the worker's hello in the new environment, the
ready marker and the rename) is the product's path. A build that downloads torch from
the package index is `make env-build-test` (tests/test_blender_env_build.py with
TAM_FULL_ENV_BUILD=1): several GB and minutes, so not in CI.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

bpy = pytest.importorskip("bpy")
pytest.importorskip("cv2")

import test_blender_extension as ext  # noqa: E402 - beside the tests: its fixtures install the extension

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

addon, clip, scene = ext.addon, ext.clip, ext.scene


def _mod(name: str):
    return sys.modules[f"{ext.PKG}.{name}"]


def _build(**options) -> object:
    """Run tam.worker_env_create to its end (background mode polls it there); its task."""
    bpy.ops.tam.worker_env_create(**options)
    return _mod("operators.setup").TASKS["env"]


def test_environment_built_by_the_extension_runs_the_worker_and_tracks(scene, clip):
    setup, runtime, env_plan = (_mod(f"operators.{m}") for m in ("setup", "runtime", "env_plan"))
    prefs = bpy.context.preferences.addons[ext.PKG].preferences
    runtime.shutdown()  # the worker of earlier tests ran on this venv's Python
    prefs.worker_python = ""  # use the environment the add-on makes
    env = runtime.env_python().parents[1]
    assert not env_plan.is_ready(env) and runtime.worker_python(runtime.settings()) != str(runtime.env_python())
    full = os.environ.get("TAM_FULL_ENV_BUILD") == "1"  # the real download (make env-build-test)
    options = {} if full else {"base_python": sys.executable, "system_site_packages": True}
    task = _build(torch_build="AUTO" if full else "DEFAULT", **options)
    print("environment build:", task.label, "->", task.result, "|", task.last_line)
    assert task.result == "done", list(task.lines)[-15:]
    assert env_plan.is_ready(env) and not env_plan.partial_dir(env).exists()
    hello = env_plan.parse_hello(list(task.lines))
    assert hello["torch"] and hello["executable"].startswith(str(env_plan.partial_dir(env)))  # verified before the move
    assert task.last_line.startswith(f"ready: torch {hello['torch']}")
    assert runtime.worker_python(runtime.settings()) == str(runtime.env_python())

    c, _ = clip
    ext._tracked_session(scene, c)
    client = runtime.RT.client
    assert Path(client.info["executable"]).parent.parent == env  # the worker ran in the new environment
    with ext._open_session(scene) as s:
        st = scene.tam
        assert set(range(st.source_start, st.source_start + st.length)) <= set(s.mask_frames())
    runtime.shutdown()


def test_a_cancelled_build_leaves_nothing_that_looks_ready(addon, tmp_path):
    setup, env_plan = _mod("operators.setup"), _mod("operators.env_plan")
    where = tmp_path / "env"
    timer = threading.Timer(1.5, setup.cancel_all)  # the editor presses Cancel half-way
    timer.start()
    try:
        with pytest.raises(RuntimeError, match=r"worker environment .*: cancelled$"):  # one line
            _build(location=str(where), base_python=sys.executable, system_site_packages=True,
                   torch_build="DEFAULT")
    finally:
        timer.cancel()
    task = setup.TASKS["env"]
    assert task.result == "cancelled", (task.result, list(task.lines)[-5:])
    assert not where.exists() and not env_plan.partial_dir(where).exists()
    # a build killed outright (Blender crashed) leaves its partial folder: never taken for ready,
    # and the next build starts by removing it
    stale = env_plan.env_python(env_plan.partial_dir(where))
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    assert not env_plan.is_ready(where) and not env_plan.is_ready(env_plan.partial_dir(where))
    task = _build(location=str(where), requirements="", with_pip=False)
    assert task.result == "done" and env_plan.is_ready(where) and not env_plan.partial_dir(where).exists()
