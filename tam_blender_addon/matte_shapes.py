"""Vectorise per-frame object mattes into animated, Blender-ready mask splines (worker side).

Blender masks are spline layers whose point positions can be keyed per frame, but a
spline cannot change its point count over time. So each object's mattes are cut into
*spans*: runs of consecutive frames in which the object keeps the same topology (same
number of regions and holes). Inside a span every ring (outer outline or hole) is
resampled to ONE constant point count, start points aligned frame to frame so the
spline does not twist, and the Blender side keys the points per frame; a topology
change starts a new span, which Blender shows on its own layer switched by keyed
``hide``/``hide_render``.

Coordinates written out are already in Blender mask space: origin bottom-left, y up,
the longer frame side spanning 0..1 and the shorter one centred. Outer rings run
clockwise in that space (Blender feathers only clockwise splines outwards), holes the
other way. Pixel geometry used here: continuous coordinates, pixel (i, j) covers
[i, i+1) x [j, j+1), origin top-left, y down.

Accuracy (checked by rendering in bpy 5.0.1, tests/test_blender_mask_accuracy.py):
outlines run through the boundary pixel centres and are kept exactly (no simplification
below `exact_vertices`, every vertex kept by the resampling), one-pixel-thick parts are
widened a hair, edges move to make up for Blender's rim being wider along the longer
frame side (`rim_compensation`), and written points sit `OFF_GRID` px off the pixel
centres. A rendered Mask then matches its matte pixel for pixel on 4:3, 3:4 and square
frames; wide frames lose a few pixels on thin parts.

Soft edges: where the session holds a soft alpha (motion blur), `add_feather` moves outer
ring points to the soft band's inner edge and gives them a Blender feather weight reaching
its outer edge (``weights`` in the document); sharp edges keep weight 0.

Imports numpy and OpenCV only (no bpy, no torch).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_write
from .spline_raster import from_mask_space, matte_digest, to_mask_space  # noqa: F401 - re-exported

FORMAT = "tam-shapes"
# Blender's mask rasteriser (scan-fill) sometimes fills a whole pixel row beside an edge
# that carries extra collinear points; points added along an edge are moved this many
# pixels towards the inside so that no three points of a spline are collinear.
BEND = 0.02
# Traced outlines put vertices exactly on pixel-centre rows and columns, where Blender
# samples the mask; a sample that meets a vertex or an edge head-on is sometimes counted
# inside a whole run of pixels (seen at 160x120: rows filled 3-5 px beyond the outline).
# The written points are moved off that grid by this many pixels (x, y).
OFF_GRID = np.array([0.013, 0.017])
VERSION = 1


@dataclass
class Ring:
    """One closed outline in continuous pixel coordinates: an object's outer edge or a hole."""

    points: np.ndarray  # float64 (N, 2) x, y; pixel space, y down
    hole: bool = False

    @property
    def centroid(self) -> np.ndarray:
        """Mean of the points (good enough to match rings between neighbouring frames)."""
        return self.points.mean(axis=0)


@dataclass
class Span:
    """Consecutive source frames over which an object keeps the same rings (one mask layer)."""

    start: int
    rings: list[list[Ring]] = field(default_factory=list)  # rings[t][k]: ring k on frame start + t

    @property
    def end(self) -> int:
        """Last source frame of the span (inclusive)."""
        return self.start + len(self.rings) - 1


# --------------------------------------------------------------------------- geometry


def signed_area(points: np.ndarray) -> float:
    """Shoelace area: positive when the ring runs counter-clockwise in a y-up frame."""
    p = np.asarray(points, dtype=np.float64)
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def is_clockwise_mask_space(points: np.ndarray) -> bool:
    """True if a ring given in Blender mask space (y up) runs clockwise."""
    return signed_area(points) < 0.0


def _resample_keeping_vertices(p: np.ndarray, cum: np.ndarray, count: int) -> np.ndarray:
    """`count` points: every vertex of `p` kept exactly, the others spread along the edges.

    Vertex j goes to the point slot nearest its arc-length position (``cum[j] / total *
    count``), slots kept strictly increasing; the slots between two vertices lie evenly
    on the edge joining them. The polygon keeps its exact shape and each point stays at
    nearly the same place along the outline from frame to frame.
    """
    n = len(p)
    ideal = np.rint(cum[:-1] / cum[-1] * count).astype(int)
    slots = np.empty(n, dtype=int)
    for j in range(n):  # forward: increasing, and room left for the vertices after j
        lo = slots[j - 1] + 1 if j else 0
        slots[j] = min(max(ideal[j], lo), count - n + j)
    out = np.empty((count, 2), dtype=np.float64)
    ends = np.append(slots[1:], count + slots[0])
    inward = 1.0 if signed_area(p) >= 0 else -1.0
    for j in range(n):
        a, b, gap = p[j], p[(j + 1) % n], int(ends[j] - slots[j])
        frac = np.arange(gap) / gap
        edge = b - a
        length = float(np.hypot(*edge))
        nudge = np.zeros(2) if length == 0 else inward * BEND * np.array([-edge[1], edge[0]]) / length
        # the in-between points sit a hair off the edge: no three points in a row (see BEND)
        out[(slots[j] + np.arange(gap)) % count] = a + edge * frac[:, None] + nudge * (frac > 0)[:, None]
    return out


def resample_ring(points: np.ndarray, count: int) -> np.ndarray:
    """`count` points along the closed ring: its exact shape when `count` allows, else evenly spaced.

    With at least as many points as the ring has vertices every vertex is kept and the
    rest are spread along the edges in proportion to their length, so the spline draws
    exactly the traced outline (small objects lose nothing). With fewer, the points are
    evenly spaced by arc length and each vertex replaces the point nearest to it along
    the ring (the sharpest vertex wins where several share a point), so corners stay
    sharp. Either way the spacing is nearly even, so keyed points glide with the object
    from frame to frame instead of sliding along it.
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    nxt = np.roll(p, -1, axis=0)
    seg = np.linalg.norm(nxt - p, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = float(cum[-1])
    if total <= 0:
        return np.repeat(p[:1], count, axis=0)
    if count >= n:
        return _resample_keeping_vertices(p, cum, count)
    targets = np.arange(count) * (total / count)
    idx = np.clip(np.searchsorted(cum, targets, side="right") - 1, 0, n - 1)
    t = np.where(seg[idx] > 0, (targets - cum[idx]) / np.where(seg[idx] > 0, seg[idx], 1.0), 0.0)
    out = p[idx] + (nxt[idx] - p[idx]) * t[:, None]
    into, outof = p - np.roll(p, 1, axis=0), nxt - p
    turn = np.abs(np.arctan2(into[:, 0] * outof[:, 1] - into[:, 1] * outof[:, 0], np.sum(into * outof, axis=1)))
    slot = np.rint(cum[:-1] / total * count).astype(int) % count
    order = np.argsort(turn, kind="stable")  # the sharpest vertex is written last and wins
    out[slot[order]] = p[order]
    return out


def align_start(ring: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cyclically shift `ring` so its points best match `reference` (same count): no twisting.

    Minimises the summed squared distance over all cyclic shifts with one FFT
    cross-correlation (O(N log N)).
    """
    a = reference[:, 0] + 1j * reference[:, 1]
    b = ring[:, 0] + 1j * ring[:, 1]
    # sum_j |a_j - b_{j+k}|^2 = const - 2 Re(sum_j conj(a_j) b_{j+k}); maximise the correlation.
    corr = np.fft.ifft(np.conj(np.fft.fft(a)) * np.fft.fft(b))
    shift = int(np.argmax(corr.real))
    return np.roll(ring, -shift, axis=0)


# --------------------------------------------------------------------------- contours


def _widen_thin_parts(points: np.ndarray, by: float = 0.1) -> np.ndarray:
    """Push the vertices of zero-width parts (one-pixel lines, spike tips) apart by `by` px.

    A traced one-pixel-thick part runs out and back over the same pixel centres; Blender
    renders such a fold (and any needle-sharp vertex) poorly. Vertices visited twice and
    vertices where the outline turns back (more than 135 degrees) move outwards along
    their bisector, so the part becomes a thin polygon whose anti-aliased rim covers
    exactly its pixels.
    """
    p = np.asarray(points, dtype=np.float64)
    n = len(p)
    if n < 2:
        return p
    edge = np.roll(p, -1, axis=0) - p
    length = np.linalg.norm(edge, axis=1)
    unit = edge / np.where(length > 0, length, 1.0)[:, None]
    sign = 1.0 if signed_area(p) >= 0 else -1.0
    normal = sign * np.stack([unit[:, 1], -unit[:, 0]], axis=1)  # outward: right of travel for area >= 0
    prev_unit, prev_normal = np.roll(unit, 1, axis=0), np.roll(normal, 1, axis=0)
    cosang = np.sum(prev_unit * unit, axis=1)
    _, where, seen = np.unique(np.round(p * 64).astype(np.int64), axis=0, return_inverse=True, return_counts=True)
    tip = cosang < -0.7
    twin = seen[where.reshape(-1)] > 1
    if not (tip | twin).any():
        return p
    bis = prev_normal + normal
    blen = np.linalg.norm(bis, axis=1)
    out: list[np.ndarray] = []
    for i in range(n):
        if tip[i]:  # the outline turns back here: cap the tip with two points
            out.append(p[i] + by * (prev_unit[i] + prev_normal[i]))
            out.append(p[i] + by * (prev_unit[i] + normal[i]))
        elif twin[i] and blen[i] > 1e-6:
            out.append(p[i] + by * bis[i] / blen[i])
        else:
            out.append(p[i])
    return np.asarray(out)


def extract_rings(
    mask: np.ndarray, epsilon: float = 0.35, min_area: float = 4.0, exact_vertices: int = 400
) -> list[Ring]:
    """Outlines and holes of a boolean mask, oriented, in continuous pixel coordinates.

    ``cv2.findContours`` (RETR_CCOMP: outer outlines and their holes) traces the centres
    of the boundary pixels. The outline is kept through those centres, not moved out to
    the pixel edges: Blender's mask rasteriser adds a one-pixel anti-aliased rim, so a
    polygon through the boundary pixel centres renders (at the 0.5 level) to the
    matte's own pixels, while the pixels outside lie at least 0.7 px from it. That only
    holds for the traced outline itself, so it is kept exactly (only collinear points
    dropped) up to `exact_vertices` vertices; longer outlines (large objects, where a
    stray boundary pixel costs little) are simplified with approxPolyDP (`epsilon` px).
    One-pixel-thick parts are widened a little (see `_widen_thin_parts`). Regions (or
    holes) whose box is smaller than `min_area` px are dropped: they would only flicker.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if not m.any():
        return []
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    rings: list[Ring] = []
    height, width = m.shape
    stretched = width != height  # Blender's rim is wider along the longer side: compensate
    thickness = None
    for contour, info in zip(contours, hierarchy[0], strict=True):
        hole = bool(info[3] >= 0)
        raw = contour.reshape(-1, 2).astype(np.float64)
        x0, y0 = raw.min(axis=0)
        x1, y1 = raw.max(axis=0)
        if hole:
            # a hole's contour runs through the filled pixels around it
            if (x1 - x0 - 1) * (y1 - y0 - 1) < min_area:
                continue
        elif (x1 - x0 + 1) * (y1 - y0 + 1) < min_area:
            continue
        simple = cv2.approxPolyDP(contour, 0.01, True).reshape(-1, 2).astype(np.float64)  # lossless
        if len(simple) > exact_vertices:
            simple = cv2.approxPolyDP(contour, epsilon, True).reshape(-1, 2).astype(np.float64)
        if len(simple) < 3 or abs(signed_area(simple)) < 0.5:
            if hole:
                continue
            if len(simple) < 2:
                simple = np.array([[x0, y0], [x0, y0]], dtype=np.float64)
            box = _widen_thin_parts(simple + 0.5)
            if signed_area(box) < 0:
                box = box[::-1].copy()
            rings.append(Ring(box, hole=False))
            continue
        pts = simple + 0.5  # pixel centres in continuous coordinates
        # pixel space is y down: an outer ring with positive shoelace area runs clockwise
        # in Blender's y-up mask space; holes run the other way.
        if (signed_area(pts) > 0) == hole:
            pts, simple = pts[::-1].copy(), simple[::-1].copy()
        if stretched:
            if thickness is None:
                inside = cv2.distanceTransform(m, cv2.DIST_L2, 3)
                thickness = 2.0 * cv2.dilate(inside, np.ones((5, 5), np.uint8)) - 1.0
            move = rim_compensation(pts, width, height) - pts
            # at most 0.4 of the local thickness beyond one pixel: thin parts keep their width
            xi = np.clip(simple[:, 0].astype(int), 0, width - 1)
            yi = np.clip(simple[:, 1].astype(int), 0, height - 1)
            limit = 0.4 * np.maximum(thickness[yi, xi] - 1.0, 0.0)
            size = np.linalg.norm(move, axis=1)
            pts = pts + move * np.minimum(1.0, limit / np.maximum(size, 1e-9))[:, None]
        rings.append(Ring(_widen_thin_parts(pts), hole=hole))
    return rings


def _ring_length(points: np.ndarray) -> float:
    """Perimeter of a closed ring."""
    return float(np.linalg.norm(np.roll(points, -1, axis=0) - points, axis=1).sum())


def _match(prev: Sequence[Ring], cur: Sequence[Ring]) -> list[Ring] | None:
    """Reorder `cur` so ring k follows prev ring k (same kind, nearest centroid); None if not possible."""
    if len(prev) != len(cur):
        return None
    if sum(r.hole for r in prev) != sum(r.hole for r in cur):
        return None
    remaining = list(range(len(cur)))
    pairs: list[tuple[float, int, int]] = []
    for i, a in enumerate(prev):
        for j in remaining:
            if cur[j].hole == a.hole:
                pairs.append((float(np.linalg.norm(a.centroid - cur[j].centroid)), i, j))
    pairs.sort()
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for _, i, j in pairs:
        if i not in chosen and j not in used:
            chosen[i] = j
            used.add(j)
    if len(chosen) != len(prev):
        return None
    return [cur[chosen[i]] for i in range(len(prev))]


def build_spans(frames: Iterable[tuple[int, list[Ring]]]) -> list[Span]:
    """Group (source frame, rings) in frame order into spans of unchanged topology.

    A span ends where the frame sequence has a gap, the object vanishes, or the number
    of outlines / holes changes. Inside a span rings are reordered to follow each other.
    """
    spans: list[Span] = []
    current: Span | None = None
    last_frame: int | None = None
    for frame, rings in frames:
        if not rings:
            current = None
            last_frame = frame
            continue
        matched = None
        if current is not None and last_frame is not None and frame == last_frame + 1:
            matched = _match(current.rings[-1], rings)
        if matched is None:
            current = Span(start=frame, rings=[list(rings)])
            spans.append(current)
        else:
            current.rings.append(matched)
        last_frame = frame
    return spans


def span_point_counts(span: Span, spacing: float = 3.0, min_points: int = 8, max_points: int = 400) -> list[int]:
    """One constant point count per ring of the span: a point every `spacing` px, and room for every vertex.

    Half as many points again as the most vertices the ring has in the span, so every
    vertex gets a slot near its place along the outline and the points do not slide.
    """
    counts = []
    for k in range(len(span.rings[0])):
        longest = max(_ring_length(frame_rings[k].points) for frame_rings in span.rings)
        corners = max(len(frame_rings[k].points) for frame_rings in span.rings)
        wanted = max(math.ceil(longest / spacing), math.ceil(1.5 * corners))
        counts.append(int(np.clip(wanted, min_points, max_points)))
    return counts


def resample_span(span: Span, spacing: float = 3.0, max_points: int = 400) -> list[np.ndarray]:
    """Per ring of the span an array (frames, count, 2) in pixel space, start points aligned."""
    counts = span_point_counts(span, spacing=spacing, max_points=max_points)
    out = []
    for k, count in enumerate(counts):
        track = np.empty((len(span.rings), count, 2), dtype=np.float64)
        for t, frame_rings in enumerate(span.rings):
            ring = resample_ring(frame_rings[k].points, count)
            track[t] = ring if t == 0 else align_start(ring, track[t - 1])
        out.append(track)
    return out


def rim_compensation(track: np.ndarray, width: int, height: int, direction: float = 1.0) -> np.ndarray:
    """Move ring points toward the filled side so Blender's stretched anti-aliased rim lands 0.5 px out.

    Blender's mask rasteriser draws a rim that is one pixel wide along the shorter frame
    side but ``long / short`` pixels along the longer one (it is round in coordinates
    normalised per axis), and the rendered edge (its 0.5 level) lies half a rim beyond
    the spline. The outlines here run through the boundary pixel centres and want the
    edge 0.5 px beyond them in every direction, so each edge moves toward the filled
    side (the left of travel: outer rings and holes are oriented that way) by
    ``0.5 * (|(n_x a_x, n_y a_y)| - 1)`` px, ``a = (W, H) / min(W, H)``, n its normal;
    points take the mitre of their two edges. Nothing moves for square frames. `track`
    is (..., N, 2) in pixel space; ``direction=-1`` moves the other way (what the
    stretched rim adds, used to check a fit the way Blender will draw it).
    """
    a = np.array([width, height], dtype=np.float64) / float(min(width, height))
    p = np.asarray(track, dtype=np.float64)
    if np.allclose(a, 1.0):
        return p.copy()
    edge = np.roll(p, -1, axis=-2) - p
    length = np.linalg.norm(edge, axis=-1, keepdims=True)
    unit = np.divide(edge, length, out=np.zeros_like(edge), where=length > 1e-9)
    left = np.stack([-unit[..., 1], unit[..., 0]], axis=-1)  # toward the filled side
    shift = 0.5 * (np.linalg.norm(left * a, axis=-1) - 1.0) * (length[..., 0] > 1e-9)
    l1, e1 = np.roll(left, 1, axis=-2), np.roll(shift, 1, axis=-1)  # edge into each point
    l2, e2 = left, shift  # edge out of each point
    det = l1[..., 0] * l2[..., 1] - l1[..., 1] * l2[..., 0]
    safe = np.where(np.abs(det) > 0.3, det, 1.0)
    # mitre: the point d with l1 . d = e1 and l2 . d = e2
    mitre = np.stack([(e1 * l2[..., 1] - e2 * l1[..., 1]) / safe, (l1[..., 0] * e2 - l2[..., 0] * e1) / safe], axis=-1)
    # (nearly) straight on: move along the mean normal; folding back (a needle tip): stay
    mean = l1 + l2
    mean_len = np.linalg.norm(mean, axis=-1, keepdims=True)
    along = np.where(mean_len > 1.0, mean / np.maximum(mean_len, 1e-9), 0.0) * (0.5 * (e1 + e2))[..., None]
    move = np.where((np.abs(det) > 0.3)[..., None], mitre, along)
    limit = 2.0 * np.maximum(e1, e2)[..., None]
    norm = np.linalg.norm(move, axis=-1, keepdims=True)
    move = move * np.minimum(1.0, limit / np.maximum(norm, 1e-9))
    return p + direction * move


# --------------------------------------------------------------------------- checking


def rasterize(rings: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """Fill polygons given in continuous pixel coordinates (even-odd, so holes cut out).

    ``cv2.fillPoly`` with sub-pixel vertices: a pixel is set when its centre lies inside
    or on the outline, the counterpart of `extract_rings` tracing boundary pixel centres.
    """
    out = np.zeros((height, width), dtype=np.uint8)
    if rings:
        shift = 4
        polys = [np.round((np.asarray(r, dtype=np.float64) - 0.5) * (1 << shift)).astype(np.int32).reshape(-1, 1, 2)
                 for r in rings]
        cv2.fillPoly(out, polys, 1, lineType=cv2.LINE_8, shift=shift)
    return out.astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


# --------------------------------------------------------------------------- session -> JSON


def object_spans(
    masks: Iterable[tuple[int, np.ndarray]], epsilon: float = 0.35, min_area: float = 4.0
) -> list[Span]:
    """Spans of one object from (source frame, bool mask) pairs in frame order."""
    return build_spans((f, extract_rings(m, epsilon=epsilon, min_area=min_area)) for f, m in masks)


def _pack(mask: np.ndarray) -> tuple[int, int, tuple[int, int], np.ndarray] | None:
    """A matte kept small for the final check: its bounding-box crop as packed bits."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = mask[y0:y1, x0:x1]
    return int(y0), int(x0), crop.shape, np.packbits(crop)


def _unpack(packed: tuple[int, int, tuple[int, int], np.ndarray], width: int, height: int) -> np.ndarray:
    """Inverse of `_pack`: the full-frame boolean matte."""
    y0, x0, (h, w), bits = packed
    out = np.zeros((height, width), dtype=bool)
    out[y0:y0 + h, x0:x0 + w] = np.unpackbits(bits, count=h * w).reshape(h, w).astype(bool)
    return out


@dataclass
class _Outlines:
    """What one read of the stored masks yields per wanted object (see `_outline_frames`)."""

    rings: dict[int, list[tuple[int, list[Ring]]]]  # object -> [(frame, rings)] of changed frames
    digests: dict[int, dict[int, str]]  # object -> {frame: matte digest} of every stored frame
    changed: dict[int, list[int]]  # object -> frames outlined anew
    packed: dict[tuple[int, int], tuple] = field(default_factory=dict)  # (object, frame) -> `_pack`
    without_shape: int = 0  # frames whose object is only specks too small to outline


def _outline_frames(session, wanted: list, known: dict | None, epsilon: float, max_points: int,
                    check: bool) -> _Outlines:
    """Read each stored frame once: digest every object's matte and outline those that changed
    since `known` (all without it), keeping packed mattes for the final check."""
    out = _Outlines({o.id: [] for o in wanted}, {o.id: {} for o in wanted}, {o.id: [] for o in wanted})
    for frame in session.mask_frames():
        record = session.read_mask(frame)
        if record is None:
            continue
        for o in wanted:
            m = record.labels == o.id
            digest = matte_digest(m)
            out.digests[o.id][frame] = digest
            if known is not None and known.get(o.id, {}).get(frame) == digest:
                continue
            out.changed[o.id].append(frame)
            rings = extract_rings(m, epsilon=epsilon, min_area=4.0, exact_vertices=max_points)
            out.rings[o.id].append((frame, rings))
            if not rings:
                out.without_shape += bool(m.any())
            elif check:
                out.packed[(o.id, frame)] = _pack(m)
    return out


def _span_ious(span: Span, tracks: list[np.ndarray], packed: dict, obj: int, width: int, height: int) -> list[float]:
    """IoU of each frame's splines, rasterised back, against that frame's matte (consumed from `packed`)."""
    ious = []
    for t in range(len(span.rings)):
        got = rasterize([rim_compensation(track[t], width, height, -1.0) for track in tracks], width, height)
        ious.append(iou(got, _unpack(packed.pop((obj, span.start + t)), width, height)))
    return ious


def _span_entry(span: Span, tracks: list[np.ndarray], width: int, height: int) -> dict:
    """The JSON form of one span: its frames and, per spline, the points of every frame in mask space."""
    return {
        "start": span.start,
        "end": span.end,
        "splines": [
            {
                "hole": span.rings[0][k].hole,
                "count": int(track.shape[1]),
                # per frame: x0, y0, x1, y1, ... in mask space
                "points": np.round(to_mask_space(track + OFF_GRID, width, height), 6)
                .reshape(len(track), -1)
                .tolist(),
            }
            for k, track in enumerate(tracks)
        ],
    }


def _quality(ious: list[float], without_shape: int) -> dict:
    """The ``quality`` entry: frames checked, worst and mean IoU, frames without a shape."""
    return {
        "frames_checked": len(ious),
        "min_iou": round(min(ious), 5) if ious else None,
        "mean_iou": round(float(np.mean(ious)), 5) if ious else None,
        "frames_without_shape": without_shape,
    }


def shapes_document(
    session,
    objects: Sequence[int] | None = None,
    spacing: float = 3.0,
    epsilon: float = 0.35,
    max_points: int = 400,
    check: bool = True,
    known: dict | None = None,
) -> dict:
    """Build the shapes JSON document for the session's stored masks (see module doc).

    Reads each stored frame once; memory holds the outlines (and, with `check`, each
    matte's bounding box as packed bits), never the frames. With `check`, the final
    splines of every frame are rasterised back and compared with the matte; the worst
    and mean IoU go into ``quality`` (frames whose object is only specks too small to
    outline are counted in ``frames_without_shape``).

    ``digests`` gives every stored frame's per-object `matte_digest`. With `known`
    ({object id: {frame: digest}} of an earlier write) only the frames whose matte
    changed since are outlined (``changed`` lists them per object), so the Blender side
    can keep every other frame's keys, artist edits included.
    """
    width, height = int(session.source.width), int(session.source.height)
    if known is not None:  # JSON keys are strings
        known = {int(o): {int(f): str(d) for f, d in frames.items()} for o, frames in known.items()}
    wanted = [o for o in session.objects if objects is None or o.id in objects]
    found = _outline_frames(session, wanted, known, epsilon, max_points, check)
    ious: list[float] = []
    doc_objects = []
    for o in wanted:
        doc_spans = []
        for span in build_spans(found.rings[o.id]):
            tracks = resample_span(span, spacing=spacing, max_points=max_points)
            if check:
                ious += _span_ious(span, tracks, found.packed, o.id, width, height)
            doc_spans.append(_span_entry(span, tracks, width, height))
            add_feather(session, o.id, doc_spans[-1], tracks)
        changed = found.changed[o.id]
        if known is not None:  # frames known before but gone now changed too (to nothing)
            changed += [int(f) for f in known.get(o.id, {}) if int(f) not in found.digests[o.id]]
        doc_objects.append(
            {"id": o.id, "name": o.name, "color": [float(c) for c in o.color], "spans": doc_spans,
             "digests": {str(f): d for f, d in found.digests[o.id].items()}, "changed": sorted(changed)}
        )
    return {
        "format": FORMAT,
        "version": VERSION,
        "space": "blender-mask",
        "width": width,
        "height": height,
        "objects": doc_objects,
        "quality": _quality(ious, found.without_shape),
    }


def write_shapes(session, out: str | os.PathLike, objects: Sequence[int] | None = None, **options) -> dict:
    """Write the shapes JSON for `session` to `out` atomically; return a short summary.

    Called by the worker's ``shapes`` command; the Blender side turns the file into one
    Mask datablock (see operators/mattes.py).
    """
    doc = shapes_document(session, objects=objects, **options)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
    return {
        "path": str(path),
        "objects": len(doc["objects"]),
        "spans": sum(len(o["spans"]) for o in doc["objects"]),
        **doc["quality"],
    }



# --------------------------------------------------------------------------- feather (soft edges)

FEATHER_REACH = 32.0  # px: the widest soft band looked for on each side of an outline
FEATHER_MIN = 1.5  # px: narrower bands (antialiasing) get no feather; Blender's own rim covers them
FEATHER_BIAS = 1.0  # px of band `soft_band` reads on a sharp edge (see `feather_ring`)


def _outward_normals(ring: np.ndarray, k: int = 3) -> np.ndarray:
    """Unit normals pointing away from the filled side (the filled side is left of travel, y down).

    Averaged over the 2k edges around each point: a traced outline is a pixel staircase, and
    points moved along per-edge normals would zig-zag (Blender then drops a feathered fill).
    """
    edge = np.roll(ring, -1, axis=0) - ring
    length = np.maximum(np.linalg.norm(edge, axis=1, keepdims=True), 1e-9)
    left = np.stack([-edge[:, 1], edge[:, 0]], axis=1) / length
    k = max(1, min(k, len(ring) // 4))
    mean = sum(np.roll(left, j, axis=0) for j in range(-k + 1, k + 1))  # the edges around each point
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-9)
    return -mean


def soft_band(alpha: np.ndarray, ring: np.ndarray, reach: float = FEATHER_REACH) -> np.ndarray:
    """Half-width (px) of the soft band across each point of an outer ring, from the alpha along its normal.

    A linear ramp of half-width w centred on the outline leaves w/4 coverage outside it and
    w/4 missing inside, so w = 2 x (coverage outside + coverage missing inside), each
    integrated along the normal until the profile has reached 0 (outside) or 1 (inside).
    """
    n = _outward_normals(ring)
    s = np.arange(0.25, reach, 0.5, dtype=np.float32)
    outside = ring[:, None, :] + n[:, None, :] * s[None, :, None] - 0.5  # pixel centres sit at +0.5
    inside = ring[:, None, :] - n[:, None, :] * s[None, :, None] - 0.5
    a = np.ascontiguousarray(alpha, dtype=np.float32)

    def sample(p: np.ndarray, beyond: float) -> np.ndarray:  # `beyond`: the value outside the frame
        return cv2.remap(a, np.ascontiguousarray(p[..., 0], np.float32), np.ascontiguousarray(p[..., 1], np.float32),
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=beyond)

    # the frame's edge cuts the object sharply: outwards it reads as 0, inwards as 1
    out_prof, in_prof = sample(outside, 0.0), 1.0 - sample(inside, 1.0)
    # stop each profile where it first reaches its side's value (another object or edge may follow)
    out_prof *= np.cumprod(out_prof > 0.02, axis=1)
    in_prof *= np.cumprod(in_prof > 0.02, axis=1)
    return 2.0 * 0.5 * (out_prof.sum(axis=1) + in_prof.sum(axis=1))


def _smooth_ring(values: np.ndarray, k: int = 2) -> np.ndarray:
    """Median then mean over 2k+1 neighbours along a closed ring (one noisy profile does not make a notch)."""
    if len(values) < 2 * k + 1:
        return values
    idx = (np.arange(len(values))[:, None] + np.arange(-k, k + 1)[None, :]) % len(values)
    med = np.median(values[idx], axis=1)
    return med[idx].mean(axis=1)


def half_thickness(matte: np.ndarray) -> np.ndarray:
    """Per pixel inside the matte, its distance to the outside; along a normal its maximum is half the local width."""
    return cv2.distanceTransform(np.ascontiguousarray(matte, np.uint8), cv2.DIST_L2, 3)


def feather_ring(alpha: np.ndarray, thickness: np.ndarray, ring: np.ndarray,
                 longer: int) -> tuple[np.ndarray, np.ndarray]:
    """Move an outer ring's points to the soft band's inner edge and give them Blender feather weights.

    Blender feathers a clockwise spline outwards by ``weight x longer side`` px, falling off
    linearly with the layer falloff "ROOT" (set on the Blender side): a point moved in by the band's half-width w with
    a feather of 2w renders the ramp centred where the outline was. Sharp points (band below
    `FEATHER_MIN`) stay put with weight 0; the move is capped by `thickness` (`half_thickness`).
    """
    normals = _outward_normals(ring)
    edge = ring + 0.5 * normals  # the traced ring runs through boundary pixel centres, half a pixel in
    # sampling between pixels and the outline's own sub-pixel error read ~FEATHER_BIAS px of band
    # even on a step edge; Blender's own anti-aliased rim gives that softness already
    w = np.maximum(_smooth_ring(soft_band(alpha, edge)) - 0.5 * FEATHER_BIAS, 0.0)
    w = np.where(2.0 * w >= FEATHER_MIN, w, 0.0)
    # a thin part: move in by at most half its width (the deepest point along the inward normal)
    s = np.arange(0.5, FEATHER_REACH, 1.0, dtype=np.float32)
    ray = edge[:, None, :] - normals[:, None, :] * s[None, :, None] - 0.5
    depth = cv2.remap(np.ascontiguousarray(thickness, np.float32), np.ascontiguousarray(ray[..., 0], np.float32),
                      np.ascontiguousarray(ray[..., 1], np.float32), cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    w = np.minimum(w, depth.max(axis=1))
    moved = np.where((w > 0)[:, None], edge - normals * w[:, None], ring)
    return moved, (2.0 * w / float(longer)).astype(np.float64)


def is_simple_ring(ring: np.ndarray) -> bool:
    """True if no two non-adjacent edges of the closed ring cross (Blender drops a feathered fill that does)."""
    p = np.asarray(ring, dtype=np.float64)
    n = len(p)
    if n < 4:
        return True
    a, b = p, np.roll(p, -1, axis=0)
    d = b - a

    def cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]

    # edge i against edge j: proper crossings only
    s1 = cross(d[:, None, :], a[None, :, :] - a[:, None, :])
    s2 = cross(d[:, None, :], b[None, :, :] - a[:, None, :])
    s3 = cross(d[None, :, :], a[:, None, :] - a[None, :, :])
    s4 = cross(d[None, :, :], b[:, None, :] - a[None, :, :])
    hit = (s1 * s2 < 0) & (s3 * s4 < 0)
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))  # the first and the last edge share a point
    return not hit[i[keep], j[keep]].any()


def add_feather(session, obj: int, span_doc: dict, tracks: list[np.ndarray]) -> None:
    """Give a span's outer splines feather weights where the session's alpha is soft (motion blur).

    Sets ``weights`` (per frame, per point) on each spline of `span_doc` that gets any
    feather and rewrites its ``points`` where they moved; holes keep weight 0 (Blender does not feather them
    outwards). Frames without soft alpha keep their outline and weight 0.
    """
    width, height = int(session.source.width), int(session.source.height)
    longer = max(width, height)
    for t in range(len(tracks[0]) if tracks else 0):
        frame = span_doc["start"] + t
        rec = session.read_mask(frame)
        soft = session.read_alpha(frame, rec.labels) if rec is not None else None
        if not soft or obj not in soft:
            continue
        thickness = half_thickness(rec.labels == obj)
        for spline, track in zip(span_doc["splines"], tracks, strict=True):
            if spline["hole"]:
                continue
            moved, weights = feather_ring(soft[obj], thickness, track[t], longer)
            if not weights.any():
                continue
            outer = moved + _outward_normals(moved) * (weights * longer)[:, None]  # where the feather ends
            if not (is_simple_ring(moved) and is_simple_ring(outer)):
                continue  # this frame's spline stays unfeathered rather than risk a broken fill
            spline["points"][t] = np.round(to_mask_space(moved + OFF_GRID, width, height), 6).reshape(-1).tolist()
            if "weights" not in spline:  # only feathered splines carry weights (0 elsewhere)
                spline["weights"] = np.zeros((len(track), track.shape[1])).tolist()
            spline["weights"][t] = np.round(weights, 6).tolist()
