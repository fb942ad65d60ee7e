"""Blender never waits on the worker: clicks return at once, masks land when the pump runs,
clicks keep their order, a newer click supersedes a pending preview; undo takes a click back
out of the session; renames, keyframes and panels.

The add-on is registered from the worktree (as `track_anything`) inside the real bpy 5.0.1
wheel and drives a real worker process (this venv's Python) on the classic backend. The
"slow worker" is that same worker told by ``TAM_TEST_DELAY_SEGMENT`` to take longer over
each segmentation, so a click's answer is certainly still on its way when the operator
returns.
"""

from __future__ import annotations

import os
import time

import pytest

bpy = pytest.importorskip("bpy")
pytest.importorskip("cv2")

import track_anything  # noqa: E402 - conftest registers the worktree under this name
from track_anything.operators import runtime  # noqa: E402 - needs bpy
from track_anything.operators.session_ops import keyframe_rows  # noqa: E402
from track_anything.tam_blender_addon.session import Session  # noqa: E402

pytestmark = [pytest.mark.bpy]

W, H, N = 96, 72, 8
START = 3  # scene frame of source frame 0
SEGMENT_DELAY_S = 0.4


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A small synthetic clip with one moving ellipse, and its ground truth."""
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(
        name="async", width=W, height=H, num_frames=N, fps=24.0, seed=5, pan=(0.0, 0.0),
        objects=[ObjectSpec(obj_id=1, size=(30, 22), path=[(0, 30, 36, 1.0), (N - 1, 64, 38, 1.0)],
                            shape="ellipse", texture="stripes", hue=0.6)],
    )
    c = make_clip(spec)
    return c, str(write_clip(c, tmp_path_factory.mktemp("clip"), video=True)["video"])


@pytest.fixture(scope="module")
def addon():
    """The add-on registered from the worktree for this module, its worker slowed down;
    the worker is stopped afterwards."""
    kept = os.environ.get("TAM_TEST_DELAY_SEGMENT")
    os.environ["TAM_TEST_DELAY_SEGMENT"] = str(SEGMENT_DELAY_S)  # inherited by the worker
    runtime.shutdown()
    bpy.ops.wm.read_homefile(use_empty=True)
    track_anything.register()
    yield
    runtime.RT.block_in_background = True
    track_anything.unregister()
    if kept is None:
        os.environ.pop("TAM_TEST_DELAY_SEGMENT", None)
    else:
        os.environ["TAM_TEST_DELAY_SEGMENT"] = kept


@pytest.fixture
def scene(addon, clip, tmp_path):
    """An empty file with the clip as a movie strip and a classic session with one object."""
    runtime.RT.block_in_background = True
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    se = sc.sequence_editor_create()
    se.active_strip = se.strips.new_movie("clip", clip[1], 2, START)
    assert bpy.ops.tam.session_new(backend="CLASSIC", directory=str(tmp_path / "session")) == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    yield sc
    runtime.RT.block_in_background = True
    _pump_until_idle()


def _session(sc) -> Session:
    return Session.open(bpy.path.abspath(sc.tam.session_path), writable=False)


def _centre(c, i: int) -> tuple[float, float]:
    x0, y0, x1, y1 = c.box(i, 1)
    return (x0 + x1) / 2, (y0 + y1) / 2


def _pump_until_idle(limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while runtime.pump() is not None:
        assert time.monotonic() < deadline, "requests still in flight"
        time.sleep(0.01)


def _timed_click(frame: int, x: float, y: float, positive: bool = True) -> float:
    t0 = time.perf_counter()
    assert bpy.ops.tam.prompt_add(object_id=1, frame=START + frame, x=x, y=y, positive=positive) == {"FINISHED"}
    return time.perf_counter() - t0


def test_click_returns_at_once_and_its_mask_lands_when_the_pump_runs(scene, clip):
    c, _ = clip
    runtime.RT.block_in_background = False
    took = _timed_click(2, *_centre(c, 2))
    assert took < 0.05, f"the click operator took {took * 1000:.1f} ms"
    assert scene.tam.message == f"segmenting frame {START + 2}…"
    assert runtime.preview_text().startswith(f"segmenting frame {START + 2}")
    with _session(scene) as s:
        assert s.read_mask(2) is None  # the worker is still at it
    _pump_until_idle()
    assert runtime.previews_pending() == 0
    with _session(scene) as s:
        rec = s.read_mask(2)
        assert rec is not None and rec.kind == "keyframe" and rec.mask(1).sum() > 100
    assert scene.tam.message.startswith("ball: ") and f"at frame {START + 2}" in scene.tam.message


def test_three_quick_clicks_keep_their_order_and_none_is_lost(scene, clip):
    c, _ = clip
    runtime.RT.block_in_background = False
    frames = [5, 1, 3]
    times = [_timed_click(f, *_centre(c, f)) for f in frames]
    assert max(times) < 0.05, [round(t * 1000, 1) for t in times]
    _pump_until_idle()
    with _session(scene) as s:
        assert [p.frame for p in s.prompts()] == frames
        segmented = [e["frame"] for e in s.read_log() if e["event"] == "segment"]
        assert segmented == frames  # previews answered in the order clicked
        assert all(s.read_mask(f).mask(1).sum() > 100 for f in frames)


def test_a_new_click_on_the_same_frame_supersedes_the_pending_preview(scene, clip):
    c, _ = clip
    runtime.RT.block_in_background = False
    x, y = _centre(c, 4)
    _timed_click(4, x, y)  # its preview is sent and in flight
    first = runtime.RT.preview[1]
    _timed_click(4, x + 3, y)  # supersedes it: a new preview is queued
    _timed_click(4, x, y + 2)  # joins the queued one
    assert runtime.previews_pending() == 2
    deadline = time.monotonic() + 30
    while not first.done():
        assert time.monotonic() < deadline
        runtime.pump()
        time.sleep(0.01)
    assert scene.tam.message == f"segmenting frame {START + 4}…"  # the stale answer is not announced
    _pump_until_idle()
    with _session(scene) as s:
        assert len(s.prompts(frame=4)) == 3
        assert [e["frame"] for e in s.read_log() if e["event"] == "segment"] == [4, 4]
    assert "at frame" in scene.tam.message


def test_undo_of_a_click_removes_it_from_the_session_and_redo_brings_it_back(scene, clip):
    c, _ = clip
    x, y = _centre(c, 2)
    assert bpy.ops.tam.prompt_add(object_id=1, frame=START + 2, x=x, y=y) == {"FINISHED"}
    bpy.ops.ed.undo_push(message="before the click")  # background mode starts its undo stack here
    # as the click tool runs it: an operator call that pushes its own undo step
    assert bpy.ops.tam.prompt_add("EXEC_DEFAULT", True, object_id=1, frame=START + 2, x=x + 4, y=y) == {"FINISHED"}
    with _session(bpy.context.scene) as s:
        assert [(p.x, p.y) for p in s.prompts()] == [(x, y), (x + 4, y)]
    bpy.ops.ed.undo()
    with _session(bpy.context.scene) as s:
        assert [(p.x, p.y) for p in s.prompts()] == [(x, y)]  # the undone click is gone from the session
        assert [e["frame"] for e in s.read_log() if e["event"] == "segment"] == [2, 2, 2]  # shown again
    bpy.ops.ed.redo()
    with _session(bpy.context.scene) as s:
        assert [(p.x, p.y) for p in s.prompts()] == [(x, y), (x + 4, y)]


def test_renaming_an_object_in_the_list_renames_it_in_the_session(scene):
    scene.tam.objects[0].name = "red ball"
    with _session(scene) as s:
        assert [o.name for o in s.objects] == ["red ball"]
    assert scene.tam.objects[0].session_name == "red ball"


def test_keyframe_list_shows_kind_and_delete_removes_one(scene, clip):
    c, _ = clip
    x0, y0, x1, y1 = c.box(1, 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=START + 1, x0=x0, y0=y0, x1=x1, y1=y1) == {"FINISHED"}
    for dx in (0, 3):
        x, y = _centre(c, 6)
        assert bpy.ops.tam.prompt_add(object_id=1, frame=START + 6, x=x + dx, y=y) == {"FINISHED"}
    with _session(scene) as s:
        assert keyframe_rows(s, 1) == [(1, "box", 1), (6, "clicks", 2)]
    assert bpy.ops.tam.keyframe_delete(object_id=1, frame=START + 1) == {"FINISHED"}
    with _session(scene) as s:
        assert keyframe_rows(s, 1) == [(6, "clicks", 2)]
    assert bpy.ops.tam.keyframe_jump(object_id=1, frame=START + 6) == {"FINISHED"}
    assert scene.frame_current == START + 6


def test_sub_panels_have_a_parent_and_hide_without_a_session(addon):
    parent = bpy.types.SEQUENCER_PT_track_anything
    names = ["session", "objects", "keyframes", "track", "output"]
    subs = [getattr(bpy.types, f"SEQUENCER_PT_track_anything_{n}") for n in names]
    assert all(p.bl_parent_id == parent.bl_idname for p in subs)
    bpy.ops.wm.read_homefile(use_empty=True)
    assert not any(p.poll(bpy.context) for p in subs)


def _tracked(sc, c) -> None:
    x0, y0, x1, y1 = c.box(2, 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=START + 2, x0=x0 - 2, y0=y0 - 2, x1=x1 + 2, y1=y1 + 2) == {"FINISHED"}
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}


def test_writing_the_mask_is_one_undo_step_that_holds_the_mask(scene, clip):
    _tracked(scene, clip[0])
    runtime.RT.undo_in_background = True
    try:
        bpy.ops.ed.undo_push(message="tracked")
        assert bpy.ops.tam.mattes_write("EXEC_DEFAULT", True, targets={"MASK"}) == {"FINISHED"}
        name = bpy.context.scene.tam.mask_name
        assert name in bpy.data.masks
        bpy.ops.ed.undo()  # the first Ctrl+Z takes the written Mask away: the step is not empty
        assert name not in bpy.data.masks and bpy.context.scene.tam.mask_name == ""
        bpy.ops.ed.redo()
        assert name in bpy.data.masks
    finally:
        runtime.RT.undo_in_background = False


def test_refine_button_runs_the_workers_refine_on_the_doubtful_frames(scene, clip):
    _tracked(scene, clip[0])
    runtime.release_session()
    with Session.open(bpy.path.abspath(scene.tam.session_path)) as s:
        rec = s.read_mask(5)
        s.write_mask(5, rec.labels, {1: 0.2})
    track_anything.operators.session_ops._doubtful_frames(scene)
    assert [d.frame for d in scene.tam.doubtful] == [START + 5]
    assert bpy.ops.tam.refine() == {"FINISHED"}
    assert scene.tam.message.startswith("refined 1 frame"), scene.tam.message
    with _session(scene) as s:
        assert any(e["event"] == "refine_done" and e["frames"] == 1 for e in s.read_log())


def test_overlay_options_outline_opacity_and_active_object_only(scene):
    import numpy as np

    from track_anything.ui.overlay import overlay_rgba

    labels = np.zeros((8, 8), np.uint8)
    labels[2:7, 1:6] = 1
    full = overlay_rgba(labels, {1: (1.0, 0.0, 0.0)}, alpha=0.7)
    edge = overlay_rgba(labels, {1: (1.0, 0.0, 0.0)}, alpha=0.7, outline=True)
    assert (full[..., 3] > 0).sum() == 25 and np.allclose(full[full[..., 3] > 0, 3], 0.7)
    assert (edge[..., 3] > 0).sum() == 25 - 9  # the 3x3 inside is left out
    st = scene.tam
    assert bpy.ops.tam.object_add(name="other") == {"FINISHED"}
    assert set(st.overlay_colors()) == {1, 2}
    st.overlay_all = False
    assert set(st.overlay_colors()) == {st.active.obj_id}


def test_a_click_while_the_worker_is_not_running_starts_it_in_the_background(scene, clip):
    c, _ = clip
    runtime.shutdown()
    runtime.RT.block_in_background = False
    took = _timed_click(3, *_centre(c, 3))
    assert took < 0.05, f"the click operator took {took * 1000:.1f} ms while the worker had to start"
    assert runtime.worker_status().startswith("Starting the worker")
    _pump_until_idle()
    assert runtime.RT.worker_state == "ready" and runtime.worker_status() == ""
    with _session(scene) as s:
        assert [p.frame for p in s.prompts()] == [3] and s.read_mask(3) is not None


def test_checkpoint_states_come_from_the_running_worker_not_a_cli_subprocess(scene, tmp_path, monkeypatch):
    """With the worker running, the preferences learn which checkpoints are installed from its
    ``weights`` command (the CLI subprocess is only the fallback when no worker runs)."""
    from track_anything.operators import setup

    def no_cli(*_args):
        raise AssertionError("the CLI was run although a worker answers")

    monkeypatch.setattr(setup, "checkpoint_states_from_worker_cli", no_cli)
    runtime.open_session(bpy.context, scene.tam)  # waits for the worker in background mode
    assert runtime.RT.worker_state == "ready"
    (tmp_path / "XMem.pth").write_bytes(b"x")
    python = runtime.worker_python(runtime.settings(bpy.context))
    states = setup.checkpoint_states(python, str(tmp_path))
    assert states["xmem"] == "installed" and states["sam_vit_b"] == "missing"
    (tmp_path / "XMem.pth").unlink()  # the folder changed: asked again
    assert setup.checkpoint_states(python, str(tmp_path))["xmem"] == "missing"
