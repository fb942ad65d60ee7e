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
]


def _redraw_overlay(self, context) -> None:
    """Visibility or colour changed: redraw the sequencer so the overlay follows."""
    screen = getattr(context, "screen", None)
    for area in getattr(screen, "areas", []):
        if area.type in ("SEQUENCE_EDITOR", "CLIP_EDITOR"):
            area.tag_redraw()


class TAM_PG_object(bpy.types.PropertyGroup):
    """One tracked object: its session id, name, overlay colour and visibility."""

    obj_id: IntProperty(name="ID", min=0, max=255)
    # `name` is inherited from PropertyGroup (shown and renamed in the list)
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

    mask_name: StringProperty(name="Mask", description="The Mask datablock written from the session")
    remove_dilate: IntProperty(name="Dilate", default=8, min=0, max=64, subtype="PIXEL",
                               description="Grow the removed objects' masks by this many pixels")
    remove_feather: IntProperty(name="Feather", default=0, min=0, max=64, subtype="PIXEL",
                                description="Soften the seam of the filled area")
    matte_exr: BoolProperty(name="EXR mattes", default=False,
                            description="Write the matte image sequence as OpenEXR instead of PNG")

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

    def scene_to_source(self, frame: int) -> int:
        """Source frame index shown at scene frame `frame`."""
        return frame - self.scene_start + self.source_start

    def source_to_scene(self, index: int) -> int:
        """Scene frame that shows source frame `index`."""
        return index - self.source_start + self.scene_start


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
