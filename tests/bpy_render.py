"""Rendering a scene frame by frame in headless bpy, shared by the 5.0.1 tests and the 4.5 driver.

Takes the `bpy` module as an argument so that the 4.5 driver (another interpreter, no
OpenCV) can use it too; callers read the PNGs with what they have.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def render_frames(bpy, scene, frames: Iterable[int], folder: Path, color_mode: str = "RGBA") -> dict[int, Path]:
    """Render `frames` of `scene` to PNGs in `folder`; {frame: path}.

    `scene` is made the window's scene meanwhile: an animated Mask is evaluated by the
    active depsgraph when the frame changes, and renders read that result (rendering a
    scene that is not the window's shows the Mask at some other frame's shape).
    """
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = color_mode
    window = bpy.context.window
    previous = window.scene
    window.scene = scene
    out: dict[int, Path] = {}
    try:
        for f in frames:
            scene.frame_set(f)
            scene.render.filepath = str(Path(folder) / f"{scene.name}_{f:04d}.png")
            bpy.ops.render.render(write_still=True)
            out[f] = Path(scene.render.filepath)
    finally:
        window.scene = previous
    return out
