"""Mask datablocks rendered by the real bpy 5.0.1 wheel match small and awkward session mattes.

The path is the one ``tam.mattes_write`` takes: the session's masks -> `write_shapes`
(the worker's ``shapes`` command) -> `read_shapes` -> `build_mask`. The Mask is then
rendered headless at the source size, through a sequencer mask strip and through the
compositor's Mask node, and every frame is compared with the stored matte. At these
sizes one misplaced boundary pixel row costs several percent of IoU, so the shapes are
the hard ones: a 33x34 blob, a 12x12 square, 1- and 3-pixel diagonal bars, a ring, a
star with needle tips, objects on the frame border, an absent frame, two regions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

from bpy_render import render_frames  # noqa: E402 - beside the tests (conftest)

from track_anything.operators.mattes import build_mask, read_shapes  # noqa: E402 - needs bpy
from track_anything.tam_blender_addon.matte_shapes import iou, write_shapes  # noqa: E402 - needs cv2
from track_anything.tam_blender_addon.session import Session, SourceInfo  # noqa: E402

pytestmark = [pytest.mark.bpy]

FRAMES = 4
ZERO = 11  # scene frame showing source frame 0
MIN_IOU = 0.97  # the product promise is 0.95 per frame; keep a margin


def _shapes(w: int, h: int) -> dict[str, Callable[[int], np.ndarray]]:
    """Per shape name: source frame -> uint8 matte (h, w). Positions scale with the frame."""
    cx, cy = w // 2, h // 2

    def blob(t: int) -> np.ndarray:  # 33x34 on frame 0, growing and turning
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (cx + 2 * t, cy + t), (16 + 3 * t, 17 + 2 * t), 10 * t, 0, 360, 1, -1)
        return m

    def square(t: int) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        m[cy:cy + 12, 50 + t:62 + t] = 1
        return m

    def bar3(t: int) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        cv2.line(m, (30 + t, 30), (w - 60 + t, h - 40), 1, 3)
        return m

    def line1(t: int) -> np.ndarray:  # one pixel thick, shallow slope
        m = np.zeros((h, w), np.uint8)
        cv2.line(m, (20, cy + 30 + t), (w - 30, cy - 10 + 2 * t), 1, 1)
        return m

    def ring(t: int) -> np.ndarray:
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (cx + t, cy), 25, 1, -1)
        cv2.circle(m, (cx + t, cy), 12 + t % 2, 0, -1)
        return m

    def star(t: int) -> np.ndarray:  # needle tips one pixel wide
        m = np.zeros((h, w), np.uint8)
        a = np.linspace(0, 2 * np.pi, 11)[:-1] + 0.1 * t
        r = np.where(np.arange(10) % 2 == 0, 20, 8)
        cv2.fillPoly(m, [np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).astype(np.int32)], 1)
        return m

    def border(t: int) -> np.ndarray:  # cut by the left and top frame edges
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (5 + t, 8), (30, 20), 0, 0, 360, 1, -1)
        return m

    def corner(t: int) -> np.ndarray:  # fills the bottom-right corner
        m = np.zeros((h, w), np.uint8)
        m[h - 25:, w - 20 - t:] = 1
        return m

    def absent(t: int) -> np.ndarray:  # gone on frame 2
        m = np.zeros((h, w), np.uint8)
        if t != 2:
            cv2.circle(m, (60, 60), 15, 1, -1)
        return m

    def split(t: int) -> np.ndarray:  # two regions drifting apart
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (60, 60), 15, 1, -1)
        cv2.circle(m, (85 + 3 * t, 60), 12, 1, -1)
        return m

    def ragged(t: int) -> np.ndarray:  # a blob with a noisy, segmentation-like edge
        noise = cv2.GaussianBlur(np.random.default_rng(t).random((h, w)).astype(np.float32), (0, 0), 1.5)
        m = np.zeros((h, w), np.float32)
        cv2.ellipse(m, (cx, cy), (16 + 4 * t, 17 + 3 * t), 0, 0, 360, 1, -1)
        return (cv2.GaussianBlur(m, (0, 0), 2) + (noise - 0.5) * 0.8 > 0.5).astype(np.uint8)

    return {"blob33": blob, "square12": square, "bar3": bar3, "line1": line1, "ring": ring, "star": star,
            "border": border, "corner": corner, "absent": absent, "split": split, "ragged": ragged}


def _render(scene, folder: Path) -> dict[int, np.ndarray]:
    """Render frames ZERO.. of `scene`; {frame: grey uint8 image}."""
    paths = render_frames(bpy, scene, range(ZERO, ZERO + FRAMES), folder, color_mode="RGB")
    return {f: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for f, p in paths.items()}


def _sized_scene(name: str, w: int, h: int):
    scene = bpy.data.scenes.new(name)
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = w, h, 100
    scene.view_settings.view_transform = "Standard"  # AgX would render white as grey
    scene.render.dither_intensity = 0.0  # no noise in the empty parts
    scene.frame_start, scene.frame_end = ZERO, ZERO + FRAMES - 1
    return scene


def _strip_render(mask, w: int, h: int, folder: Path) -> dict[int, np.ndarray]:
    """The Mask as a sequencer mask strip."""
    scene = _sized_scene(f"strip {mask.name}", w, h)
    scene.sequence_editor_create().strips.new_mask("m", mask, 1, ZERO)
    return _render(scene, folder)


def _compositor_render(mask, w: int, h: int, folder: Path) -> dict[int, np.ndarray]:
    """The Mask through the compositor's Mask node (what the compositor target uses), as coverage."""
    scene = _sized_scene(f"comp {mask.name}", w, h)
    scene.render.use_sequencer = False
    scene.render.use_compositing = True
    tree = bpy.data.node_groups.new(f"comp {mask.name}", "CompositorNodeTree")
    tree.interface.new_socket(name="Image", in_out="OUTPUT", socket_type="NodeSocketColor")
    node = tree.nodes.new("CompositorNodeMask")
    node.mask = mask
    out = tree.nodes.new("NodeGroupOutput")
    tree.links.new(node.outputs[0], out.inputs["Image"])
    scene.compositing_node_group = tree
    # the compositor works in linear light: with "Standard" the PNG would hold the sRGB
    # encoding of the coverage (0.5 -> 188). "Raw" writes the coverage itself, which is
    # what the compositor target feeds into the alpha.
    scene.view_settings.view_transform = "Raw"
    return _render(scene, folder)


@pytest.fixture(autouse=True)
def empty_file():
    bpy.ops.wm.read_homefile(use_empty=True)


@pytest.mark.parametrize(
    ("size", "skip", "least"),
    [((320, 240), (), MIN_IOU), ((240, 320), (), MIN_IOU), ((640, 360), ("line1",), 0.95)],
    ids=["landscape", "portrait", "wide"],
)
def test_small_and_awkward_mattes_render_back_from_the_mask(size, skip, least, tmp_path):
    """Every shape, every frame, both renderers: the rendered Mask matches the matte (IoU >= 0.97).

    In 16:9 Blender's anti-aliased rim is 1.8 px wide across vertical edges: the points
    are moved to make up for it (`rim_compensation`), which leaves a few pixels at the
    steps of a 3-px bar near the 0.5 level (IoU ~0.97, checked against the promised
    0.95), and a one-pixel line cannot be drawn thinner than the rim (left out).
    """
    w, h = size
    info = SourceInfo(path=str(tmp_path / "none.mp4"), kind="video", width=w, height=h, fps=24.0, num_frames=FRAMES)
    worst: dict[str, float] = {}
    failures = []
    for name, matte in _shapes(w, h).items():
        if name in skip:
            continue
        with Session.create(tmp_path / name, info) as s:
            s.add_object(name)
            for t in range(FRAMES):
                s.write_mask(t, matte(t), {1: 1.0})
            summary = write_shapes(s, tmp_path / name / "shapes.json")
        assert summary["frames_without_shape"] == 0
        mask = build_mask(read_shapes(tmp_path / name / "shapes.json"), name, ZERO, (ZERO, ZERO + FRAMES - 1))
        for renderer, render in (("strip", _strip_render), ("compositor", _compositor_render)):
            images = render(mask, w, h, tmp_path)
            for t in range(FRAMES):
                img = images[ZERO + t]
                assert img.shape == (h, w)
                score = iou(img > 127, matte(t).astype(bool))
                worst[f"{name}/{renderer}"] = min(worst.get(f"{name}/{renderer}", 1.0), score)
                if score < least:
                    failures.append((name, renderer, t, round(score, 4)))
    print(f"{w}x{h} worst IoU per shape:", {k: round(v, 4) for k, v in worst.items()})
    assert not failures, failures


def test_the_span_layers_hide_where_the_object_is_absent(tmp_path):
    """An object missing on one frame gives two span layers; neither draws anything on that frame."""
    w, h = 240, 320
    info = SourceInfo(path=str(tmp_path / "none.mp4"), kind="video", width=w, height=h, fps=24.0, num_frames=FRAMES)
    matte = _shapes(w, h)["absent"]
    with Session.create(tmp_path / "s", info) as s:
        s.add_object("absent")
        for t in range(FRAMES):
            s.write_mask(t, matte(t), {1: 1.0})
        write_shapes(s, tmp_path / "shapes.json")
    mask = build_mask(read_shapes(tmp_path / "shapes.json"), "absent", ZERO, (ZERO, ZERO + FRAMES - 1))
    assert [layer.name for layer in mask.layers] == ["absent 001", "absent 002"]
    images = _strip_render(mask, w, h, tmp_path)
    # (Blender's rasteriser leaves a faint value, here 3/255, in the top-right pixel)
    assert images[ZERO + 2].max() < 32
    assert all((images[ZERO + t] > 127).sum() == matte(t).sum() for t in (0, 1, 3))
