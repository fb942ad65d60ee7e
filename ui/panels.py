"""The sequencer sidebar panel: session, objects, tracking progress, doubtful frames, outputs."""

from __future__ import annotations

import bpy

from ..operators import runtime, setup
from ..operators.mask_edits import draw_edit_buttons
from ..tam_blender_addon.progress import format_eta


class TAM_UL_objects(bpy.types.UIList):
    """Objects: colour, name (rename in place), visibility of the overlay."""

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


class TAM_PT_main(bpy.types.Panel):
    """Track Anything in the sequencer sidebar."""

    bl_idname = "SEQUENCER_PT_track_anything"
    bl_label = "Track Anything"
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Track Anything"

    def draw(self, context) -> None:
        layout = self.layout
        state = context.scene.tam
        if not state.session_path:
            layout.label(text=setup.status_line(runtime.settings(context)), icon="INFO")
            layout.label(text="Select a movie or image strip, then:")
            row = layout.row(align=True)
            row.operator("tam.session_new", text="New Session (Neural)").backend = "NEURAL"
            row.operator("tam.session_new", text="Classic").backend = "CLASSIC"
            return
        box = layout.box()
        box.label(text=f"{state.strip_name}: {state.source_width}x{state.source_height}, "
                       f"frames {state.scene_start}-{state.scene_start + state.length - 1}", icon="SEQUENCE")
        box.label(text=f"Backend: {state.backend.title()}")
        row = box.row(align=True)
        row.operator("tam.session_new", text="New Session", icon="FILE_NEW")

        layout.label(text="Objects")
        row = layout.row()
        row.template_list("TAM_UL_objects", "", state, "objects", state, "active_object", rows=3)
        col = row.column(align=True)
        col.operator("tam.object_add", text="", icon="ADD")
        col.operator("tam.object_remove", text="", icon="REMOVE")
        row = layout.row(align=True)
        row.operator("tam.click_tool", text="Click Objects", icon="RESTRICT_SELECT_OFF")
        row.operator("tam.prompts_clear", text="", icon="TRASH")

        layout.label(text="Track")
        row = layout.row(align=True)
        row.operator("tam.track", text="Backward", icon="TRIA_LEFT").direction = "BACKWARD"
        row.operator("tam.track", text="Both").direction = "BOTH"
        row.operator("tam.track", text="Forward", icon="TRIA_RIGHT").direction = "FORWARD"
        draw_edit_buttons(layout, context)
        if state.job:
            col = layout.column(align=True)
            if hasattr(col, "progress"):
                col.progress(factor=state.job_progress / 100.0, type="BAR", text=progress_text(state))
            else:
                col.label(text=progress_text(state))
            col.operator("tam.cancel", icon="CANCEL")
        if state.message:
            layout.label(text=state.message, icon="INFO")

        if len(state.doubtful):
            layout.label(text=f"Doubtful frames ({len(state.doubtful)})")
            layout.template_list("TAM_UL_doubtful", "", state, "doubtful", state, "active_doubtful", rows=3)

        layout.label(text="Output")
        row = layout.row(align=True)
        row.operator("tam.mattes_write", text="Mask").targets = {"MASK"}
        row.operator("tam.mattes_write", text="Image Strip").targets = {"IMAGE_STRIP"}
        row.operator("tam.mattes_write", text="Compositor").targets = {"COMPOSITOR"}
        layout.prop(state, "matte_exr")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.prop(state, "remove_dilate")
        row.prop(state, "remove_feather")
        col.operator("tam.objects_remove", text="Remove Visible Objects", icon="BRUSH_DATA")
        if runtime.RT.last_error:
            layout.label(text=runtime.RT.last_error, icon="ERROR")


CLASSES = (TAM_UL_objects, TAM_UL_doubtful, TAM_PT_main)
