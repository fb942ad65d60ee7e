"""The Track Anything sidebar in the Movie Clip Editor: the sequencer's panel, in the editor compositors use."""

from __future__ import annotations

import bpy

from . import panels


class TAM_PT_clip(bpy.types.Panel):
    """Track Anything in the Movie Clip Editor's sidebar (same controls as in the sequencer)."""

    bl_idname = "CLIP_PT_track_anything"
    bl_label = "Track Anything"
    bl_space_type = "CLIP_EDITOR"
    bl_region_type = "UI"
    bl_category = "Track Anything"

    def draw(self, context) -> None:
        panels.TAM_PT_main.draw(self, context)


CLASSES = (TAM_PT_clip,)
