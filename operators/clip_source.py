"""Sessions on a movie clip (Movie Clip Editor) as well as on a sequencer strip.

A movie clip (``bpy.data.movieclips``: a movie file or an image sequence) shows source
frame ``f - clip.frame_start + clip.frame_offset`` at scene frame f (checked by
rendering a clip through the compositor's Movie Clip node); an image sequence's source
frames are its numbered files in order from the clip's first file. The session stores
the same SourceInfo / FrameMapping as for a strip, so every operator works unchanged;
``scene.tam.clip_name`` marks a clip session, and the mapping follows the clip when
its start frame or offset change.
"""

from __future__ import annotations

import os
import re

import bpy

from ..tam_blender_addon.errors import InputError


def clip_kind(clip) -> str:
    """'video' or 'images' for a clip a session can track; InputError saying why not otherwise."""
    if clip is None:
        raise InputError("no movie clip: open one in the Movie Clip Editor or name it with clip=")
    if clip.source == "MOVIE":
        return "video"
    if clip.source == "SEQUENCE":
        return "images"
    raise InputError(f"clip {clip.name!r} is neither a movie nor an image sequence")


def sequence_files(first: str, count: int) -> list[str]:
    """The numbered files of an image sequence, in frame order, from `first` on (at most `count`)."""
    folder, name = os.path.split(first)
    m = re.match(r"^(.*?)(\d+)(\.[^.]+)$", name)
    if not m:
        return [first]
    head, digits, tail = m.groups()
    start = int(digits)
    pattern = re.compile(rf"^{re.escape(head)}(\d+){re.escape(tail)}$")
    numbered = []
    for entry in os.listdir(folder or "."):
        hit = pattern.match(entry)
        if hit and int(hit.group(1)) >= start:
            numbered.append((int(hit.group(1)), os.path.join(folder, entry)))
    return [p for _, p in sorted(numbered)[:count]]


def clip_mapping(clip, num_frames: int) -> dict:
    """FrameMapping fields of a clip: scene frame f shows source f - frame_start + frame_offset."""
    offset = int(clip.frame_offset)
    source_start = max(offset, 0)
    return {
        "scene_start": int(clip.frame_start) - offset + source_start,
        "source_start": source_start,
        "length": max(num_frames - source_start, 1),
    }


def clip_source(clip, scene) -> tuple[dict, dict, list[str]]:
    """(SourceInfo fields, FrameMapping fields, warnings) of a movie clip."""
    kind = clip_kind(clip)
    path = bpy.path.abspath(clip.filepath, library=clip.library)
    if not os.path.exists(path):
        raise InputError(f"the clip's file is missing: {path}")
    width, height = (int(v) for v in clip.size)
    if width <= 0 or height <= 0:
        raise InputError(f"cannot read the frame size of clip {clip.name!r}")
    warnings = []
    scene_fps = scene.render.fps / scene.render.fps_base
    if kind == "video":
        files = None
        fps = float(clip.fps or scene_fps)
        num = int(clip.frame_duration)
        if abs(fps - scene_fps) > 0.01:
            warnings.append(
                f"the clip runs at {fps:g} fps but the scene at {scene_fps:g} fps: frames are matched one to one"
            )
    else:
        files = sequence_files(path, int(clip.frame_duration))
        fps = scene_fps
        num = len(files)
    aspect = tuple(float(a) for a in clip.display_aspect)
    if abs(aspect[0] - aspect[1]) > 1e-6:
        warnings.append(f"the clip is shown with display aspect {aspect[0]:g}:{aspect[1]:g}; "
                        "the session works in its stored pixels")
    source = {"path": path, "kind": kind, "width": width, "height": height, "fps": fps,
              "num_frames": num, "files": files}
    return source, clip_mapping(clip, num), warnings


def context_clip(context):
    """The clip of the Movie Clip Editor the operator runs in (None elsewhere)."""
    space = getattr(context, "space_data", None)
    if space is not None and space.type == "CLIP_EDITOR":
        return space.clip
    return None


def session_clip(state):
    """The movie clip a clip session tracks (None for strip sessions or when it was deleted)."""
    return bpy.data.movieclips.get(state.clip_name) if state.clip_name else None


def follow_clip(state) -> None:
    """Update the scene state's mapping if the clip's start frame or offset changed since."""
    clip = session_clip(state)
    if clip is None:
        return
    m = clip_mapping(clip, state.source_frames)
    if (state.scene_start, state.source_start, state.length) != (m["scene_start"], m["source_start"], m["length"]):
        state.scene_start, state.source_start, state.length = m["scene_start"], m["source_start"], m["length"]


def show_in_clip_editors(mask, clip=None) -> int:
    """Assign `mask` to the Movie Clip Editors (those showing `clip`, if given), so Mask mode edits it."""
    count = 0
    for screen in bpy.data.screens:
        for area in screen.areas:
            if area.type != "CLIP_EDITOR":
                continue
            for space in area.spaces:
                if space.type == "CLIP_EDITOR" and (clip is None or space.clip in (None, clip)):
                    if clip is not None and space.clip is None:
                        space.clip = clip
                    space.mask = mask
                    count += 1
    return count
