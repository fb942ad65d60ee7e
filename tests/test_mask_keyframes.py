"""Edited splines as keyframes: exact Bezier rasterising, mask prompts, and re-tracking only what depends on them."""

from __future__ import annotations

import numpy as np
import pytest

from track_anything.tam_blender_addon.errors import InputError
from track_anything.tam_blender_addon.matte_shapes import iou, rasterize, shapes_document
from track_anything.tam_blender_addon.session import MaskPrompt, Session, mask_to_runs, runs_to_mask
from track_anything.tam_blender_addon.spline_raster import (
    BezierSpline,
    from_mask_space,
    matte_digest,
    rasterize_layer,
    to_mask_space,
    vector_handles,
)

W, H = 96, 64
KAPPA = 0.5522847498  # four cubic Beziers of this handle length make a circle


def _polygon(points_px: np.ndarray) -> BezierSpline:
    co = to_mask_space(points_px, W, H)
    left, right = vector_handles(co, True)
    return BezierSpline(left, co, right)


def _circle(cx: float, cy: float, r: float) -> BezierSpline:
    """A circle as four Bezier points (pixel centre cx, cy, radius r), given in mask space."""
    d = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], float)
    tangent = np.stack([-d[:, 1], d[:, 0]], 1)
    co = np.array([cx, cy]) + r * d
    left = co - KAPPA * r * tangent
    right = co + KAPPA * r * tangent
    return BezierSpline(*(to_mask_space(p, W, H) for p in (left, co, right)))


def _centres_inside(pts: np.ndarray) -> np.ndarray:
    """Pixel centres inside the polygon, by casting a ray from every centre across every edge."""
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    inside = np.zeros((H, W), bool)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        crosses = (y0 > yy) != (y1 > yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (yy - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xx < x_at)
    return inside


def test_straight_handles_fill_exactly_like_the_polygon():
    pts = np.array([[10.3, 5.2], [70.7, 12.1], [60.2, 50.6], [20.4, 40.9], [35.1, 30.3]])
    got = rasterize_layer([_polygon(pts)], W, H, rim=False)
    assert np.array_equal(got, _centres_inside(pts))


def test_curved_segments_are_evaluated_not_just_their_control_points():
    cx, cy, r = 47.3, 30.8, 20.0
    got = rasterize_layer([_circle(cx, cy, r)], W, H, rim=False)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    corners = rasterize([from_mask_space(_circle(cx, cy, r).co, W, H)], W, H)
    assert iou(got, disc) > 0.99  # the Bezier circle is within 0.03% of the true circle's radius
    assert iou(corners, disc) < 0.7  # the control points alone make a diamond


def test_inner_spline_is_a_hole_only_when_the_layer_fills_holes():
    outer, inner = _circle(48, 32, 24), _circle(48, 32, 10)
    holed = rasterize_layer([outer, inner], W, H, fill_holes=True, rim=False)
    united = rasterize_layer([outer, inner], W, H, fill_holes=False, rim=False)
    assert not holed[32, 48] and united[32, 48] and holed[32, 30]
    assert united.sum() - holed.sum() > 250  # ~pi * 10^2
    unfilled = _circle(48, 32, 10)
    unfilled.fill = False
    assert not rasterize_layer([unfilled], W, H).any()


@pytest.mark.parametrize("size", [(96, 64), (64, 64), (48, 80)])
def test_splines_written_from_a_matte_rasterise_back_to_it(size):
    """The rim rule: what matte_shapes writes (outlines through boundary pixel centres) fills its matte again."""
    import cv2

    from track_anything.tam_blender_addon.matte_shapes import extract_rings, rim_compensation

    w, h = size
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 3, h // 4), 20, 0, 360, 1, -1)
    cv2.circle(m, (w // 2, h // 2), min(w, h) // 10, 0, -1)
    splines = []
    for ring in extract_rings(m.astype(bool)):
        co = to_mask_space(rim_compensation(ring.points, w, h), w, h)
        left, right = vector_handles(co, True)
        splines.append(BezierSpline(left, co, right))
    assert len(splines) == 2
    back = rasterize_layer(splines, w, h)
    assert iou(back, m.astype(bool)) > 0.98, iou(back, m.astype(bool))
    assert iou(rasterize_layer(splines, w, h, rim=False), m.astype(bool)) < iou(back, m.astype(bool))


def test_mask_runs_round_trip_and_refuse_a_wrong_size():
    rng = np.random.default_rng(1)
    for m in (rng.random((H, W)) > 0.5, np.ones((H, W), bool), np.zeros((H, W), bool)):
        assert np.array_equal(runs_to_mask(mask_to_runs(m), W, H), m)
    with pytest.raises(ValueError, match="cover"):
        runs_to_mask([5, 5], W, H)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    c = make_clip(preset_spec("occlusion", seed=3, num_frames=30))
    return c, write_clip(c, tmp_path_factory.mktemp("clip"))


def _session(tmp_path, clip) -> Session:
    from track_anything.tam_blender_addon.frames import open_source

    c, paths = clip
    with open_source(paths["video"]) as src:
        info = src.info()
    s = Session.create(tmp_path / "s", info, backend="classic")
    s.add_object("a")
    for f in (0, 20):
        x0, y0, x1, y1 = c.box(f, 1)
        s.add_box(f, 1, x0 - 2, y0 - 2, x1 + 2, y1 + 2)
    return s


def test_mask_keyframe_retracks_only_its_spans_and_keeps_the_rest(tmp_path, clip):
    """A mask given on frame 10 becomes that frame's matte; frames 21.. (after keyframe 20) stay bit-identical."""
    from track_anything.tam_blender_addon.pipeline import Engine

    s = _session(tmp_path, clip)
    engine = Engine(s)
    for _ in engine.track():
        pass
    n = s.source.num_frames
    before = {f: s.read_mask(f).labels.copy() for f in range(n)}
    edited = np.zeros((s.source.height, s.source.width), bool)
    ys, xs = np.nonzero(before[10] == 1)
    edited[max(ys.min() - 4, 0):ys.max() + 5, max(xs.min() - 4, 0):xs.max() + 5] = True
    with pytest.raises(InputError, match="empty"):
        s.add_mask(10, 1, np.zeros_like(edited))
    s.add_box(10, 1, 1, 1, 20, 20)  # replaced by the mask below
    prompt = s.add_mask(10, 1, edited)
    assert isinstance(prompt, MaskPrompt) and s.prompts(frame=10) == [prompt]
    engine.segment(10, 1)
    assert np.array_equal(s.object_mask(10, 1), edited) and s.read_mask(10).kind == "keyframe"
    assert s.keyframes() == [0, 10, 20]
    for _ in engine.track():
        pass
    assert np.array_equal(s.object_mask(10, 1), edited)
    changed = [f for f in range(n) if not np.array_equal(s.read_mask(f).labels, before[f])]
    assert changed and set(changed) <= set(range(1, 20))  # only the spans on either side of frame 10
    for f in [0, *range(20, n)]:
        assert np.array_equal(s.read_mask(f).labels, before[f])
    # reopening reads the mask prompt back from prompts.json
    s.close()
    with Session.open(tmp_path / "s", writable=False) as again:
        (p,) = again.prompts(frame=10)
        assert np.array_equal(p.mask(again.source.width, again.source.height), edited)


def test_shapes_outline_only_frames_whose_matte_changed(tmp_path, clip):
    s = _session(tmp_path, clip)
    for f in (0, 1, 2):
        m = np.zeros((s.source.height, s.source.width), np.uint8)
        m[10 + f:30 + f, 20:40] = 1
        s.write_mask(f, m)
    first = shapes_document(s, check=False)
    (obj,) = first["objects"]
    assert obj["changed"] == [0, 1, 2] and len(obj["digests"]) == 3
    known = {str(obj["id"]): obj["digests"]}
    m = np.zeros((s.source.height, s.source.width), np.uint8)
    m[40:50, 20:40] = 1
    s.write_mask(1, m)
    again = shapes_document(s, check=False, known=known)["objects"][0]
    assert again["changed"] == [1]
    assert [(sp["start"], sp["end"]) for sp in again["spans"]] == [(1, 1)]
    assert again["digests"]["1"] == matte_digest(m == 1)
