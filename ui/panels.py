"""The sidebar panels, as Blender's own editors make them: a parent panel and small sub-panels
(Session, Objects, Keyframes, Track, Output), each declared with ``bl_parent_id`` and hiding
itself through its own ``poll``. `panel_classes` builds the set for one editor (space type).
"""

from __future__ import annotations

import bpy

from ..operators import runtime, setup
from ..operators.mask_edits import draw_edit_buttons
from ..tam_blender_addon.progress import format_eta

MAX_KEYFRAME_ROWS = 40  # the keyframe list is a summary; more rows would bury the panel


class TAM_UL_objects(bpy.types.UIList):
    """Objects: colour, name (rename in place: the session follows), visibility of the overlay."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        row = layout.row(align=True)
        sub = row.row()
        sub.ui_units_x = 1.2
        sub.prop(item, "color", text="")
        row.prop(item, "name", text="", emboss=False)
        row.label(text=f"#{item.obj_id}")
        row.prop(item, "visible", text="", emboss=False, icon="HIDE_OFF" if item.visible else "HIDE_ON")


class TAM_UL_doubtful(bpy.types.UIList):
    """Frames where the tracker was unsure: frame, object, confidence."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        obj = data.object_by_id(item.obj_id)
        row = layout.row(align=True)
        row.label(text=f"Frame {item.frame}", icon="ERROR")
        row.label(text=obj.name if obj else f"#{item.obj_id}")
        row.label(text=f"{item.confidence:.0%}")
        op = row.operator("tam.frame_jump", text="", icon="PLAY")
        op.index = index


def progress_text(state) -> str:
    """'Tracking 120/480 frames, 14.2 fps, 0:25 left' from the scene state."""
    eta = None if state.job_eta < 0 else state.job_eta
    return (f"{state.job} {state.job_done}/{state.job_total} frames, "
            f"{state.job_fps:.1f} fps, {format_eta(eta)} left")


def tracker_settings_text(settings: dict) -> str:
    """The session's tracker settings in a line ('480 px, memory every 5, 10 frames, half precision')."""
    if not settings:
        return "engine defaults"
    res = int(settings.get("max_resolution", 0) or 0)
    parts = [f"{res} px" if res else "full resolution"]
    if "mem_every" in settings:
        parts.append(f"memory every {settings['mem_every']}")
    if "max_memory_frames" in settings:
        parts.append(f"{settings['max_memory_frames']} frames")
    if settings.get("half_precision"):
        parts.append("half precision")
    return ", ".join(parts)


def _has_session(context) -> bool:
    state = getattr(context.scene, "tam", None)
    return state is not None and bool(state.session_path)


class _Main:
    """Parent panel: how to start when there is no session; the running state when there is."""

    bl_label = "Track Anything"
    bl_region_type = "UI"
    bl_category = "Track Anything"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        if not state.session_path:
            layout.label(text=setup.status_line(runtime.settings(context)), icon="INFO")
            layout.label(text="Select a movie or image strip (or open a clip here), then:")
            row = layout.row(align=True)
            row.operator("tam.session_new", text="New Session (Neural)").backend = "NEURAL"
            row.operator("tam.session_new", text="SAM 2.1").backend = "SAM2"
            row.operator("tam.session_new", text="Classic").backend = "CLASSIC"
            return
        runtime.warm_up(context, state)
        status = runtime.worker_status()
        if status:
            layout.label(text=status, icon="ERROR" if "failed" in status or "stopped" in status else "TIME")
        preview = runtime.preview_text()
        if preview:
            layout.label(text=preview, icon="TIME")
        if state.job:
            col = layout.column(align=True)
            if hasattr(col, "progress"):
                col.progress(factor=state.job_progress / 100.0, type="BAR", text=progress_text(state))
            else:
                col.label(text=progress_text(state))
            col.operator("tam.cancel", icon="CANCEL")
        if state.message:
            layout.label(text=state.message, icon="INFO")
        if runtime.RT.last_error and runtime.RT.last_error != state.message:
            layout.label(text=runtime.RT.last_error, icon="ERROR")


class _Child:
    """A sub-panel: shown only while the scene has a session."""

    bl_region_type = "UI"
    bl_category = "Track Anything"

    @classmethod
    def poll(cls, context) -> bool:
        return _has_session(context)


class _Session(_Child):
    bl_label = "Session"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        col = layout.column(align=True)
        col.label(text=f"{state.strip_name}: {state.source_width}x{state.source_height}", icon="SEQUENCE")
        col.label(text=f"Frames {state.scene_start}-{state.scene_start + state.length - 1}, "
                       f"backend {state.backend.title()}")
        ready = {"ready": "running", "": "not started"}.get(runtime.RT.worker_state, runtime.RT.worker_state)
        col.label(text=f"Worker: {ready}")
        layout.operator("tam.session_new", text="New Session", icon="FILE_NEW")


class _Objects(_Child):
    bl_label = "Objects"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        row = layout.row()
        row.template_list("TAM_UL_objects", "", state, "objects", state, "active_object", rows=3)
        col = row.column(align=True)
        col.operator("tam.object_add", text="", icon="ADD")
        col.operator("tam.object_remove", text="", icon="REMOVE")
        row = layout.row(align=True)
        row.operator("tam.click_tool", text="Click Objects", icon="RESTRICT_SELECT_OFF")
        row.operator("tam.prompts_clear", text="", icon="TRASH")
        col = layout.column(heading="Overlay")
        col.prop(state, "overlay_opacity")
        row = col.row(align=True)
        row.prop(state, "overlay_outline")
        row.prop(state, "overlay_all")


class _Keyframes(_Child):
    bl_label = "Keyframes"

    @classmethod
    def poll(cls, context) -> bool:
        return _has_session(context) and context.scene.tam.active is not None

    def draw(self, context) -> None:
        from ..operators.session_ops import keyframe_rows

        layout = self.layout
        state = context.scene.tam
        item = state.active
        view = runtime.session_view(state)
        rows = keyframe_rows(view, item.obj_id) if view is not None else []
        if not rows:
            layout.label(text=f"No keyframes of {item.name} yet: click on it in the preview")
            return
        col = layout.column(align=True)
        for src, kind, count in rows[:MAX_KEYFRAME_ROWS]:
            frame = state.mapping.source_to_scene(src)
            row = col.row(align=True)
            here = frame == context.scene.frame_current
            jump = row.operator("tam.keyframe_jump", text=f"Frame {frame}", icon="KEYFRAME_HLT" if here else "KEYFRAME",
                                emboss=here)
            jump.frame, jump.object_id = frame, item.obj_id
            row.label(text=kind if kind != "clicks" else f"{count} clicks")
            delete = row.operator("tam.keyframe_delete", text="", icon="X")
            delete.frame, delete.object_id = frame, item.obj_id
        if len(rows) > MAX_KEYFRAME_ROWS:
            col.label(text=f"... and {len(rows) - MAX_KEYFRAME_ROWS} more")


class _Track(_Child):
    bl_label = "Track"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        row = layout.row(align=True)
        row.operator("tam.track", text="Backward", icon="TRIA_LEFT").direction = "BACKWARD"
        row.operator("tam.track", text="Both").direction = "BOTH"
        row.operator("tam.track", text="Forward", icon="TRIA_RIGHT").direction = "FORWARD"
        draw_edit_buttons(layout, context)
        view = runtime.session_view(state)
        if view is not None:
            col = layout.column(align=True)
            col.label(text=f"Session tracker: {tracker_settings_text(view.settings)}")
            prefs = runtime.settings(context)
            now = {"max_resolution": prefs.max_resolution, "mem_every": prefs.mem_every,
                   "max_memory_frames": prefs.max_memory_frames, "half_precision": prefs.half_precision}
            if view.settings and any(view.settings.get(k) != v for k, v in now.items()):
                col.label(text="Preferences differ: they apply to new sessions", icon="INFO")
        if len(state.doubtful):
            layout.label(text=f"Doubtful frames ({len(state.doubtful)})")
            layout.template_list("TAM_UL_doubtful", "", state, "doubtful", state, "active_doubtful", rows=3)
        layout.operator("tam.refine", text="Refine Doubtful Frames", icon="SHADERFX")


class _Output(_Child):
    bl_label = "Output"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        row = layout.row(align=True)
        row.operator("tam.mattes_write", text="Mask").targets = {"MASK"}
        row.operator("tam.mattes_write", text="Image Strip").targets = {"IMAGE_STRIP"}
        row.operator("tam.mattes_write", text="Compositor").targets = {"COMPOSITOR"}
        row = layout.row(align=True)
        row.prop(state, "matte_exr")
        row.prop(state, "matte_extra")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(state, "remove_dilate")
        row.prop(state, "remove_feather")
        col.operator("tam.objects_remove", text="Remove Visible Objects", icon="BRUSH_DATA")


SUB_PANELS = (("session", _Session), ("objects", _Objects), ("keyframes", _Keyframes), ("track", _Track),
              ("output", _Output))


def panel_classes(space_type: str, prefix: str) -> tuple[type, ...]:
    """The parent panel ``<PREFIX>_PT_track_anything`` and its sub-panels for one editor."""
    parent = f"{prefix}_PT_track_anything"
    out: list[type] = [type(f"TAM_PT_{prefix.lower()}_main", (_Main, bpy.types.Panel),
                            {"bl_idname": parent, "bl_space_type": space_type})]
    for name, base in SUB_PANELS:
        out.append(type(f"TAM_PT_{prefix.lower()}_{name}", (base, bpy.types.Panel),
                        {"bl_idname": f"{parent}_{name}", "bl_space_type": space_type, "bl_parent_id": parent}))
    return tuple(out)


# the same panels in the sequencer and in the Movie Clip Editor (where compositors work)
CLASSES = (TAM_UL_objects, TAM_UL_doubtful, *panel_classes("SEQUENCE_EDITOR", "SEQUENCER"),
           *panel_classes("CLIP_EDITOR", "CLIP"))
