"""An edited Mask spline goes back to the tracker as a keyframe.

``tam.keyframe_from_mask(object_id, frame)`` reads the object's Mask layer(s) shown on
that frame (every filled spline, holes by the layer's fill rule, feather ignored),
rasterises them at source resolution with exact cubic Bezier evaluation
(`tam_blender_addon.spline_raster`, numpy only) and sends the matte to the worker as a
mask prompt: the frame becomes a keyframe and Track redoes only the spans next to it.
The edited points are keyed on that frame, and the Mask's write record is updated so
that the next ``mattes_write`` keeps them exactly.

`edited_frames` tells which frames the artist changed since the add-on wrote them
(keyed point values that differ from what was written, or unkeyed changes on the
current frame), for the prompt Track shows.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..tam_blender_addon.errors import InputError
from ..tam_blender_addon.session import mask_to_runs
from ..tam_blender_addon.spline_raster import BezierSpline, points_digest, rasterize_layer, vector_handles
from . import runtime
from .mattes import _fcurve_collection, _frames_of, layer_path, mask_record, save_record
from .session_ops import _PromptOperator, follow_strip


def session_mask(state) -> bpy.types.Mask | None:
    """The Mask datablock the add-on wrote for this session (None if not written yet)."""
    return bpy.data.masks.get(state.mask_name) if state.mask_name else None


def _layers_on(rec: dict, obj: int, src: int) -> list[str]:
    """Names of the object's layers that show source frame `src`, per the write record."""
    return [name for name, info in rec.get("layers", {}).items()
            if info["obj"] == obj and src in set(_frames_of(info["frames"]))]


def _spline_arrays(spline) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left handles, points, right handles) of a spline as it is now, (N, 2) each, mask space."""
    n = len(spline.points)
    arrays = []
    for attr in ("handle_left", "co", "handle_right"):
        a = np.empty(2 * n, dtype=np.float32)
        spline.points.foreach_get(attr, a)
        arrays.append(a.reshape(n, 2).astype(np.float64))
    return arrays[0], arrays[1], arrays[2]


def half_feather_offset(spline, co: np.ndarray, rim: float = 0.0) -> np.ndarray:
    """Per point, the move from a feathered spline's point to its feather's middle (coverage 0.5), mask space.

    A feathered point (see `matte_shapes.feather_ring`) sits at the soft band's inner edge and
    feathers outwards by ``weight`` (mask units, clockwise splines): the matte's edge is half
    of that out, along the outward normal (the left of travel, y up), less `rim` (mask units)
    for a raster that grows every outline by Blender's hard rim (`rasterize_layer`).
    """
    weights = np.empty(len(co), dtype=np.float32)
    spline.points.foreach_get("weight", weights)
    if not weights.any() or len(co) < 3 or not spline.use_cyclic:
        return np.zeros_like(co)
    edge = np.roll(co, -1, axis=0) - co
    left = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-12)
    normal = left + np.roll(left, 1, axis=0)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    return normal * np.where(weights > 0, 0.5 * weights.astype(np.float64) - rim, 0.0)[:, None]


def read_splines(layer, longer: int = 0) -> list[BezierSpline]:
    """The layer's splines as the matte they draw: VECTOR handles computed the way Blender does, a
    feathered spline taken at its feather's middle (coverage 0.5) less half a pixel of the `longer`
    frame side (the rim `rasterize_layer` adds); `longer` 0: at the middle."""
    out = []
    for spline in layer.splines:
        left, co, right = _spline_arrays(spline)
        move = half_feather_offset(spline, co, 0.5 / longer if longer else 0.0)
        left, co, right = left + move, co + move, right + move
        vl, vr = vector_handles(co, spline.use_cyclic)
        for i, point in enumerate(spline.points):
            if point.handle_left_type == "VECTOR":
                left[i] = vl[i]
            if point.handle_right_type == "VECTOR":
                right[i] = vr[i]
        out.append(BezierSpline(left, co, right, cyclic=bool(spline.use_cyclic), fill=bool(spline.use_fill)))
    return out


def _live_values(layer) -> np.ndarray:
    """Every point position of the layer now, flat (x0, y0, x1, ...) over its splines."""
    parts = []
    for spline in layer.splines:
        a = np.empty(2 * len(spline.points), dtype=np.float32)
        spline.points.foreach_get("co", a)
        parts.append(a)
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def _keyed_values(layer, fcurves, frames: list[int]) -> dict[int, np.ndarray]:
    """Per scene frame, the layer's point positions its keys give (static values where unkeyed)."""
    lpath = layer_path(layer)
    static = _live_values(layer)
    table = np.repeat(static[None, :], len(frames), axis=0)  # (frames, values)
    want = np.asarray(frames, dtype=np.float64)
    col = 0
    for s_index, spline in enumerate(layer.splines):
        for i in range(len(spline.points)):
            for axis in (0, 1):
                fc = fcurves.find(f"{lpath}.splines[{s_index}].points[{i}].co", index=axis)
                if fc is not None and len(fc.keyframe_points):
                    co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
                    fc.keyframe_points.foreach_get("co", co)
                    kf, kv = co[0::2].astype(np.float64), co[1::2]
                    pos = np.clip(np.searchsorted(kf, want), 0, len(kf) - 1)
                    hit = np.abs(kf[pos] - want) < 1e-3
                    table[:, col] = np.where(hit, kv[pos], 0.0)
                    for t in np.flatnonzero(~hit):  # frames between keys (rare): what the curve gives
                        table[t, col] = fc.evaluate(frames[t])
                col += 1
    return {f: table[t] for t, f in enumerate(frames)}


class _NoCurves:
    """Stands for the F-curves of a Mask that has no animation (nothing keyed)."""

    def find(self, *_args, **_kwargs):
        return None


def _read_fcurves(mask):
    """The Mask's F-curves for reading, without creating or changing anything."""
    ad = mask.animation_data
    action = ad.action if ad is not None else None
    if action is None:
        return _NoCurves()
    if not (hasattr(action, "slots") and hasattr(action, "layers")):
        return action.fcurves
    if ad.action_slot is None or not len(action.layers) or not len(action.layers[0].strips):
        return _NoCurves()
    bag = action.layers[0].strips[0].channelbag(ad.action_slot)
    return bag.fcurves if bag is not None else _NoCurves()


def edited_frames(scene) -> list[tuple[int, int]]:
    """(object id, scene frame) of every frame whose spline the artist changed since it was written."""
    state = scene.tam
    mask = session_mask(state)
    rec = mask_record(mask)
    if rec is None:
        return []
    fcurves = _read_fcurves(mask)
    zero = int(rec.get("zero", 0))
    found: set[tuple[int, int]] = set()
    current = scene.frame_current
    for name, info in rec.get("layers", {}).items():
        layer = mask.layers.get(name)
        if layer is None:
            continue
        src_frames = _frames_of(info["frames"])
        written = info.get("points", {})
        keyed = _keyed_values(layer, fcurves, [zero + f for f in src_frames])
        for f in src_frames:
            digest = written.get(str(f))
            if digest is not None and points_digest(keyed[zero + f]) != digest:
                found.add((info["obj"], zero + f))
        if current - zero in src_frames:  # unkeyed changes on the frame shown now
            live = _live_values(layer)
            if live.shape == keyed[current].shape and np.abs(live - keyed[current]).max(initial=0.0) > 1e-5:
                found.add((info["obj"], current))
    return sorted(found)


def keyframe_from_mask(context, state, obj: int, src: int) -> str:
    """Make the object's Mask shape on source frame `src` its keyframe there; a short report."""
    scene = context.scene
    mask = session_mask(state)
    rec = mask_record(mask)
    if mask is None or rec is None:
        raise InputError("there is no Mask written by Track Anything yet: write the mattes as a Mask first")
    names = _layers_on(rec, obj, src)
    if not names:
        raise InputError(f"the Mask has no shape for object {obj} on frame {state.mapping.source_to_scene(src)}")
    frame = int(rec.get("zero", 0)) + src
    if scene.frame_current != frame:
        scene.frame_set(frame)
    w, h = state.source_width, state.source_height
    matte = np.zeros((h, w), dtype=bool)
    for name in names:
        layer = mask.layers[name]
        matte |= rasterize_layer(read_splines(layer, max(w, h)), w, h, fill_holes=bool(layer.use_fill_holes))
    if not matte.any():
        raise InputError(f"the edited shape of object {obj} on frame {frame} covers no pixel")
    # key the edited points on this frame, so they stay when the frame changes
    fcurves = _fcurve_collection(mask, fresh=False)
    for name in names:
        layer = mask.layers[name]
        lpath = layer_path(layer)
        values = _live_values(layer)
        col = 0
        for s_index, spline in enumerate(layer.splines):
            for i in range(len(spline.points)):
                for axis in (0, 1):
                    fc = fcurves.find(f"{lpath}.splines[{s_index}].points[{i}].co", index=axis)
                    if fc is not None:
                        fc.keyframe_points.insert(frame, float(values[col]), options={"REPLACE", "FAST"})
                    col += 1
        for fc in fcurves:
            if fc.data_path.startswith(lpath + ".splines"):
                fc.update()
        rec["layers"][name].setdefault("points", {})[str(src)] = points_digest(values)
    save_record(mask, rec)
    item = state.object_by_id(obj)
    name = item.name if item else str(obj)
    mask_name = mask.name

    def landed(scene, res: dict) -> None:
        """The worker stored the keyframe: remember the matte it made, so later writes know it."""
        written = mask_record(bpy.data.masks.get(mask_name))
        if written is not None:
            written.setdefault("digests", {}).setdefault(str(obj), {})[str(src)] = res["digest"]
            save_record(bpy.data.masks[mask_name], written)
        scene.tam.message = f"{name}: the edited shape is the keyframe on frame {frame} ({res['area']} px)"

    params = {"frame": src, "obj": obj, "runs": mask_to_runs(matte)}
    runtime.submit(context, state, "add_mask", params, on_result=landed)
    runtime.record_edit(state, f"use edited shape of {name}", [("add_mask", params)],
                        [("undo_prompt", {"frame": src, "obj": obj})], [(src, obj)])
    runtime.redraw()
    return f"{name}: the edited shape becomes the keyframe on frame {frame}"


class TAM_OT_keyframe_from_mask(_PromptOperator, bpy.types.Operator):
    """Use the object's edited Mask shape on this frame as a keyframe (Track then redoes the frames around it)"""

    bl_idname = "tam.keyframe_from_mask"
    bl_label = "Use Edited Shape"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context) -> bool:
        if not super().poll(context):
            return False
        if session_mask(context.scene.tam) is None:
            cls.poll_message_set("Write the mattes as a Mask first, then edit its splines")
            return False
        return True

    def run(self, context) -> set[str]:
        state, obj, src = self.target(context)
        state.message = keyframe_from_mask(context, state, obj, src)
        self.report({"INFO"}, state.message)
        return {"FINISHED"}


def use_edits_before_track(context) -> list[str]:
    """Turn every edited, not yet used frame into a keyframe (Track's prompt said yes); reports."""
    state = follow_strip(context.scene)
    reports = []
    current = context.scene.frame_current
    # the frame shown first: its unkeyed changes are lost once another frame is shown
    for obj, frame in sorted(edited_frames(context.scene), key=lambda e: (e[1] != current, e[1], e[0])):
        reports.append(keyframe_from_mask(context, state, obj, state.mapping.scene_to_source(frame)))
    if context.scene.frame_current != current:
        context.scene.frame_set(current)
    return reports


def draw_edit_buttons(layout, context) -> None:
    """The "Use edited shape" button, for whichever panel shows the Track controls."""
    state = context.scene.tam
    if not state.session_path or session_mask(state) is None:
        return
    row = layout.row(align=True)
    row.operator("tam.keyframe_from_mask", text="Use Edited Shape", icon="MOD_MASK")


CLASSES = (TAM_OT_keyframe_from_mask,)
