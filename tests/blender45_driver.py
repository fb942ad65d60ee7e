"""The extension's core flow inside the bpy 4.5 LTS wheel; run by tests/test_blender_45.py.

Runs under .venv-bpy45's python (bpy 4.5 + numpy only, no OpenCV or torch); the worker
runs under the main venv's python, set in the add-on's preferences. Argument: a JSON
file with the clip, the repository root, the worker python and a scratch folder.
Prints one line ``TAM45 {json summary}``; exits non-zero when a step failed.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

PKG = "bl_ext.user_default.track_anything"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _read_png(bpy, path: Path) -> np.ndarray:
    """A rendered PNG as a float (H, W, 4) array, top row first (Blender stores bottom-up)."""
    img = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = img.size
        px = np.empty(w * h * 4, np.float32)
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    return px.reshape(h, w, 4)[::-1]


def _render_frames(bpy, sc, first: int, last: int, folder: Path) -> dict[int, np.ndarray]:
    """Render frames first..last of `sc`; {frame: RGBA uint8 image}."""
    from bpy_render import render_frames  # beside this script, so on sys.path

    paths = render_frames(bpy, sc, range(first, last + 1), folder)
    return {f: _read_png(bpy, p) for f, p in paths.items()}


def _strips(scene):
    """Top-level strips: 4.5 has `strips` (and the older `sequences`)."""
    se = scene.sequence_editor
    return se.strips if hasattr(se, "strips") else se.sequences


def _mask_ious(bpy, scene, session_cls, folder: Path) -> dict[int, float]:
    """Render the scene's written Mask alone, frame by frame; IoU against the session's matte."""
    st = scene.tam
    mask = bpy.data.masks[st.mask_name]
    first, last = st.scene_start, st.scene_start + st.length - 1
    rs = bpy.data.scenes.new("mask render")
    rs.render.resolution_x, rs.render.resolution_y = st.source_width, st.source_height
    rs.render.resolution_percentage = 100
    rs.view_settings.view_transform = "Standard"  # AgX renders white as grey
    rs.sequence_editor_create()
    _strips(rs).new_mask("m", mask, 1, first)
    images = _render_frames(bpy, rs, first, last, folder)
    bpy.data.scenes.remove(rs)
    with session_cls.open(bpy.path.abspath(st.session_path), writable=False) as s:
        # coverage 0.5 (0.735 in the Standard view's sRGB): the Mask is feathered where the alpha is soft
        return {f: _iou(images[f][..., 0] > 0.735, s.object_mask(st.mapping.scene_to_source(f), 1))
                for f in range(first, last + 1)}


def _install(bpy, cfg: dict, tmp: Path):
    """Build the zip with the 4.5 wheel's own extension tool, install and enable it; its Session class."""
    tools = list((Path(bpy.utils.resource_path("LOCAL")) / "scripts").glob("addons_core/bl_pkg/cli/blender_ext.py"))
    assert tools, "the bpy 4.5 wheel ships no blender_ext.py"
    out = tmp / "ext"
    out.mkdir()
    for args in (["validate", cfg["root"]], ["build", "--source-dir", cfg["root"], "--output-dir", str(out)]):
        res = subprocess.run([sys.executable, str(tools[0]), *args], capture_output=True, text=True)
        assert res.returncode == 0, f"blender_ext {args[0]}: {res.stdout}{res.stderr}"
    (zip_path,) = out.glob("track_anything-*.zip")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    assert bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True) == {"FINISHED"}
    assert PKG in bpy.context.preferences.addons, "the extension was not enabled on install"
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.worker_python = cfg["worker_python"]
    prefs.checkpoint_dir = str(tmp / "weights")
    return importlib.import_module(f"{PKG}.tam_blender_addon.session").Session  # numpy + stdlib


def _strip_scene(bpy, cfg: dict):
    """A scene with the clip as a trimmed movie strip (the active one)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    w, h, n, start, trim = cfg["width"], cfg["height"], cfg["frames"], cfg["strip_start"], cfg["trim"]
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = w, h, 100
    sc.sequence_editor_create()
    strip = _strips(sc).new_movie("clip", cfg["clip"], 2, start)
    strip.frame_offset_start = trim
    strip.frame_offset_end = trim
    sc.sequence_editor.active_strip = strip
    sc.frame_start, sc.frame_end = start + trim, start + n - 1 - trim
    return sc


def _click_and_track(bpy, sc, cfg: dict, session_cls, summary: dict, tmp: Path) -> None:
    """Session -> object -> a click at the object's centre on the first visible frame -> track."""
    n, start, trim = cfg["frames"], cfg["strip_start"], cfg["trim"]
    assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    st = sc.tam
    summary["mapping"] = [st.scene_start, st.source_start, st.length, st.source_width, st.source_height]
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    cx, cy = cfg["click"]
    assert bpy.ops.tam.prompt_add(object_id=1, frame=start + trim, x=cx, y=cy) == {"FINISHED"}
    t1 = time.monotonic()
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}
    summary["track_s"] = round(time.monotonic() - t1, 2)
    summary["track_message"] = st.message
    with session_cls.open(bpy.path.abspath(st.session_path), writable=False) as s:
        summary["mask_frames"] = s.mask_frames()
        np.save(tmp / "session_mattes.npy", np.stack([s.object_mask(i, 1) for i in range(trim, n - trim)]))


def _write_mattes(bpy, sc, session_cls, summary: dict, tmp: Path) -> None:
    """Mattes as a Mask, a matte image strip and a compositor scene, each rendered against the session."""
    st = sc.tam
    assert bpy.ops.tam.mattes_write(targets={"MASK", "IMAGE_STRIP", "COMPOSITOR"}) == {"FINISHED"}
    summary["mask_layers"] = [layer.name for layer in bpy.data.masks[st.mask_name].layers]
    summary["mask_iou"] = _mask_ious(bpy, sc, session_cls, tmp / "mask")
    first, last = st.scene_start, st.scene_start + st.length - 1
    comp = bpy.data.scenes[f"{st.strip_name} Matte"]
    assert comp.use_nodes and not comp.render.use_sequencer
    comp_imgs = _render_frames(bpy, comp, first, last, tmp / "comp")
    with session_cls.open(bpy.path.abspath(st.session_path), writable=False) as s:
        summary["compositor_iou"] = {f: _iou(comp_imgs[f][..., 3] > 0.5, s.object_mask(st.mapping.scene_to_source(f), 1))
                                     for f in range(first, last + 1)}
    mattes = [s for s in _strips(sc) if s.name.startswith("clip matte")]
    summary["matte_strips"] = [[s.type, len(s.elements), s.frame_final_start, s.frame_final_end] for s in mattes]


def _remove_object(bpy, sc, summary: dict) -> None:
    """Object removal: an image strip of inpainted frames above the source."""
    assert bpy.ops.tam.objects_remove(object_ids="1", dilate=4, feather=0) == {"FINISHED"}
    removed = [s for s in _strips(sc) if s.name.startswith("clip without")]
    summary["removal_strips"] = [[s.type, len(s.elements), s.channel, s.frame_final_start] for s in removed]
    folder = Path(bpy.path.abspath(removed[0].directory)) if removed else None
    summary["removal_files_exist"] = bool(removed) and all((folder / e.filename).is_file() for e in removed[0].elements)


def _save_and_reload(bpy, sc, session_cls, summary: dict, tmp: Path) -> None:
    """Save, reload: the state and the Mask's animation come back and still render the mattes."""
    st = sc.tam
    blend = tmp / "shot.blend"
    session_path, mask_name = st.session_path, st.mask_name
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    sc = bpy.context.scene
    st = sc.tam
    summary["reloaded"] = {
        "session_path_kept": st.session_path == session_path,
        "objects": [[o.obj_id, o.name] for o in st.objects],
        "mapping": [st.scene_start, st.source_start, st.length],
        "mask_animated": bool(bpy.data.masks[mask_name].animation_data
                              and bpy.data.masks[mask_name].animation_data.action),
    }
    summary["reloaded_mask_iou"] = _mask_ious(bpy, sc, session_cls, tmp / "mask_reloaded")


def _disable(addon_utils, bpy, summary: dict) -> None:
    """Disable: everything registered goes, and the worker with it."""
    runtime = sys.modules.get(f"{PKG}.operators.runtime")
    client = runtime.RT.client if runtime else None
    pid = client.pid if client else None
    addon_utils.disable(PKG, default_set=True)
    summary["unregistered"] = not hasattr(bpy.types.Scene, "tam") and not hasattr(bpy.types, "TAM_OT_track")
    alive = pid is not None
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, TypeError):
            alive = False
            break
        time.sleep(0.1)
    summary["worker_pid"] = pid
    summary["worker_stopped"] = pid is not None and not alive


def run(cfg: dict, summary: dict) -> None:
    """The core flow: install, session, click, track, mattes, renders, removal, reload, disable."""
    import bpy

    addon_utils = importlib.import_module("addon_utils")  # on sys.path once bpy is imported

    summary["bpy_version"] = ".".join(map(str, bpy.app.version))
    tmp = Path(cfg["tmp"])
    t0 = time.monotonic()
    session_cls = _install(bpy, cfg, tmp)
    summary["install_s"] = round(time.monotonic() - t0, 2)
    sc = _strip_scene(bpy, cfg)
    _click_and_track(bpy, sc, cfg, session_cls, summary, tmp)
    _write_mattes(bpy, sc, session_cls, summary, tmp)
    _remove_object(bpy, sc, summary)
    _save_and_reload(bpy, sc, session_cls, summary, tmp)
    _disable(addon_utils, bpy, summary)
    summary["total_s"] = round(time.monotonic() - t0, 2)


def main() -> int:
    """Run the flow, print the summary line; non-zero exit on any failure."""
    cfg = json.loads(Path(sys.argv[1]).read_text())
    summary: dict = {"errors": []}
    try:
        run(cfg, summary)
    except Exception:  # noqa: BLE001 - reported to the pytest side in the summary
        summary["errors"].append(traceback.format_exc())
    print("TAM45 " + json.dumps(summary), flush=True)
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
