"""Roto where compositors work (issue 13): Movie Clip Editor sessions and edited splines as keyframes.

Runs the installed extension in the real bpy 5.0.1 wheel with the classic backend
through the real worker (the fixtures of test_blender_extension.py: one extension
install and one synthetic clip per module). Masks are compared with what Blender itself
renders: a Mask strip in a scene of its own, and the compositor's alpha.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

import test_blender_extension as ext  # noqa: E402 - beside the tests: its fixtures install the extension
from bpy_render import render_frames  # noqa: E402 - beside the tests (conftest)

from track_anything.tam_blender_addon.matte_shapes import iou  # noqa: E402 - needs cv2
from track_anything.tam_blender_addon.spline_raster import rasterize_layer  # noqa: E402

# the extension install, the clip and the strip scene of test_blender_extension.py (same module scope)
addon, clip, scene = ext.addon, ext.clip, ext.scene
PKG, H, N, W = ext.PKG, ext.H, ext.N, ext.W
_open_session, _tracked_session = ext._open_session, ext._tracked_session

pytestmark = [pytest.mark.bpy, pytest.mark.slow]

CLIP_START, CLIP_OFFSET = 7, 1  # the clip starts at scene frame 7 and skips its first file frame


def _mod(name: str):
    return sys.modules[f"{PKG}.{name}"]


def _render_mask(mask, first: int, last: int, folder: Path) -> dict[int, np.ndarray]:
    """Blender's own rendering of `mask` at the source size: {scene frame: bool matte}."""
    rs = bpy.data.scenes.new("mask render")
    rs.render.resolution_x, rs.render.resolution_y, rs.render.resolution_percentage = W, H, 100
    rs.view_settings.view_transform = "Standard"  # AgX would render white as grey
    rs.sequence_editor_create().strips.new_mask("m", mask, 1, first).frame_final_duration = last - first + 1
    paths = render_frames(bpy, rs, range(first, last + 1), folder)
    # coverage 0.5 (sRGB 188 in the Standard view): the Mask is feathered where the alpha is soft
    return {f: cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[..., 2] > 187 for f, p in paths.items()}


def _clip_editor_area():
    """An area of the window turned into a Movie Clip Editor."""
    area = bpy.context.window.screen.areas[0]
    area.type = "CLIP_EDITOR"
    return area


def test_clip_editor_session_tracks_and_its_mask_renders_like_the_mattes(addon, clip, tmp_path):
    """session_new in the Clip Editor, box on the first frame, Track BOTH, mattes_write: IoU >= 0.95 per frame."""
    c, video = clip
    bpy.ops.wm.read_homefile(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y, sc.render.resolution_percentage = W, H, 100
    mc = bpy.data.movieclips.load(video, check_existing=False)
    mc.frame_start, mc.frame_offset = CLIP_START, CLIP_OFFSET
    area = _clip_editor_area()
    area.spaces.active.clip = mc
    with bpy.context.temp_override(area=area, space_data=area.spaces.active):
        assert bpy.ops.tam.session_new(backend="CLASSIC") == {"FINISHED"}
    st = sc.tam
    assert st.clip_name == mc.name
    # scene frame f shows source frame f - frame_start + frame_offset, from source frame 1 on
    assert (st.scene_start, st.source_start, st.length) == (CLIP_START, CLIP_OFFSET, N - CLIP_OFFSET)
    with _open_session(sc) as s:
        assert s.source.kind == "video" and (s.source.width, s.source.height, s.source.num_frames) == (W, H, N)
        assert s.mapping.scene_to_source(CLIP_START + 3) == 3 + CLIP_OFFSET
    assert bpy.ops.tam.object_add(name="ball") == {"FINISHED"}
    first = st.scene_start
    x0, y0, x1, y1 = c.box(st.mapping.scene_to_source(first), 1)
    assert bpy.ops.tam.box_add(object_id=1, frame=first, x0=x0 - 3, y0=y0 - 3, x1=x1 + 3, y1=y1 + 3) == {"FINISHED"}
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}
    assert bpy.ops.tam.mattes_write(targets={"MASK", "COMPOSITOR", "IMAGE_STRIP"}) == {"FINISHED"}
    mask = bpy.data.masks[st.mask_name]
    assert area.spaces.active.mask == mask  # Mask mode in the editor shows (and edits) it
    overlay = _mod("ui.overlay")  # the overlay draws the frames the session maps, through its mapping
    shown = {}
    for f in (st.scene_start - 1, st.scene_start + 2):
        sc.frame_current = f
        shown[f] = overlay.shown_frame(area.spaces.active, sc, st)
    assert shown[st.scene_start - 1] is None and shown[st.scene_start + 2][0] == CLIP_OFFSET + 2
    last = st.scene_start + st.length - 1
    matte = sc.sequence_editor.strips[f"{mc.name} matte ball"]  # aligned with the clip's frames
    assert (matte.frame_final_start, matte.frame_final_end) == (first, last + 1)

    comp = bpy.data.scenes[f"{mc.name} Matte"]
    movie_nodes = [n for n in comp.compositing_node_group.nodes if n.bl_idname == "CompositorNodeMovieClip"]
    assert [n.clip for n in movie_nodes] == [mc]  # the compositor reads the clip itself
    comp_paths = render_frames(bpy, comp, range(first, last + 1), tmp_path / "comp")
    rendered = _render_mask(mask, first, last, tmp_path / "mask")
    ious, comp_ious, rgb_err = {}, {}, {}
    with _open_session(sc) as s:
        for f in range(first, last + 1):
            src = st.mapping.scene_to_source(f)
            matte = s.object_mask(src, 1)
            ious[f] = iou(rendered[f], matte)
            img = cv2.imread(str(comp_paths[f]), cv2.IMREAD_UNCHANGED)
            comp_ious[f] = iou(img[..., 3] > 127, s.object_alpha(src, 1) > 0.5)  # cut out with the soft alpha
            # the compositor shows the frame the session calls `src`, not a neighbour (one frame apart)
            inside = (img[..., 3] == 255) & matte
            rgb = img[..., 2::-1][inside].astype(int)
            rgb_err[f] = [float(np.abs(rgb - c.get(i)[inside]).mean()) for i in (src - 1, src, src + 1) if 0 <= i < N]
    print("clip mask render IoU per frame:", {f: round(v, 4) for f, v in ious.items()})
    print("clip compositor alpha IoU per frame:", {f: round(v, 4) for f, v in comp_ious.items()})
    assert min(ious.values()) >= 0.95, ious
    assert min(comp_ious.values()) >= 0.95, comp_ious
    print("compositor colour error vs source frames (src-1, src, src+1):", rgb_err)
    assert all(min(e) == e[1 if len(e) == 3 or f > first else 0] for f, e in rgb_err.items()), rgb_err


def test_clip_clicks_map_through_the_display_aspect():
    """Clip Editor view coordinates stretch by the display aspect; clicks map back to clip pixels."""
    from track_anything.ui.click_map import placement_from_clip, source_to_view, view_to_source

    class Clip:
        display_aspect = (2.0, 1.0)  # pixels shown twice as wide as tall

    p = placement_from_clip(Clip(), 160, 120)
    assert source_to_view(p, 0, 120) == pytest.approx((0.0, 0.0))
    assert source_to_view(p, 160, 0) == pytest.approx((320.0, 120.0))
    assert view_to_source(p, 100.0, 30.0) == pytest.approx((50.0, 90.0))
    Clip.display_aspect = (1.0, 1.5)
    p = placement_from_clip(Clip(), 160, 120)
    assert source_to_view(p, 160, 0) == pytest.approx((160.0, 180.0))


def _scale_layer_points(layer, factor: float) -> None:
    """What an artist's Scale does to a spline: every point and handle about the points' centroid."""
    cos = [np.array(p.co) for s in layer.splines for p in s.points]
    centre = np.mean(cos, axis=0)
    for s in layer.splines:
        for p in s.points:
            for attr in ("co", "handle_left", "handle_right"):
                setattr(p, attr, tuple(centre + (np.array(getattr(p, attr)) - centre) * factor))


def test_edited_spline_becomes_a_keyframe_and_the_next_write_keeps_it(scene, clip, tmp_path):
    """Scale object 1's spline on frame F by 1.3, keyframe_from_mask, Track, mattes_write (issue 13 item 2)."""
    c, _ = clip
    _tracked_session(scene, c)
    assert bpy.ops.tam.mattes_write(targets={"MASK"}) == {"FINISHED"}
    st = scene.tam
    mask = bpy.data.masks[st.mask_name]
    mattes = _mod("operators.mattes")
    edits = _mod("operators.mask_edits")
    first, last = st.scene_start, st.scene_start + st.length - 1
    frame = first + 6
    src = st.mapping.scene_to_source(frame)
    with _open_session(scene) as s:
        before = {f: s.read_mask(f).labels.copy() for f in s.mask_frames()}
    assert edits.edited_frames(scene) == []

    scene.frame_set(frame)
    rec = mattes.mask_record(mask)
    (lname,) = [n for n, i in rec["layers"].items() if i["obj"] == 1]
    layer = mask.layers[lname]
    _scale_layer_points(layer, 1.3)
    edited_pts = np.array([p.co for s in layer.splines for p in s.points])
    assert edits.edited_frames(scene) == [(1, frame)]  # Track would ask about this frame
    lpath = mattes.layer_path(layer)
    for s_index, spline in enumerate(layer.splines):  # the artist keys the edit (I over the points)
        for i in range(len(spline.points)):
            assert mask.keyframe_insert(f"{lpath}.splines[{s_index}].points[{i}].co", frame=frame)
    scene.frame_set(frame + 1)
    scene.frame_set(frame)
    assert np.allclose([p.co for s in layer.splines for p in s.points], edited_pts, atol=1e-6)
    assert edits.edited_frames(scene) == [(1, frame)]  # a keyed edit is noticed as well
    ours = rasterize_layer(edits.read_splines(layer, max(W, H)), W, H)
    blender = _render_mask(mask, frame, frame, tmp_path / "edited")[frame]  # Blender's own raster
    assert iou(ours, blender) >= 0.97, iou(ours, blender)

    assert bpy.ops.tam.keyframe_from_mask(object_id=1, frame=frame) == {"FINISHED"}
    assert edits.edited_frames(scene) == []  # used: no more prompt for it
    assert bpy.ops.tam.track(direction="BOTH") == {"FINISHED"}
    with _open_session(scene) as s:
        assert s.keyframes() == [st.mapping.scene_to_source(first + 2), src]
        retracked = {int(e["frame"]) for e in s.read_log() if e.get("event") == "track_frame"
                     and e["t"] >= max(x["t"] for x in s.read_log() if x.get("event") == "track_start")}
        after = {f: s.read_mask(f).labels.copy() for f in s.mask_frames()}
        session_f = s.object_mask(src, 1)
    print("edited frame IoU (session vs Blender's render of the edited spline):", round(iou(session_f, blender), 4))
    assert iou(session_f, blender) >= 0.97
    assert retracked and src not in retracked
    untouched = set(before) - retracked - {src}
    assert untouched and all(np.array_equal(after[f], before[f]) for f in untouched)

    # writing again: the edited frame keeps the artist's points, re-tracked frames get new keys
    other = st.mapping.source_to_scene(min(untouched))
    scene.frame_set(other)
    kept_layer_pts = {n: [tuple(p.co) for s in mask.layers[n].splines for p in s.points] for n in rec["layers"]}
    assert bpy.ops.tam.mattes_write(targets={"MASK"}) == {"FINISHED"}
    rec2 = mattes.mask_record(mask)
    scene.frame_set(frame)
    shown = [n for n, i in rec2["layers"].items() if src in mattes._frames_of(i["frames"])]
    assert shown == [lname]
    now = np.array([p.co for s in mask.layers[lname].splines for p in s.points])
    assert np.allclose(now, edited_pts, atol=1e-6)
    new_layers = set(rec2["layers"]) - set(rec["layers"])
    covered = {f for n in new_layers for f in mattes._frames_of(rec2["layers"][n]["frames"])}
    changed = {f for f in retracked if not np.array_equal(after[f] == 1, before[f] == 1)}
    assert changed and covered == changed  # only re-tracked frames whose matte changed were written anew
    scene.frame_set(other)
    assert [tuple(p.co) for s in mask.layers[lname].splines for p in s.points] == kept_layer_pts[lname]
    rendered = _render_mask(mask, first, last, tmp_path / "after")
    with _open_session(scene) as s:
        ious = {f: iou(rendered[f], s.object_mask(st.mapping.scene_to_source(f), 1)) for f in range(first, last + 1)}
    print("mask render IoU per frame after the edit:", {f: round(v, 4) for f, v in ious.items()})
    assert min(ious.values()) >= 0.95, ious


def test_image_sequence_clip_gets_a_session_of_its_numbered_files(addon, tmp_path):
    """An image-sequence clip: the session's files start at the clip's first file, in number order."""
    folder = tmp_path / "seq"
    folder.mkdir()
    for n in (3, 4, 5, 6, 7, 10):  # a gap in the numbers: files in order, not counted by number
        cv2.imwrite(str(folder / f"shot_{n:04d}.png"), np.full((24, 32, 3), 10 * n, np.uint8))
    cv2.imwrite(str(folder / "shot_0001.png"), np.zeros((24, 32, 3), np.uint8))  # before the clip's first file
    (folder / "notes_0003.txt").write_text("not a frame")
    bpy.ops.wm.read_homefile(use_empty=True)
    mc = bpy.data.movieclips.load(str(folder / "shot_0003.png"), check_existing=False)
    assert mc.source == "SEQUENCE"
    assert bpy.ops.tam.session_new(backend="CLASSIC", clip=mc.name) == {"FINISHED"}
    st = bpy.context.scene.tam
    with _open_session(bpy.context.scene) as s:
        names = [Path(f).name for f in s.source.files]
        assert s.source.kind == "images" and (s.source.width, s.source.height) == (32, 24)
    assert names[:5] == [f"shot_{n:04d}.png" for n in (3, 4, 5, 6, 7)]
    assert st.clip_name == mc.name and st.source_frames == len(names)
    with pytest.raises(RuntimeError, match="no movie clip called"):
        bpy.ops.tam.session_new(backend="CLASSIC", clip="nope")


def test_track_asked_to_use_edits_makes_the_edited_frame_a_keyframe(scene, clip):
    """Track with use_edits (what its prompt sets): an edited, unkeyed frame becomes a mask keyframe first."""
    c, _ = clip
    _tracked_session(scene, c)
    assert bpy.ops.tam.mattes_write(targets={"MASK"}) == {"FINISHED"}
    st = scene.tam
    mask = bpy.data.masks[st.mask_name]
    frame = st.scene_start + 5
    scene.frame_set(frame)
    rec = _mod("operators.mattes").mask_record(mask)
    (lname,) = [n for n, i in rec["layers"].items() if i["obj"] == 1]
    _scale_layer_points(mask.layers[lname], 0.8)
    assert _mod("operators.mask_edits").edited_frames(scene) == [(1, frame)]
    assert bpy.ops.tam.track(direction="BOTH", use_edits=True) == {"FINISHED"}
    with _open_session(scene) as s:
        kinds = [type(p).__name__ for p in s.prompts(frame=st.mapping.scene_to_source(frame))]
    assert kinds == ["MaskPrompt"]
    assert _mod("operators.mask_edits").edited_frames(scene) == []


def test_dropping_a_mask_layer_takes_its_f_curves_and_leaves_the_others(addon):
    """What update_mask does to a layer whose object left the session or whose frames all changed."""
    mattes = _mod("operators.mattes")
    mask = bpy.data.masks.new("drop test")
    keep, gone = mask.layers.new(name="keep"), mask.layers.new(name="keep 2")  # a name that prefixes the other
    fcurves = mattes._fcurve_collection(mask)
    for layer in (keep, gone):
        fcurves.new(f"{mattes.layer_path(layer)}.hide_render")
    mattes._drop_layer(mask, fcurves, gone)
    mattes._drop_layer(mask, fcurves, None)  # a layer already gone: nothing to do
    assert [layer.name for layer in mask.layers] == ["keep"]
    assert [fc.data_path for fc in fcurves] == [f"{mattes.layer_path(keep)}.hide_render"]
    bpy.data.masks.remove(mask)
