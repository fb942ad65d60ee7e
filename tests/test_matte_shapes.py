"""matte_shapes without Blender: polygons that rasterise back to the mattes, oriented, in spans."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon import matte_shapes as ms
from track_anything.tam_blender_addon.session import Session, SourceInfo

W, H = 160, 120


def ring_mask(t: int) -> np.ndarray:
    """A moving, turning ellipse with a hole; from frame 5 a second region (a box) appears."""
    m = np.zeros((H, W), np.uint8)
    cx = 40 + 3 * t
    cv2.ellipse(m, (cx, 60), (30, 20), 5 * t, 0, 360, 1, -1)
    cv2.circle(m, (cx, 60), 8, 0, -1)
    if t >= 5:
        cv2.rectangle(m, (115, 10), (150, 35), 1, -1)
    return m.astype(bool)


def back_to_pixels(doc: dict, span: dict, t: int) -> np.ndarray:
    """Rasterise frame t of a span from the document (mask space -> pixels -> fillPoly)."""
    rings = [ms.from_mask_space(np.asarray(s["points"][t]).reshape(-1, 2), doc["width"], doc["height"])
             for s in span["splines"]]
    return ms.rasterize(rings, doc["width"], doc["height"])


def test_mask_space_matches_blender_convention_for_wide_and_tall_frames():
    """Longer side spans 0..1, the shorter is centred, y up (BLENDER_NOTES formula)."""
    pts = np.array([[0.0, 0.0], [W, H], [40.0, 30.0]])
    m = ms.to_mask_space(pts, W, H)
    # x_m = x / W; y_m = 0.5 + (y_up / H - 0.5) * H / W with y_up = H - y
    expected = np.stack([pts[:, 0] / W, 0.5 + ((H - pts[:, 1]) / H - 0.5) * H / W], axis=1)
    assert np.allclose(m, expected)
    tall = ms.to_mask_space(np.array([[0.0, 0.0], [H, W]]), H, W)  # 120 wide, 160 high
    assert np.allclose(tall, [[0.5 - 0.5 * H / W, 1.0], [0.5 + 0.5 * H / W, 0.0]])
    assert np.allclose(ms.from_mask_space(m, W, H), pts)


def test_polygons_rasterise_back_to_the_mattes_with_holes():
    """Outlines and holes of every frame give IoU >= 0.97 when filled again in pixel space."""
    for t in range(10):
        rings = ms.extract_rings(ring_mask(t))
        assert sum(r.hole for r in rings) == 1
        got = ms.rasterize([r.points for r in rings], W, H)
        assert ms.iou(got, ring_mask(t)) >= 0.97


def test_outlines_run_clockwise_and_holes_counter_clockwise_in_mask_space():
    """Blender feathers clockwise splines outwards: outers clockwise with y up, holes the other way."""
    for r in ms.extract_rings(ring_mask(6)):
        assert ms.is_clockwise_mask_space(ms.to_mask_space(r.points, W, H)) != r.hole


def test_spans_split_on_topology_change_and_keep_one_point_count():
    """A new region starts a new span; inside a span each spline keeps its point count."""
    spans = ms.object_spans((t, ring_mask(t)) for t in range(10))
    assert [(s.start, s.end) for s in spans] == [(0, 4), (5, 9)]
    assert [len(s.rings[0]) for s in spans] == [2, 3]
    for span in spans:
        tracks = ms.resample_span(span)
        for track in tracks:
            assert track.ndim == 3 and track.shape[0] == len(span.rings)  # (frames, count, 2)
        for t in range(len(span.rings)):
            got = ms.rasterize([track[t] for track in tracks], W, H)
            assert ms.iou(got, ring_mask(span.start + t)) >= 0.97


def test_start_points_follow_the_object_instead_of_twisting():
    """Aligned start points move with the object: no point jumps across the outline."""
    spans = ms.object_spans((t, ring_mask(t)) for t in range(5))
    outer = ms.resample_span(spans[0])[0]
    step = np.linalg.norm(np.diff(outer, axis=0), axis=2)  # per point, per frame
    # the ellipse moves 3 px and turns 5 degrees per frame; points may slide a little
    # along the outline, but a twisted ring would move them by tens of pixels
    assert step.mean() < 5.0 and np.percentile(step, 95) < 6.0
    twisted = outer.copy()
    twisted[1::2] = np.roll(twisted[1::2], outer.shape[1] // 3, axis=1)
    assert np.linalg.norm(np.diff(twisted, axis=0), axis=2).mean() > 5 * step.mean()


def test_resampling_keeps_corners_when_points_allow():
    """A square resampled to more points than it has corners still has its four corners."""
    square = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 50.0], [50.0, 10.0]])
    out = ms.resample_ring(square, 20)
    assert len(out) == 20
    for corner in square:
        assert np.min(np.linalg.norm(out - corner, axis=1)) < 1e-9
    shifted = np.roll(out, 7, axis=0)
    assert np.allclose(ms.align_start(shifted, out), out)


def test_gaps_and_empty_frames_end_spans_and_specks_are_ignored():
    """A frame without the object or a gap in frames ends a span; tiny specks make no rings."""
    blob = np.zeros((H, W), bool)
    blob[40:60, 40:70] = True
    speck = blob.copy()
    speck[5, 5] = True  # one stray pixel
    empty = np.zeros((H, W), bool)
    spans = ms.object_spans([(0, blob), (1, speck), (2, empty), (3, blob), (5, blob)])
    assert [(s.start, s.end) for s in spans] == [(0, 1), (3, 3), (5, 5)]
    line = np.zeros((H, W), bool)
    line[10, 20:60] = True  # one pixel thick: still a region
    (ring,) = ms.extract_rings(line)
    assert ms.iou(ms.rasterize([ring.points], W, H), line) == 1.0


@pytest.fixture
def session(tmp_path):
    """A session whose masks hold two objects: a moving ellipse with a hole and a box."""
    info = SourceInfo(path=str(tmp_path / "clip.mp4"), kind="video", width=W, height=H, fps=24.0, num_frames=8)
    s = Session.create(tmp_path / "session", info)
    s.add_object("ring")
    s.add_object("box")
    for t in range(8):
        labels = ring_mask(min(t, 4)).astype(np.uint8)  # one region only: one span
        labels[80:110, 100 + 2 * t:140 + 2 * t] = 2
        s.write_mask(t, labels, {1: 1.0, 2: 1.0})
    yield s
    s.close()


def test_write_shapes_writes_blender_ready_json(session, tmp_path):
    """The worker command's file: mask-space coordinates per frame, spans per object, quality."""
    out = tmp_path / "shapes.json"
    summary = ms.write_shapes(session, out)
    assert summary["objects"] == 2 and summary["spans"] == 2
    assert summary["min_iou"] >= 0.97 and summary["frames_without_shape"] == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "tam-shapes" and doc["space"] == "blender-mask"
    for obj in doc["objects"]:
        (span,) = obj["spans"]
        assert (span["start"], span["end"]) == (0, 7)
        for spline in span["splines"]:
            assert all(len(row) == 2 * spline["count"] for row in spline["points"])
        for t in range(8):
            want = session.object_mask(t, obj["id"])
            assert ms.iou(back_to_pixels(doc, span, t), want) >= 0.97
    assert [o["name"] for o in doc["objects"]] == ["ring", "box"]
    assert not list(tmp_path.glob("*.tmp"))


def test_small_outlines_are_kept_exactly_through_resampling():
    """A 9x9 disc and a 33x34 blob keep every traced vertex: resampled points hold the exact outline."""
    side = 120  # a square frame: no rim compensation, the traced outline itself is written
    for axes in ((4, 4), (16, 17)):
        m = np.zeros((side, side), np.uint8)
        cv2.ellipse(m, (60, 50), axes, 10, 0, 360, 1, -1)
        (ring,) = ms.extract_rings(m.astype(bool))
        raw, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        assert len(ring.points) == len(cv2.approxPolyDP(raw[0], 0.01, True))  # nothing simplified away
        (track,) = ms.resample_span(ms.object_spans([(0, m.astype(bool))])[0])
        assert track.shape[1] > len(ring.points)
        for vertex in ring.points:  # every vertex is one of the points, exactly
            assert np.min(np.linalg.norm(track[0] - vertex, axis=1)) < 1e-9
        assert ms.iou(ms.rasterize([ring.points], side, side), m.astype(bool)) == 1.0
        # the other points lie on the outline's edges (BEND px inside them)
        a, b = ring.points, np.roll(ring.points, -1, axis=0)
        ab = b - a
        tt = np.clip(np.einsum("pkj,kj->pk", track[0][:, None] - a, ab) / np.einsum("kj,kj->k", ab, ab), 0, 1)
        gap = np.linalg.norm(track[0][:, None] - (a + tt[..., None] * ab), axis=2).min(axis=1)
        assert gap.max() <= ms.BEND + 1e-9


def test_resampled_points_between_vertices_leave_the_edge_by_a_hair_only():
    """Extra points sit BEND px inside their edge: no three in a row (Blender's scan-fill trips on those)."""
    square = np.array([[10.0, 10.0], [10.0, 50.0], [50.0, 50.0], [50.0, 10.0]])
    out = ms.resample_ring(square, 40)
    x, y = out[:, 0], out[:, 1]
    off = np.minimum.reduce([np.abs(x - 10), np.abs(x - 50), np.abs(y - 10), np.abs(y - 50)])
    corners = [np.argmin(np.linalg.norm(out - c, axis=1)) for c in square]
    assert np.allclose(np.delete(off, corners), ms.BEND)
    inside = (x > 10) & (x < 50) & (y > 10) & (y < 50)
    assert inside.sum() == len(out) - 4


def test_one_pixel_lines_in_any_direction_become_thin_polygons():
    """A 1-px diagonal line and a 1-px spike become rings of real area that fill back to their pixels."""
    line = np.zeros((H, W), np.uint8)
    cv2.line(line, (10, 100), (140, 60), 1, 1)
    (ring,) = ms.extract_rings(line.astype(bool))
    assert ms.signed_area(ring.points) > 1.0  # not a zero-width fold, not a bounding box
    assert ms.iou(ms.rasterize([ring.points], W, H), line.astype(bool)) == 1.0
    spike = np.zeros((H, W), np.uint8)
    spike[40:60, 40:60] = 1
    spike[20:40, 50] = 1  # a needle on top
    (ring,) = ms.extract_rings(spike.astype(bool))
    assert ms.iou(ms.rasterize([ring.points], W, H), spike.astype(bool)) == 1.0
    # the needle's two sides are pulled apart: no point is visited twice
    assert len(np.unique(np.round(ring.points, 6), axis=0)) == len(ring.points)


def test_rim_compensation_moves_edges_by_the_stretched_rim_only_in_wide_frames():
    """Square frames: nothing moves. 16:9: vertical edges move 0.5*(16/9-1) px inward, horizontal ones stay."""
    box = np.array([[10.5, 10.5], [10.5, 40.5], [60.5, 40.5], [60.5, 10.5]])
    if ms.signed_area(box) < 0:
        box = box[::-1].copy()
    assert np.allclose(ms.rim_compensation(box, 100, 100), box)
    moved = ms.rim_compensation(box, 640, 360)
    dx = 0.5 * (640 / 360 - 1)
    assert np.allclose(np.sort(moved[:, 0]), [10.5 + dx, 10.5 + dx, 60.5 - dx, 60.5 - dx])
    assert np.allclose(np.sort(moved[:, 1]), np.sort(box[:, 1]))
    tall = ms.rim_compensation(box, 360, 640)  # portrait: horizontal edges move instead
    assert np.allclose(np.sort(tall[:, 0]), np.sort(box[:, 0]))
    assert np.allclose(np.sort(tall[:, 1]), [10.5 + dx, 10.5 + dx, 40.5 - dx, 40.5 - dx])


def test_written_points_stay_off_the_pixel_centre_grid(session, tmp_path):
    """Traced vertices sit on pixel centres; the file moves them OFF_GRID px away (a sample hitting a
    vertex head-on fills whole rows in Blender)."""
    assert np.all(np.abs(ms.OFF_GRID) >= 0.01) and np.all(np.abs(ms.OFF_GRID) <= 0.05)
    doc = ms.shapes_document(session, objects=[2])  # the box: its corners are traced vertices
    (span,) = doc["objects"][0]["spans"]
    (spline,) = span["splines"]
    back = ms.from_mask_space(np.asarray(spline["points"][0]).reshape(-1, 2), W, H)
    corners = np.array([[100.5, 80.5], [139.5, 80.5], [139.5, 109.5], [100.5, 109.5]])  # left of travel: inside
    for corner in ms.rim_compensation(corners, W, H):
        assert np.min(np.linalg.norm(back - (corner + ms.OFF_GRID), axis=1)) < 1e-3
