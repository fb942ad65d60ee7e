"""Scene state of the add-on (``scene.tam``): session, objects, job progress, doubtful frames.

Everything the panel shows lives here, so it is saved with the .blend and survives a
reload; the session directory on disk stays the source of truth for masks and prompts.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

# "//" (relative to the .blend) is allowed in path properties that say so (4.5+; older ones just allow it)
BLEND_RELATIVE = {"PATH_SUPPORTS_BLEND_RELATIVE"} if bpy.app.version >= (4, 5, 0) else set()

BACKEND_ITEMS = [
    ("NEURAL", "Neural", "SAM clicks, XMem tracking, E2FGVI-HQ removal (needs the checkpoints)"),
    ("CLASSIC", "Classic", "Weight-free OpenCV: GrabCut clicks, optical-flow tracking, flow inpainting"),
    ("SAM2", "SAM 2.1", "SAM 2.1 clicks and tracking in one model, E2FGVI-HQ removal (needs the checkpoints)"),
]


def _redraw_overlay(self, context) -> None:
    """Visibility or colour changed: redraw the sequencer so the overlay follows."""
    screen = getattr(context, "screen", None)
    for area in getattr(screen, "areas", []):
        if area.type in ("SEQUENCE_EDITOR", "CLIP_EDITOR"):
            area.tag_redraw()


SYNCING = [False]  # True while the add-on itself fills the object list (not an edit by the user)


def _renamed(self, context) -> None:
    """The editor renamed an object in the list: the session (Mask layers, matte strips) follows."""
    if SYNCING[0]:
        return
    from . import session_ops

    session_ops.rename_object(self.id_data, self)


class TAM_PG_object(bpy.types.PropertyGroup):
    """One tracked object: its session id, name, overlay colour and visibility."""

    obj_id: IntProperty(name="ID", min=0, max=255)
    name: StringProperty(name="Name", description="Object name (renaming it renames it in the session)",
                         update=_renamed)
    session_name: StringProperty(name="Session name", description="The name the session has for it")
    color: FloatVectorProperty(
        name="Colour", subtype="COLOR", size=3, min=0.0, max=1.0, default=(1.0, 0.3, 0.2), update=_redraw_overlay
    )
    visible: BoolProperty(name="Visible", default=True, update=_redraw_overlay)


class TAM_PG_doubtful(bpy.types.PropertyGroup):
    """A frame where the tracker was unsure of an object: worth checking and correcting."""

    frame: IntProperty(name="Frame", description="Scene frame")
    obj_id: IntProperty(name="Object")
    confidence: FloatProperty(name="Confidence", min=0.0, max=1.0)


class TAM_PG_state(bpy.types.PropertyGroup):
    """Per-scene add-on state (``scene.tam``)."""

    session_path: StringProperty(name="Session", subtype="DIR_PATH", options=BLEND_RELATIVE,
                                 description="Session folder on disk")
    strip_name: StringProperty(name="Strip", description="The strip the session tracks")
    clip_name: StringProperty(name="Movie Clip", description="The movie clip the session tracks ('' for a strip)")
    backend: EnumProperty(name="Backend", items=BACKEND_ITEMS, default="CLASSIC")
    source_width: IntProperty(name="Width", min=0)
    source_height: IntProperty(name="Height", min=0)
    source_frames: IntProperty(name="Source frames", min=0)
    # scene <-> source mapping, as when the session was made: scene frame f shows
    # source frame f - scene_start + source_start, for f in [scene_start, scene_start + length)
    scene_start: IntProperty(name="Scene start")
    source_start: IntProperty(name="Source start")
    length: IntProperty(name="Length", min=0)

    objects: CollectionProperty(type=TAM_PG_object)
    active_object: IntProperty(name="Active object", default=0)

    job: StringProperty(name="Job", description="The running job ('' when idle)")
    job_stage: StringProperty(name="Stage")
    job_done: IntProperty(name="Done", min=0)
    job_total: IntProperty(name="Total", min=0)
    job_fps: FloatProperty(name="Frames per second", min=0.0)
    job_eta: FloatProperty(name="Time left", default=-1.0, description="Seconds; negative when unknown")
    job_progress: FloatProperty(name="Progress", subtype="PERCENTAGE", min=0.0, max=100.0, precision=0)
    message: StringProperty(name="Message", description="Last result or error, in words")

    doubtful: CollectionProperty(type=TAM_PG_doubtful)
    active_doubtful: IntProperty(name="Active doubtful frame", default=0)

    edit_serial: IntProperty(name="Edits", min=0, description="Session edits made so far (undo follows it)")

    overlay_opacity: FloatProperty(name="Opacity", default=0.45, min=0.0, max=1.0, subtype="FACTOR",
                                   update=_redraw_overlay, description="How strongly masks tint the preview")
    overlay_outline: BoolProperty(name="Outline Only", default=False, update=_redraw_overlay,
                                  description="Draw only the masks' edges")
    overlay_all: BoolProperty(name="All Objects", default=True, update=_redraw_overlay,
                              description="Show every visible object's mask (off: only the active object's)")

    mask_name: StringProperty(name="Mask", description="The Mask datablock written from the session")
    remove_dilate: IntProperty(name="Dilate", default=8, min=0, max=64, subtype="PIXEL",
                               description="Grow the removed objects' masks by this many pixels")
    remove_feather: IntProperty(name="Feather", default=0, min=0, max=64, subtype="PIXEL",
                                description="Soften the seam of the filled area")
    matte_exr: BoolProperty(name="EXR mattes", default=False,
                            description="Write the soft matte image sequence as float OpenEXR instead of 16-bit PNG")
    matte_extra: EnumProperty(name="Also", options={"ENUM_FLAG"}, default=set(), items=[
        ("RGBA", "Foreground", "Also add the premultiplied RGBA foreground (background spill removed) as strips"),
        ("PRORES", "ProRes 4444", "Also add a ProRes 4444 movie with alpha per object as movie strips"),
    ])

    @property
    def active(self) -> TAM_PG_object | None:
        """The selected object in the list, if any."""
        if 0 <= self.active_object < len(self.objects):
            return self.objects[self.active_object]
        return None

    def object_by_id(self, obj_id: int) -> TAM_PG_object | None:
        """The list entry of session object `obj_id`, if present."""
        for item in self.objects:
            if item.obj_id == obj_id:
                return item
        return None

    @property
    def mapping(self):
        """The scene <-> source frame mapping (`session.FrameMapping`) the strip shows now."""
        from ..tam_blender_addon.session import FrameMapping

        return FrameMapping(self.scene_start, self.source_start, self.length)

    def overlay_colors(self) -> dict[int, tuple[float, float, float]]:
        """{object id: colour} of the objects the overlay shows (visible; only the active one
        unless "All Objects" is on)."""
        active = self.active
        return {o.obj_id: tuple(o.color) for o in self.objects
                if o.visible and (self.overlay_all or o == active)}


CLASSES = (TAM_PG_object, TAM_PG_doubtful, TAM_PG_state)


def register() -> None:
    """Register the property groups and attach ``scene.tam``."""
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.tam = PointerProperty(type=TAM_PG_state)


def unregister() -> None:
    """Detach ``scene.tam`` and unregister the property groups."""
    del bpy.types.Scene.tam
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
