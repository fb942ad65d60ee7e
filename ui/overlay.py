"""Masks in object colours and the clicks, drawn over the sequencer preview and the Clip Editor (gpu module).

The draw handler is added on register but never in background mode; shaders, textures
and batches are created lazily on the first draw (the gpu module cannot make them
headless). Masks are read from the session folder (read-only) and cached per frame.
"""

from __future__ import annotations

import bpy
import numpy as np

from ..operators.clip_source import clip_mapping
from ..operators.session_ops import find_strip, strip_mapping
from ..tam_blender_addon.session import FrameMapping, Session
from .click_map import placement_from_clip, placement_from_strip, source_to_view

MAX_TEXTURE_SIDE = 640  # the overlay is a preview: masks are shown at most this large
ALPHA = 0.45

_handle = None
_clip_handle: list = [None]  # the Movie Clip Editor's main region draws the overlay too
_cache: dict = {"key": None, "texture": None}
_sessions: dict = {}


def _session(path: str):
    """A read-only session handle per folder, kept between draws (it follows the writer)."""
    s = _sessions.get(path)
    if s is None:
        s = Session.open(path, writable=False)
        _sessions[path] = s
    return s


def overlay_rgba(labels: np.ndarray, colors: dict[int, tuple[float, float, float]],
                 max_side: int = MAX_TEXTURE_SIDE, alpha: float = ALPHA, outline: bool = False) -> np.ndarray:
    """Float RGBA (h, w, 4), rows bottom-up, of the visible objects' masks in their colours
    (with `outline`, only the pixels on each mask's edge)."""
    step = max(1, int(np.ceil(max(labels.shape) / max_side)))
    lab = labels[::step, ::step]
    rgba = np.zeros(lab.shape + (4,), np.float32)
    for obj, color in colors.items():
        m = lab == obj
        if outline:
            inner = m.copy()
            inner[1:, :] &= m[:-1, :]
            inner[:-1, :] &= m[1:, :]
            inner[:, 1:] &= m[:, :-1]
            inner[:, :-1] &= m[:, 1:]
            m &= ~inner
        rgba[m, :3] = color
        rgba[m, 3] = alpha
    return np.ascontiguousarray(rgba[::-1])


def _texture(state, path: str, src: int):
    """GPU texture of the masks on source frame `src` (cached; None if nothing to show)."""
    import gpu

    session = _session(path)
    try:
        stamp = session.mask_path(src).stat().st_mtime_ns
    except OSError:
        return None
    colors = state.overlay_colors()
    look = (round(state.overlay_opacity, 3), state.overlay_outline)
    key = (path, src, stamp, tuple(sorted(colors.items())), look)
    if _cache["key"] == key:
        return _cache["texture"]
    rec = session.read_mask(src)
    texture = None
    if rec is not None and colors:
        rgba = overlay_rgba(rec.labels, colors, alpha=look[0], outline=look[1])
        h, w = rgba.shape[:2]
        buf = gpu.types.Buffer("FLOAT", w * h * 4, rgba.ravel())
        texture = gpu.types.GPUTexture((w, h), format="RGBA16F", data=buf)
    _cache["key"], _cache["texture"] = key, texture
    return texture


def shown_frame(space, scene, state):
    """(source frame, Placement) of the session's picture in the editor being drawn, or None.

    The mapping is the clip's or strip's as it is now (it follows a moved clip or strip;
    a draw callback may not write it back to ``scene.tam``).
    """
    frame = scene.frame_current
    if getattr(space, "type", "") == "CLIP_EDITOR":
        clip = bpy.data.movieclips.get(state.clip_name) if state.clip_name else None
        if clip is None or space.clip != clip:
            return None
        mapping = FrameMapping.from_dict(clip_mapping(clip, state.source_frames))
        if not mapping.contains_scene(frame, state.source_frames):
            return None
        return mapping.scene_to_source(frame), placement_from_clip(clip, state.source_width, state.source_height)
    if state.clip_name:
        return None
    strip = find_strip(scene, state.strip_name)
    mapping = None if strip is None else strip_mapping(strip)
    if mapping is None or not mapping.contains_scene(frame):
        return None
    return mapping.scene_to_source(frame), placement_from_strip(strip, scene, state.source_width, state.source_height)


def draw() -> None:
    """Draw handler (POST_VIEW of the sequencer preview): mask texture, then the clicks."""
    context = bpy.context
    scene = context.scene
    state = getattr(scene, "tam", None)
    if state is None or not state.session_path or not state.objects:
        return
    shown = shown_frame(context.space_data, scene, state)
    if shown is None:
        return
    src, place = shown
    import gpu
    from gpu_extras.batch import batch_for_shader

    path = bpy.path.abspath(state.session_path)
    try:
        texture = _texture(state, path, src)
    except Exception as exc:  # noqa: BLE001 - a damaged mask must not break drawing
        print(f"Track Anything overlay: {exc}")
        return
    gpu.state.blend_set("ALPHA")
    if texture is not None:
        w, h = state.source_width, state.source_height
        corners = [source_to_view(place, x, y) for x, y in ((0, h), (w, h), (w, 0), (0, 0))]
        shader = gpu.shader.from_builtin("IMAGE")
        batch = batch_for_shader(shader, "TRI_FAN", {"pos": corners, "texCoord": ((0, 0), (1, 0), (1, 1), (0, 1))})
        shader.bind()
        shader.uniform_sampler("image", texture)
        batch.draw(shader)
    session = _session(path)
    visible = set(state.overlay_colors())
    pos, neg, boxes = [], [], []
    for p in session.prompts(frame=src):
        if p.obj not in visible:
            continue
        if hasattr(p, "positive"):
            (pos if p.positive else neg).append(source_to_view(place, p.x, p.y))
        elif hasattr(p, "x0"):  # a box (a mask prompt shows as the mask itself)
            boxes.append([source_to_view(place, x, y) for x, y in
                          ((p.x0, p.y0), (p.x1, p.y0), (p.x1, p.y1), (p.x0, p.y1))])
    shader = gpu.shader.from_builtin("UNIFORM_COLOR")
    try:  # round points that honour the point size on every GPU backend (4.0+)
        point_shader = gpu.shader.from_builtin("POINT_UNIFORM_COLOR")
    except (ValueError, TypeError):
        point_shader = shader
    gpu.state.point_size_set(9.0)
    for points, color in ((pos, (0.2, 1.0, 0.3, 1.0)), (neg, (1.0, 0.25, 0.2, 1.0))):
        if points:
            batch = batch_for_shader(point_shader, "POINTS", {"pos": points})
            point_shader.bind()
            point_shader.uniform_float("color", color)
            batch.draw(point_shader)
    for box in boxes:
        batch = batch_for_shader(shader, "LINE_LOOP", {"pos": box})
        shader.bind()
        shader.uniform_float("color", (1.0, 0.9, 0.2, 1.0))
        batch.draw(shader)
    gpu.state.point_size_set(1.0)
    gpu.state.blend_set("NONE")


def register() -> None:
    """Add the draw handler (not in background mode: nothing draws there)."""
    global _handle
    if bpy.app.background or _handle is not None:
        return
    _handle = bpy.types.SpaceSequenceEditor.draw_handler_add(draw, (), "PREVIEW", "POST_VIEW")
    _clip_handle[0] = bpy.types.SpaceClipEditor.draw_handler_add(draw, (), "WINDOW", "POST_VIEW")


def unregister() -> None:
    """Remove the draw handler and drop cached textures and session handles."""
    global _handle
    if _handle is not None:
        bpy.types.SpaceSequenceEditor.draw_handler_remove(_handle, "PREVIEW")
        _handle = None
    if _clip_handle[0] is not None:
        bpy.types.SpaceClipEditor.draw_handler_remove(_clip_handle[0], "WINDOW")
        _clip_handle[0] = None
    _cache.update(key=None, texture=None)
    for s in _sessions.values():
        s.close()
    _sessions.clear()
