"""The click tool: click or drag on the sequencer preview (or the Clip Editor) to prompt the active object.

Left click = positive point, Shift+click or right click = negative point, left drag =
box, Esc or Enter = done. Mouse positions go through `click_map.region_to_source`, the
plain-math chain that is tested without a display.
"""

from __future__ import annotations

import bpy

from ..operators.session_ops import find_strip
from .click_map import Placement, inside_source, placement_from_clip, placement_from_strip, region_to_source

DRAG_PX = 6  # a press and release further apart than this is a box


def _prompt(op, **props) -> None:
    """Run a prompt operator as its own undo step (it returns at once: the mask arrives
    later); its error is already reported, so the tool stays active."""
    try:
        op("EXEC_DEFAULT", True, **props)
    except RuntimeError:
        pass


def preview_region_at(context, mouse_x: int, mouse_y: int):
    """(area, region) of the sequencer preview or the Clip Editor's main region under the window position."""
    for area in context.screen.areas:
        if area.type not in ("SEQUENCE_EDITOR", "CLIP_EDITOR"):
            continue
        wanted = "PREVIEW" if area.type == "SEQUENCE_EDITOR" else "WINDOW"
        for region in area.regions:
            if region.type == wanted and (
                region.x <= mouse_x < region.x + region.width and region.y <= mouse_y < region.y + region.height
            ):
                return area, region
    return None, None


def view_rect(region) -> tuple[float, float, float, float]:
    """The view coordinates at the region's corners (View2D ``cur``)."""
    v2d = region.view2d
    x0, y0 = v2d.region_to_view(0, 0)
    x1, y1 = v2d.region_to_view(region.width, region.height)
    return x0, y0, x1, y1


class TAM_OT_click_tool(bpy.types.Operator):
    """Click objects in the preview: left = include, Shift/right = exclude, drag = box, Esc = done"""

    bl_idname = "tam.click_tool"
    bl_label = "Click Objects"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context) -> bool:
        state = getattr(context.scene, "tam", None)
        if state is None or not state.session_path or state.active is None:
            cls.poll_message_set("Make a session and add an object first")
            return False
        return not bpy.app.background

    def _placement(self, context, area=None) -> Placement | None:
        state = context.scene.tam
        if state.clip_name or (area is not None and area.type == "CLIP_EDITOR"):
            clip = bpy.data.movieclips.get(state.clip_name)
            shown = area.spaces.active.clip if area is not None and area.type == "CLIP_EDITOR" else clip
            if clip is None or shown != clip:
                return None  # clicks count only on the session's clip, in its own editor
            return placement_from_clip(clip, state.source_width, state.source_height)
        strip = find_strip(context.scene, state.strip_name)
        if strip is None:
            return None
        return placement_from_strip(strip, context.scene, state.source_width, state.source_height)

    def _to_source(self, context, event) -> tuple[float, float, bool] | None:
        """(x, y, inside the image) in source pixels under the mouse; None off the preview."""
        area, region = preview_region_at(context, event.mouse_x, event.mouse_y)
        place = self._placement(context, area)
        if region is None or place is None:
            return None
        rx, ry = event.mouse_x - region.x, event.mouse_y - region.y
        x, y = region_to_source(rx, ry, region.width, region.height, view_rect(region), place)
        return x, y, inside_source(place, x, y)

    def _clamped(self, context, point: tuple[float, float, bool]) -> tuple[float, float]:
        """A box corner dragged past the image edge, pulled back onto the image."""
        state = context.scene.tam
        return (min(max(point[0], 0.0), state.source_width - 1.0),
                min(max(point[1], 0.0), state.source_height - 1.0))

    def invoke(self, context, event) -> set[str]:
        self._press = None
        context.window_manager.modal_handler_add(self)
        context.workspace.status_text_set("Track Anything: click = include, Shift/right click = exclude, "
                                          "drag = box, Esc = done")
        return {"RUNNING_MODAL"}

    def _done(self, context) -> set[str]:
        context.workspace.status_text_set(None)
        return {"FINISHED"}

    def modal(self, context, event) -> set[str]:
        if event.type in {"ESC", "RET"} and event.value == "PRESS":
            return self._done(context)
        if event.type not in {"LEFTMOUSE", "RIGHTMOUSE"}:
            return {"PASS_THROUGH"}
        area, region = preview_region_at(context, event.mouse_x, event.mouse_y)
        if region is None:
            return {"PASS_THROUGH"}  # clicks elsewhere (the sidebar, the timeline) work as usual
        point = self._to_source(context, event)
        state = context.scene.tam
        obj = state.active.obj_id if state.active else 0
        if event.type == "RIGHTMOUSE" and event.value == "PRESS":
            if point is not None and point[2]:
                _prompt(bpy.ops.tam.prompt_add, object_id=obj, x=point[0], y=point[1], positive=False)
            return {"RUNNING_MODAL"}
        if event.value == "PRESS":
            self._press = (event.mouse_x, event.mouse_y, point)
            return {"RUNNING_MODAL"}
        if event.value == "RELEASE" and self._press is not None:
            px, py, start = self._press
            self._press = None
            dragged = abs(event.mouse_x - px) > DRAG_PX or abs(event.mouse_y - py) > DRAG_PX
            if dragged and start is not None and point is not None:
                (x0, y0), (x1, y1) = self._clamped(context, start), self._clamped(context, point)
                _prompt(bpy.ops.tam.box_add, object_id=obj, x0=x0, y0=y0, x1=x1, y1=y1)
            elif point is not None and point[2]:
                _prompt(bpy.ops.tam.prompt_add, object_id=obj, x=point[0], y=point[1], positive=not event.shift)
            area.tag_redraw()
        return {"RUNNING_MODAL"}


CLASSES = (TAM_OT_click_tool,)
