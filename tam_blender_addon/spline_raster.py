"""Blender Mask splines -> boolean mattes at source resolution (numpy only, usable inside Blender).

An artist's edited spline becomes a keyframe mask through `rasterize_layer`. Each
segment between two points is the cubic Bezier ``co[i], handle_right[i],
handle_left[i+1], co[i+1]`` evaluated densely (a sample every ``STEP_PX`` pixels of
its control polygon, so the polyline stays within a few hundredths of a pixel of the
curve), not just the control points. Filling follows the layer's rule: with
``use_fill_holes`` every spline of the layer is filled together even-odd (an inner
spline cuts a hole), otherwise each spline is filled on its own and the fills are
united. A pixel is inside when its centre is, or when it lies within half of the
anti-aliased rim Blender's renderer draws around every outline (`rim_pixels`), so the
matte is what Blender shows for the splines: a spline written from a matte by
`matte_shapes` rasterises back to that matte. Feather is ignored: the keyframe is the
hard shape.

Mask space (Blender's): origin bottom-left, y up, the longer frame side spans 0..1 and
the shorter one is centred. Pixel space: origin top-left, y down, pixel (i, j) covers
[i, i+1) x [j, j+1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STEP_PX = 0.5  # at most this many pixels of control polygon per evaluated sub-segment
MAX_STEPS = 4096  # per segment


def to_mask_space(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Continuous pixel coordinates (top-left origin, y down) -> Blender mask space."""
    s = float(max(width, height))
    p = np.asarray(points, dtype=np.float64)
    out = np.empty_like(p)
    out[..., 0] = 0.5 + (p[..., 0] - width / 2.0) / s
    out[..., 1] = 0.5 + (height / 2.0 - p[..., 1]) / s
    return out


def from_mask_space(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Blender mask space -> continuous pixel coordinates (inverse of `to_mask_space`)."""
    s = float(max(width, height))
    p = np.asarray(points, dtype=np.float64)
    out = np.empty_like(p)
    out[..., 0] = (p[..., 0] - 0.5) * s + width / 2.0
    out[..., 1] = height / 2.0 - (p[..., 1] - 0.5) * s
    return out


@dataclass
class BezierSpline:
    """One mask spline in mask space: per point its left handle, position and right handle."""

    left: np.ndarray  # (N, 2)
    co: np.ndarray  # (N, 2)
    right: np.ndarray  # (N, 2)
    cyclic: bool = True
    fill: bool = True


def vector_handles(co: np.ndarray, cyclic: bool) -> tuple[np.ndarray, np.ndarray]:
    """Handles of VECTOR points: a third of the way towards the neighbouring points (Blender's rule)."""
    p = np.asarray(co, dtype=np.float64)
    prev = np.roll(p, 1, axis=0)
    nxt = np.roll(p, -1, axis=0)
    left = p + (prev - p) / 3.0
    right = p + (nxt - p) / 3.0
    if not cyclic and len(p) > 1:  # end points of an open spline point along their only segment
        left[0] = p[0] - (p[1] - p[0]) / 3.0
        right[-1] = p[-1] + (p[-1] - p[-2]) / 3.0
    return left, right


def bezier_polyline(spline: BezierSpline, width: int, height: int) -> np.ndarray:
    """The spline evaluated densely as a closed polyline in pixel space, (M, 2)."""
    co = from_mask_space(spline.co, width, height)
    left = from_mask_space(spline.left, width, height)
    right = from_mask_space(spline.right, width, height)
    n = len(co)
    if n == 0:
        return np.zeros((0, 2))
    if n == 1:
        return co.copy()
    segments = n if spline.cyclic else n - 1
    out = []
    for i in range(segments):
        j = (i + 1) % n
        p0, p1, p2, p3 = co[i], right[i], left[j], co[j]
        length = np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p1) + np.linalg.norm(p3 - p2)
        steps = int(np.clip(np.ceil(length / STEP_PX), 1, MAX_STEPS))
        t = (np.arange(steps) / steps)[:, None]  # the end point is the next segment's start
        u = 1.0 - t
        out.append(u**3 * p0 + 3 * u**2 * t * p1 + 3 * u * t**2 * p2 + t**3 * p3)
    if not spline.cyclic:
        out.append(co[-1:])
    return np.concatenate(out)


def fill_even_odd(rings: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """Pixels whose centre lies inside an odd number of the closed polylines (pixel space)."""
    diff = np.zeros((height, width + 1), dtype=np.int32)
    rows_all, xs_all = [], []
    for ring in rings:
        p = np.asarray(ring, dtype=np.float64)
        if len(p) < 3:
            continue
        a, b = p, np.roll(p, -1, axis=0)
        y0, y1 = a[:, 1], b[:, 1]
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        # rows whose centre c = r + 0.5 satisfies lo <= c < hi (half-open: each crossing counted once)
        r0 = np.clip(np.ceil(lo - 0.5), 0, height).astype(np.int64)
        r1 = np.clip(np.ceil(hi - 0.5), 0, height).astype(np.int64)
        count = np.maximum(r1 - r0, 0)
        if not count.any():
            continue
        edge = np.repeat(np.arange(len(p)), count)
        offsets = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        rows = r0[edge] + offsets
        c = rows + 0.5
        t = (c - y0[edge]) / (y1[edge] - y0[edge])
        xs = a[edge, 0] + t * (b[edge, 0] - a[edge, 0])
        rows_all.append(rows)
        xs_all.append(xs)
    if not rows_all:
        return np.zeros((height, width), dtype=bool)
    rows = np.concatenate(rows_all)
    xs = np.concatenate(xs_all)
    order = np.lexsort((xs, rows))
    rows, xs = rows[order], xs[order]
    # pair crossings in each row: (0, 1), (2, 3), ...; every row has an even count
    starts, ends = rows[0::2], rows[1::2]
    if len(starts) != len(ends) or (starts != ends).any():
        raise ValueError("an outline is not closed")
    x_in, x_out = xs[0::2], xs[1::2]
    # pixel i is inside when x_in <= i + 0.5 < x_out
    i0 = np.clip(np.ceil(x_in - 0.5), 0, width).astype(np.int64)
    i1 = np.clip(np.ceil(x_out - 0.5), 0, width).astype(np.int64)
    keep = i1 > i0
    np.add.at(diff, (starts[keep], i0[keep]), 1)
    np.add.at(diff, (starts[keep], i1[keep]), -1)
    return np.cumsum(diff, axis=1)[:, :width] > 0


def rim_pixels(rings: Sequence[np.ndarray], width: int, height: int) -> np.ndarray:
    """Pixels whose centre lies within Blender's half rim of an outline.

    Blender's mask renderer draws an anti-aliased rim whose 0.5 level lies half a rim
    beyond the spline; the rim is one pixel along the shorter frame side and
    ``long / short`` pixels along the longer one (round in per-axis normalised
    coordinates). So a rendered mask is its fill grown by the ellipse of semi-axes
    ``0.5 * (W, H) / min(W, H)``: a pixel counts when its centre is within 0.5 of the
    outline after dividing x and y by those factors.
    """
    out = np.zeros((height, width), dtype=bool)
    a = np.array([width, height], dtype=np.float64) / float(min(width, height))
    reach = np.ceil(0.5 * a.max()).astype(int)
    offsets = np.arange(-reach - 1, reach + 2)
    for ring in rings:
        p = np.asarray(ring, dtype=np.float64)
        if len(p) < 2:
            continue
        q = np.roll(p, -1, axis=0)
        # samples every <= 0.1 px along every edge: distances within 0.003 px of the true ones
        seg = np.maximum(np.ceil(np.linalg.norm(q - p, axis=1) / 0.1).astype(int), 1)
        edge = np.repeat(np.arange(len(p)), seg)
        t = (np.arange(seg.sum()) - np.repeat(np.cumsum(seg) - seg, seg)) / seg[edge]
        pts = p[edge] + (q[edge] - p[edge]) * t[:, None]
        base = np.floor(pts).astype(np.int64)
        for dy in offsets:
            for dx in offsets:
                cx, cy = base[:, 0] + dx, base[:, 1] + dy
                d = ((cx + 0.5 - pts[:, 0]) / a[0]) ** 2 + ((cy + 0.5 - pts[:, 1]) / a[1]) ** 2
                ok = (d <= 0.25) & (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
                out[cy[ok], cx[ok]] = True
    return out


def rasterize_layer(splines: Sequence[BezierSpline], width: int, height: int, fill_holes: bool = True,
                    rim: bool = True) -> np.ndarray:
    """The boolean (height, width) matte of one mask layer's filled splines (see module doc).

    With `rim` (the default) the matte is what Blender renders for the splines (see
    `rim_pixels`): the fill grown by half of Blender's anti-aliased rim. Without it,
    exactly the pixels whose centre the splines enclose.
    """
    rings = [bezier_polyline(s, width, height) for s in splines if s.fill and len(s.co) >= 3]
    if fill_holes:
        out = fill_even_odd(rings, width, height)
        return out | rim_pixels(rings, width, height) if rim else out
    out = np.zeros((height, width), dtype=bool)
    for ring in rings:
        out |= fill_even_odd([ring], width, height)
    return out | rim_pixels(rings, width, height) if rim else out


def matte_digest(mask: np.ndarray) -> str:
    """A short fingerprint of a boolean matte (to tell later whether a frame's matte changed)."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    h = hashlib.sha1(np.packbits(m).tobytes())
    h.update(np.asarray(m.shape, np.int64).tobytes())
    return h.hexdigest()[:16]


def points_digest(values: np.ndarray) -> str:
    """A short fingerprint of spline point positions (rounded so float noise does not count as an edit)."""
    v = np.round(np.asarray(values, dtype=np.float64), 5) + 0.0  # +0.0: -0.0 and 0.0 alike
    return hashlib.sha1(v.tobytes()).hexdigest()[:16]
