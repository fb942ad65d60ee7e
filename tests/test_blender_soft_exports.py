"""Soft exports open in the real bpy 5.0.1 wheel: 16-bit alpha PNG, float EXR, premultiplied RGBA, ProRes 4444.

The ProRes file goes into the sequencer as a movie strip and is rendered to RGBA: the
rendered alpha must be the exported matte (what an editor compositing with it gets).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

from bpy_render import render_frames  # noqa: E402 - beside the tests (conftest)

from track_anything.tam_blender_addon.export import export_masks  # noqa: E402
from track_anything.tam_blender_addon.session import Session, SourceInfo  # noqa: E402

pytestmark = [pytest.mark.bpy]
W, H, N = 64, 48, 3


class _Frames:
    """A tiny in-memory frame source: an orange object on a blue background."""

    def get(self, i: int) -> np.ndarray:
        img = np.empty((H, W, 3), np.uint8)
        img[:] = (30, 60, 200)
        return img


def _alpha(f: int) -> np.ndarray:
    x = np.arange(W, dtype=np.float32)
    ramp = np.clip((x - 20 - 2 * f) / 12.0, 0, 1)  # a motion-blur-like ramp
    a = np.tile(ramp, (H, 1))
    a[:8] = 0
    return a


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("soft_bpy")
    s = Session.create(root / "s", SourceInfo("/v.mp4", "video", W, H, 24.0, N))
    s.add_object("o")
    for f in range(N):
        a = _alpha(f)
        s.write_mask(f, (a >= 0.5).astype(np.uint8))
        s.write_alpha(f, {1: a})
    out = {}
    for fmt in ("alpha", "exr", "rgba", "prores"):
        out[fmt] = root / fmt
        list(export_masks(s, fmt, out[fmt], source=_Frames()))
    s.close()
    return out


def _pixels(path: Path, non_color: bool = True) -> np.ndarray:
    img = bpy.data.images.load(str(path), check_existing=False)
    if non_color:  # a matte is data, not an sRGB picture: Blender must not decode it as colour
        img.colorspace_settings.name = "Non-Color"
    try:
        px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
        img.pixels.foreach_get(px)
        return px.reshape(img.size[1], img.size[0], 4)[::-1]  # Blender rows run bottom-up
    finally:
        bpy.data.images.remove(img)


def test_alpha_png_and_exr_load_as_the_soft_matte(exports):
    for f in range(N):
        png = _pixels(exports["alpha"] / "1" / f"{f:05d}.png")
        exr = _pixels(exports["exr"] / "1" / f"{f:05d}.exr")
        assert np.abs(png[..., 0] - _alpha(f)).max() < 2e-3  # 16-bit grey, non-colour data
        assert np.abs(exr[..., 0] - _alpha(f)).max() < 1e-5


def test_rgba_png_carries_the_alpha(exports):
    px = _pixels(exports["rgba"] / "1" / "00001.png")
    assert np.abs(px[..., 3] - _alpha(1)).max() < 2e-3


def test_prores_movie_strip_renders_with_the_matte_as_alpha(exports, tmp_path):
    scene = bpy.data.scenes.new("prores_alpha")
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = W, H, 100
    scene.render.film_transparent = True
    scene.frame_start, scene.frame_end = 1, N
    se = scene.sequence_editor_create()
    strip = se.strips.new_movie("matte", str(exports["prores"] / "1.mov"), 1, 1)
    assert strip.frame_final_duration == N
    scene.render.use_sequencer = True
    try:
        paths = render_frames(bpy, scene, range(1, N + 1), tmp_path)
        for f, p in paths.items():
            rgba = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            assert rgba is not None and rgba.shape == (H, W, 4)
            got = rgba[..., 3].astype(np.float32) / (65535.0 if rgba.dtype == np.uint16 else 255.0)
            assert np.abs(got - _alpha(f - 1)).max() < 0.03, f
    finally:
        bpy.data.scenes.remove(scene)
