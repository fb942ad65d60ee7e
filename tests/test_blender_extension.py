"""The extension inside the real bpy 5.0.1 wheel: build, install, operators, outputs, reload.

One module (one bpy import): the zip built by Blender's own extension tool is installed
into a private user folder (conftest sets BLENDER_USER_RESOURCES before bpy loads), then
the operators drive the classic backend through the real worker (this venv's Python).
Each test starts from an empty file (`read_homefile(use_empty=True)`: unlike
`read_factory_settings` it keeps the enabled extension).
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

from bpy_render import render_frames  # noqa: E402 - beside the tests (conftest)

from track_anything.tam_blender_addon.matte_shapes import iou  # noqa: E402 - needs cv2

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PKG = "bl_ext.user_default.track_anything"
W, H, N = 160, 120, 12
STRIP_START = 5  # scene frame of source frame 0
TRIM = 1  # frames trimmed off each end of the strip


def _ext_tool() -> str:
    scripts = Path(bpy.utils.resource_path("LOCAL")) / "scripts"
    found = glob.glob(str(scripts / "addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, "the bpy wheel ships no blender_ext.py"
    return found[0]


def _mod(name: str):
    """A submodule of the installed extension."""
    return sys.modules[f"{PKG}.{name}"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A small synthetic clip (mp4) with one moving textured ellipse, and its ground truth."""
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(
        name="bpy", width=W, height=H, num_frames=N, fps=24.0, seed=3, pan=(0.0, 0.0),
        objects=[ObjectSpec(obj_id=1, size=(44, 32), path=[(0, 45, 60, 1.0), (N - 1, 110, 62, 1.0)],
                            shape="ellipse", texture="stripes", hue=0.05)],
    )
    c = make_clip(spec)
    paths = write_clip(c, tmp_path_factory.mktemp("clip"), video=True)
    return c, str(paths["video"])


@pytest.fixture(scope="module")
def addon(tmp_path_factory):
    """Validate, build and install the extension zip; enabled for the module, then uninstalled."""
    tool = _ext_tool()
    out = tmp_path_factory.mktemp("ext")
    res = subprocess.run([sys.executable, tool, "validate", str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    res = subprocess.run([sys.executable, tool, "build", "--source-dir", str(ROOT), "--output-dir", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    (zip_path,) = out.glob("track_anything-*.zip")
    import zipfile

    names = zipfile.ZipFile(zip_path).namelist()
    assert "blender_manifest.toml" in names and "tam_blender_addon/launch.py" in names
    assert not any(n.startswith(("tests/", ".venv/", ".git/", "docs/")) for n in names)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True) == {"FINISHED"}
    assert PKG in bpy.context.preferences.addons
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.worker_python = sys.executable  # the venv: torch, OpenCV, the engine
    prefs.checkpoint_dir = str(tmp_path_factory.mktemp("weights"))
    yield prefs
    runtime = sys.modules.get(f"{PKG}.operators.runtime")
    client = runtime.RT.client if runtime else None
    pid = client.pid if client else None
    import addon_utils

    addon_utils.disable(PKG, default_set=True)
    assert not hasattr(bpy.types.Scene, "tam") and not hasattr(bpy.types, "TAM_OT_track")
    if pid is not None:  # the worker was shut down with the add-on
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)
    repos = list(bpy.context.preferences.extensions.repos)
    index = next(i for i, r in enumerate(repos) if r.module == "user_default")
    assert bpy.ops.extensions.package_uninstall(repo_index=index, pkg_id="track_anything") == {"FINISHED"}
    assert PKG not in bpy.context.preferences.addons


@pytest.fixture
def scene(addon, clip):
    """An empty file with the clip as a trimmed movie strip (source frame 0 at STRIP_START)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = W, H, 100
    se = sc.sequence_editor_create()
    strip = se.strips.new_movie("clip", clip[1], 2, STRIP_START)
    strip.frame_offset_start = TRIM
    strip.frame_offset_end = TRIM
    se.active_strip = strip
    sc.frame_start, sc.frame_end = STRIP_START + TRIM, STRIP_START + N - 1 - TRIM
    return sc


def _open_session(sc):
    from track_anything.tam_blender_addon.session import Session

    return Session.open(bpy.path.abspath(sc.tam.session_path), writable=False)


def _render_frames(sc, first: int, last: int, folder: Path) -> dict[int, np.ndarray]:
    """Render frames first..last of scene `sc`; {frame: BGRA uint8 image}."""
    paths = render_frames(bpy, sc, range(first, last + 1), folder)
    return {f: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for f, p in paths.items()}


def _tracked_session(sc, clip_obj) -> None:
    """Session (classic), one object, a box on the first visible frame, tracked both ways."""
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    first = STRIP_START + TRIM + 2
    x0, y0, x1, y1 = clip_obj.box(first - STRIP_START, 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=first, x0=x0 - 3, y0=y0 - 3, x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}


def test_session_new_maps_scene_frames_through_the_strip_trims(scene, clip):
    """Scene frame f shows source frame f - frame_start; the session and the panel state agree."""
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    st = scene.tam
    assert (st.scene_start, st.source_start, st.length) == (STRIP_START + TRIM, TRIM, N - 2 * TRIM)
    assert (st.source_width, st.source_height, st.source_frames) == (W, H, N)
    session_dir = Path(st.session_path)
    assert session_dir.is_dir() and ROOT not in session_dir.parents
    assert "extensions/user_default/track_anything" not in session_dir.as_posix()  # never the extension folder
    with _open_session(scene) as s:
        assert s.mapping.scene_to_source(STRIP_START + 7) == 7
        assert s.source.num_frames == N and s.backend == "classic"
        # the processing preferences travel with the session, for the CLI and later workers
        assert s.settings == {"max_resolution": 480, "mem_every": 5, "max_memory_frames": 10,
                              "half_precision": True, "sam2_model": "base_plus"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    with pytest.raises(RuntimeError, match="outside the strip"):
        bpy.ops.tam.prompt_add(object_id=1, frame=STRIP_START, x=10, y=10)  # trimmed away
    # the editor moves the strip later: clicks follow its new place
    scene.sequence_editor.strips["clip"].frame_start += 10
    assert bpy.ops.tam.prompt_add(object_id=1, frame=STRIP_START + 10 + 5, x=60, y=60) == {"FINISHED"}
    assert st.scene_start == STRIP_START + 10 + TRIM
    with _open_session(scene) as s:
        assert [(p.frame, p.x, p.y) for p in s.prompts()] == [(5, 60.0, 60.0)]


def test_a_sam2_session_takes_the_model_size_preference(scene):
    """Backend "SAM 2.1" makes a sam2 session whose settings carry the SAM 2.1 size preference."""
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.sam2_model = "tiny"
    try:
        assert bpy.ops.tam.session_new(backend="SAM2") == {"FINISHED"}
    finally:
        prefs.sam2_model = "base_plus"
    assert scene.tam.backend == "SAM2"
    with _open_session(scene) as s:
        assert s.backend == "sam2" and s.settings["sam2_model"] == "tiny"


def test_unsupported_strips_are_refused_with_a_reason(scene, clip):
    """A colour strip and a movie under a speed effect cannot start a session."""
    se = scene.sequence_editor
    colour = se.strips.new_effect("colour", "COLOR", 3, frame_start=1, length=10)
    se.active_strip = colour
    with pytest.raises(RuntimeError, match="only movie and image strips"):
        bpy.ops.tam.session_new(backend="CLASSIC")
    movie = se.strips["clip"]
    se.strips.new_effect("speed", "SPEED", 4, frame_start=STRIP_START, input1=movie)
    se.active_strip = movie
    with pytest.raises(RuntimeError, match="speed"):
        bpy.ops.tam.session_new(backend="CLASSIC")


def test_box_segments_at_once_and_tracking_fills_every_frame(scene, clip):
    """box_add stores a mask for its frame through the worker; track covers the visible range."""
    c, _ = clip
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    frame = STRIP_START + 4
    x0, y0, x1, y1 = c.box(4, 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=frame, x0=x0 - 3, y0=y0 - 3, x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    with _open_session(scene) as s:
        rec = s.read_mask(4)
        assert rec is not None and iou(rec.mask(1), c.mask(4, 1)) > 0.8
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}
    st = scene.tam
    assert st.job == "" and st.job_progress == 100.0 and "tracked" in st.message
    with _open_session(scene) as s:
        assert set(range(TRIM, N - TRIM)) <= set(s.mask_frames())
        ious = [iou(s.object_mask(i, 1), c.mask(i, 1)) for i in range(TRIM, N - TRIM)]
    assert min(ious) > 0.7, ious


def test_written_mask_renders_like_the_session_mattes(scene, clip, tmp_path):
    """MASK + IMAGE_STRIP + COMPOSITOR: the Mask renders to the session matte (IoU >= 0.95 each frame)."""
    c, _ = clip
    _tracked_session(scene, c)
    assert bpy.ops.tam.mattes_write(targets={"MASK", "IMAGE_STRIP", "COMPOSITOR"}) == {"FINISHED"}
    st = scene.tam
    mask = bpy.data.masks[st.mask_name]
    assert [layer.name for layer in mask.layers] == ["ball"]
    first, last = st.scene_start, st.scene_start + st.length - 1

    # the compositor scene cuts the clip out with the mask: its alpha is the matte
    comp = bpy.data.scenes["clip Matte"]
    assert comp.compositing_node_group is not None and not comp.render.use_sequencer
    comp_imgs = _render_frames(comp, first, last, tmp_path / "comp")

    # render the Mask alone: a scene whose sequencer holds just a mask strip
    rs = bpy.data.scenes.new("mask render")
    rs.render.resolution_x, rs.render.resolution_y, rs.render.resolution_percentage = W, H, 100
    rs.view_settings.view_transform = "Standard"  # AgX would render white as grey
    rs.sequence_editor_create().strips.new_mask("m", mask, 1, first)
    mask_imgs = _render_frames(rs, first, last, tmp_path / "mask")
    ious, comp_ious = {}, {}
    with _open_session(scene) as s:
        for f in range(first, last + 1):
            matte = s.object_mask(st.mapping.scene_to_source(f), 1)
            # coverage 0.5 (sRGB 188 in the Standard view): the Mask is feathered where the alpha is soft
            ious[f] = iou(mask_imgs[f][..., 2] > 187, matte)
            # the compositor cuts out with the session's SOFT alpha: compare at coverage 0.5 with it
            comp_ious[f] = iou(comp_imgs[f][..., 3] > 127, s.object_alpha(st.mapping.scene_to_source(f), 1) > 0.5)
    print("mask render IoU per frame:", {f: round(v, 4) for f, v in ious.items()})
    print("compositor alpha IoU per frame:", {f: round(v, 4) for f, v in comp_ious.items()})
    assert min(ious.values()) >= 0.95, ious
    assert min(comp_ious.values()) >= 0.95, comp_ious  # the compositor's alpha is the (soft) matte

    # the matte image strip: one frame per visible source frame, aligned with the clip
    matte = scene.sequence_editor.strips["clip matte ball"]
    assert matte.type == "IMAGE" and len(matte.elements) == st.length
    assert (matte.frame_final_start, matte.frame_final_end) == (first, last + 1)
    assert matte.channel > scene.sequence_editor.strips["clip"].channel
    # EXR mattes replace the PNG strip
    st.matte_exr = True
    assert bpy.ops.tam.mattes_write(targets={"IMAGE_STRIP"}) == {"FINISHED"}
    mattes = [s for s in scene.sequence_editor.strips if s.name.startswith("clip matte")]
    assert len(mattes) == 1 and mattes[0].elements[0].filename.endswith(".exr")
    # soft outputs: the alpha as the sequencer's own values, the compositor on the alpha sequences
    assert mattes[0].colorspace_settings.name == scene.sequencer_colorspace_settings.name
    assert any(n.bl_idname == "CompositorNodeImage" for n in comp.compositing_node_group.nodes)
    st.matte_extra = {"RGBA", "PRORES"}
    assert bpy.ops.tam.mattes_write(targets={"IMAGE_STRIP"}) == {"FINISHED"}
    strips = scene.sequence_editor.strips
    assert strips["clip foreground ball"].alpha_mode == "PREMUL"
    movie = strips["clip prores ball"]
    assert movie.type == "MOVIE" and (movie.frame_final_start, movie.frame_final_end) == (first, last + 1)



def test_objects_remove_changes_only_the_dilated_masks(scene, clip):
    """The removal strip sits above the source and differs from it only inside the dilated masks."""
    from track_anything.tam_blender_addon.frames import open_source

    c, video = clip
    _tracked_session(scene, c)
    dilate = 4
    assert bpy.ops.tam.objects_remove(object_ids="1", dilate=dilate, feather=0) == {"FINISHED"}
    st = scene.tam
    strips = scene.sequence_editor.strips
    removed = [s for s in strips if s.name.startswith("clip without")]
    assert len(removed) == 1
    strip = removed[0]
    assert strip.channel > strips["clip"].channel
    assert (strip.frame_final_start, strip.frame_final_duration) == (st.scene_start, st.length)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    folder = Path(bpy.path.abspath(strip.directory))
    with open_source(video) as src, _open_session(scene) as s:
        for k, elem in enumerate(strip.elements):
            i = st.source_start + k
            out = cv2.cvtColor(cv2.imread(str(folder / elem.filename)), cv2.COLOR_BGR2RGB)
            orig = src.get(i)
            inside = cv2.dilate(s.object_mask(i, 1).astype(np.uint8), kernel) > 0
            assert np.array_equal(out[~inside], orig[~inside]), f"frame {i} changed outside the mask"
            assert np.abs(out[inside].astype(int) - orig[inside]).mean() > 5, f"frame {i} unchanged inside"
    # asking again (masks unchanged) reuses the finished frames and replaces the strip
    assert bpy.ops.tam.objects_remove(object_ids="1", dilate=dilate, feather=0) == {"FINISHED"}
    assert len([s for s in strips if s.name.startswith("clip without")]) == 1
    assert "(10 frames)" in st.message


def test_state_survives_save_and_reload(scene, clip, tmp_path):
    """scene.tam (session, objects, mapping) and the Mask with its animation are saved in the .blend."""
    c, _ = clip
    _tracked_session(scene, c)
    assert bpy.ops.tam.mattes_write(targets={"MASK"}) == {"FINISHED"}
    session_path, mask_name = scene.tam.session_path, scene.tam.mask_name
    blend = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    st = sc.tam
    assert st.session_path == session_path and st.strip_name == "clip"
    assert [(o.obj_id, o.name) for o in st.objects] == [(1, "ball")]
    assert (st.scene_start, st.source_start, st.length) == (STRIP_START + TRIM, TRIM, N - 2 * TRIM)
    mask = bpy.data.masks[mask_name]
    assert mask.animation_data is not None and mask.animation_data.action is not None
    # undo rewinds scene.tam but not the session folder: the handler lists its objects again
    st.objects.clear()
    _mod("operators.session_ops").resync_objects()
    assert [(o.obj_id, o.name) for o in st.objects] == [(1, "ball")]
    # a new session next to the saved .blend, not in the user folder
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    assert sc.tam.session_path.startswith("//shot_track_anything")
    assert Path(bpy.path.abspath(sc.tam.session_path)).parent == tmp_path / "shot_track_anything"


def test_preferences_status_and_offline_download_refusal(addon):
    """The status line says what works in words; downloads are refused while online access is off."""
    setup = _mod("operators.setup")
    runtime = _mod("operators.runtime")
    line = setup.status_line(runtime.settings(bpy.context))
    assert line.startswith("Ready: classic backend.")
    assert "checkpoints missing — click Download" in line and "XMem" in line
    kept = addon.backend
    addon.backend = "SAM2"  # the SAM 2.1 backend needs its own checkpoint, not XMem's
    try:
        line = setup.status_line(runtime.settings(bpy.context))
    finally:
        addon.backend = kept
    assert "SAM 2.1: SAM 2.1, E2FGVI-HQ checkpoints missing" in line and "XMem" not in line
    assert not bpy.app.online_access
    with pytest.raises(RuntimeError, match="Online access is off"):
        bpy.ops.tam.weights_download()


def test_weights_download_runs_the_cli_and_the_status_follows(addon, tmp_path):
    """With online access on, the download runs `tam weights download` in a child process."""
    setup = _mod("operators.setup")
    runtime = _mod("operators.runtime")
    handmade = tmp_path / "XMem.pth"
    handmade.write_bytes(b"not really a checkpoint, but XMem publishes no size or hash")
    kept_dir = addon.checkpoint_dir
    addon.checkpoint_dir = str(tmp_path / "weights")
    bpy.context.preferences.system.use_online_access = True
    try:
        assert bpy.app.online_access
        assert bpy.ops.tam.weights_download(names="xmem", url=handmade.as_uri()) == {"FINISHED"}
        task = setup.TASKS["weights"]
        assert task.result == "done", list(task.lines)
        assert (tmp_path / "weights" / "XMem.pth").is_file()
        line = setup.status_line(runtime.settings(bpy.context))
        assert "XMem" not in line and "SAM" in line
    finally:
        bpy.context.preferences.system.use_online_access = False
        addon.checkpoint_dir = kept_dir


def test_worker_env_create_builds_a_venv_without_blocking_on_timers(addon, tmp_path):
    """tam.worker_env_create runs `python -m venv` as a child process polled to completion."""
    where = tmp_path / "env"
    assert bpy.ops.tam.worker_env_create(location=str(where), requirements="", with_pip=False) == {"FINISHED"}
    task = _mod("operators.setup").TASKS["env"]
    assert task.result == "done", task.lines
    assert (where / "bin" / "python").exists()


def test_worker_requirements_match_pyproject():
    """The packages tam.worker_env_create installs are the engine's pinned dependencies."""
    import tomllib

    from track_anything.operators import setup

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert list(setup.WORKER_REQUIREMENTS) == deps


def test_track_without_blocking_is_pumped_and_cancel_keeps_finished_frames(scene, clip):
    """As in the UI: track returns at once, `pump` applies events; cancel stops between frames."""
    runtime = _mod("operators.runtime")
    c, _ = clip
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    x0, y0, x1, y1 = c.box(TRIM, 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=STRIP_START + TRIM, x0=x0 - 3, y0=y0 - 3,
                               x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    st = scene.tam

    def pump_until_idle(limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while runtime.pump() is not None:
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.02)

    runtime.RT.block_in_background = False
    try:
        assert bpy.ops.tam.track(direction="FORWARD") == {"FINISHED"}
        assert st.job == "Tracking" and runtime.busy()
        with pytest.raises(RuntimeError, match="running"):
            bpy.ops.tam.object_add(name="other")  # poll refuses edits while a job runs
        assert bpy.ops.tam.cancel() == {"FINISHED"}
        pump_until_idle()
        assert st.job == "" and "cancelled" in st.message
        with _open_session(scene) as s:
            assert len(s.mask_frames()) < N - TRIM  # stopped early; what was done is kept

        assert bpy.ops.tam.track(direction="FORWARD") == {"FINISHED"}
        pump_until_idle()
        assert st.job == "" and st.job_progress == 100.0 and st.message.startswith("tracked")
        assert st.job_total > 0 and st.job_done == st.job_total

        # loading another file stops the job, and nothing lands in the new file's scene
        assert bpy.ops.tam.track(direction="BACKWARD") == {"FINISHED"}
        bpy.ops.wm.read_homefile(use_empty=True)
        pump_until_idle()
        new = bpy.context.scene.tam
        assert new.job == "" and new.message == "" and not new.session_path
    finally:
        runtime.RT.block_in_background = True


def test_overlay_colours_visible_objects_bottom_up(addon):
    """The preview overlay's texture: object colours at the overlay alpha, rows flipped for GL."""
    overlay = _mod("ui.overlay")
    labels = np.zeros((4, 6), np.uint8)
    labels[0, :3] = 1  # top row, object 1
    labels[3, 3:] = 2  # bottom row, object 2 (hidden)
    rgba = overlay.overlay_rgba(labels, {1: (1.0, 0.5, 0.0)})
    assert rgba.shape == (4, 6, 4)
    assert np.allclose(rgba[3, 0], (1.0, 0.5, 0.0, overlay.ALPHA))  # GL row 3 = image top row
    assert rgba[0].sum() == 0  # object 2 is not drawn
    small = overlay.overlay_rgba(np.ones((100, 300), np.uint8), {1: (0, 1, 0)}, max_side=100)
    assert small.shape[:2] == (34, 100)


def test_mask_with_holes_and_topology_changes_renders_every_frame(addon, tmp_path):
    """Spans become layers switched by keyed hide_render; holes are cut; IoU >= 0.95 per frame."""
    from track_anything.tam_blender_addon import matte_shapes
    from track_anything.tam_blender_addon.session import Session, SourceInfo

    def matte(t: int) -> np.ndarray:  # ring with a hole; a second region from frame 5 on
        m = np.zeros((H, W), np.uint8)
        cv2.ellipse(m, (40 + 3 * t, 60), (30, 20), 5 * t, 0, 360, 1, -1)
        cv2.circle(m, (40 + 3 * t, 60), 8, 0, -1)
        if t >= 5:
            cv2.rectangle(m, (115, 10), (150, 35), 1, -1)
        return m.astype(bool)

    frames = 10
    info = SourceInfo(path=str(tmp_path / "none.mp4"), kind="video", width=W, height=H, fps=24.0, num_frames=frames)
    with Session.create(tmp_path / "s", info) as s:
        s.add_object("ring")
        for t in range(frames):
            s.write_mask(t, matte(t).astype(np.uint8), {1: 1.0})
        doc = matte_shapes.shapes_document(s)
    bpy.ops.wm.read_homefile(use_empty=True)
    zero = 20
    mask = _mod("operators.mattes").build_mask(doc, "rings", zero, (zero, zero + frames - 1))
    assert [layer.name for layer in mask.layers] == ["ring 001", "ring 002"]
    assert [len(layer.splines) for layer in mask.layers] == [2, 3]
    rs = bpy.context.scene
    rs.render.resolution_x, rs.render.resolution_y, rs.render.resolution_percentage = W, H, 100
    rs.view_settings.view_transform = "Standard"
    rs.sequence_editor_create().strips.new_mask("m", mask, 1, zero)
    images = _render_frames(rs, zero, zero + frames - 1, tmp_path / "r")
    ious = [iou(images[zero + t][..., 2] > 127, matte(t)) for t in range(frames)]
    print("multi-span mask render IoU per frame:", [round(v, 4) for v in ious])
    assert min(ious) >= 0.95, ious


def test_image_sequence_strip_gets_a_session_of_its_files(addon, clip, tmp_path):
    """An image strip: the session lists its files in order and the worker segments from them."""
    from track_anything.tam_blender_addon.synth import write_clip

    c, _ = clip
    paths = write_clip(c, tmp_path, video=False, images=True)
    files = sorted(paths["frames"].glob("*.png"))
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    se = sc.sequence_editor_create()
    strip = se.strips.new_image("frames", str(files[0]), 2, 3)
    for f in files[1:]:
        strip.elements.append(f.name)
    se.active_strip = strip
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    st = sc.tam
    assert (st.source_width, st.source_height, st.source_frames, st.scene_start) == (W, H, N, 3)
    with _open_session(sc) as s:
        assert s.source.kind == "images" and [Path(f).name for f in s.source.files] == [f.name for f in files]
    assert bpy.ops.tam.object_add() == {"FINISHED"}
    x0, y0, x1, y1 = c.box(6, 1)
    assert bpy.ops.tam.box_add(frame=3 + 6, x0=x0 - 3, y0=y0 - 3, x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    with _open_session(sc) as s:
        assert iou(s.object_mask(6, 1), c.mask(6, 1)) > 0.8


def test_objects_ranges_and_doubtful_frames(scene, clip):
    """object_remove drops an object; track honours frame_end; doubtful frames jump the playhead."""
    c, _ = clip
    runtime = _mod("operators.runtime")
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    assert bpy.ops.tam.object_add(name="spare") == {"FINISHED"}
    st = scene.tam
    assert [(o.obj_id, o.name) for o in st.objects] == [(1, "ball"), (2, "spare")]
    assert st.active.obj_id == 2
    assert bpy.ops.tam.object_remove() == {"FINISHED"}  # the active one
    assert [o.obj_id for o in st.objects] == [1]
    x0, y0, x1, y1 = c.box(3, 1)
    first = STRIP_START + 3
    assert bpy.ops.tam.box_add(object_id=1, frame=first, x0=x0 - 3, y0=y0 - 3, x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    assert bpy.ops.tam.track(direction="FORWARD", frame_start=first, frame_end=first + 4) == {"FINISHED"}
    with _open_session(scene) as s:
        assert s.mask_frames() == [3, 4, 5, 6, 7]
        assert [o.id for o in s.objects] == [1]

    # a frame the tracker was unsure about shows up in the list; jumping goes there
    from track_anything.tam_blender_addon.session import Session

    runtime.release_session()
    with Session.open(bpy.path.abspath(st.session_path)) as s:
        rec = s.read_mask(6)
        s.write_mask(6, rec.labels, {1: 0.2})
    _mod("operators.session_ops")._doubtful_frames(scene)
    assert [(d.frame, d.obj_id) for d in st.doubtful] == [(STRIP_START + 6, 1)]
    assert bpy.ops.tam.frame_jump(index=0) == {"FINISHED"}
    assert scene.frame_current == STRIP_START + 6
