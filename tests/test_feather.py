"""The Mask feather's band estimate (`matte_shapes.soft_band`, `feather_ring`): numpy and OpenCV only."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2")

from track_anything.tam_blender_addon.matte_shapes import (  # noqa: E402
    FEATHER_BIAS,
    feather_ring,
    half_thickness,
    is_simple_ring,
    soft_band,
)

W, H = 200, 120
X0, X1, Y0, Y1 = 60.0, 140.0, 20.0, 100.0  # the object's box; its left and right edges ramp


def _box_ring(step: float = 2.0) -> np.ndarray:
    """The box's outline with the filled side left of travel (y down): up the left side, right along the top..."""
    left = [(X0, y) for y in np.arange(Y1, Y0, -step)]
    top = [(x, Y0) for x in np.arange(X0, X1, step)]
    right = [(X1, y) for y in np.arange(Y0, Y1, step)]
    bottom = [(x, Y1) for x in np.arange(X1, X0, -step)]
    return np.array(left + top + right + bottom, dtype=np.float64)


def _alpha(half: float) -> np.ndarray:
    """The box's coverage: sharp top and bottom, left and right edges ramping linearly over 2 * `half` px."""
    x = np.arange(W, dtype=np.float32) + 0.5  # pixel centres
    row = np.clip(np.minimum((x - X0) / (2 * half), (X1 - x) / (2 * half)) + 0.5, 0, 1)
    out = np.zeros((H, W), np.float32)
    out[int(Y0):int(Y1)] = row
    return out


def _mid_sides(ring: np.ndarray) -> np.ndarray:
    """Points on the left or right side, away from the corners."""
    side = (np.isclose(ring[:, 0], X0) | np.isclose(ring[:, 0], X1)) & (ring[:, 1] > Y0 + 10) & (ring[:, 1] < Y1 - 10)
    return side


@pytest.mark.parametrize("half", [2.0, 4.0, 8.0])
def test_soft_band_reads_the_half_width_of_a_linear_ramp(half):
    """Across a linear ramp of half-width w centred on the outline, the band reads w."""
    ring = _box_ring()
    w = soft_band(_alpha(half), ring)
    side = _mid_sides(ring)
    assert np.all(np.abs(w[side] - half) < 0.2), w[side]


def test_soft_edge_is_feathered_over_its_width_from_its_inner_edge():
    """A soft side: feather = band width (less the bias), point moved in by half of it; the sharp top stays."""
    half = 5.0
    alpha = _alpha(half)
    contour = _box_ring()
    side = _mid_sides(contour)
    # the traced ring runs through the boundary pixel centres, half a pixel inside the 0.5 contour
    ring = np.where(np.isclose(contour[:, :1], X0), contour + [0.5, 0.0], contour)
    ring = np.where(np.isclose(contour[:, :1], X1), ring - [0.5, 0.0], ring)
    moved, weights = feather_ring(alpha, half_thickness(alpha >= 0.5), ring, max(W, H))
    feather = weights[side] * max(W, H)
    assert np.all(np.abs(feather - (2 * half - FEATHER_BIAS)) < 0.5), feather  # less the sharp edge's reading
    inward = np.abs(moved[side, 0] - np.where(moved[side, 0] < 100, X0, X1))
    assert np.all(np.abs(inward - feather / 2) < 0.6), inward  # the point sits at the band's inner edge
    top = np.isclose(ring[:, 1], Y0) & (ring[:, 0] > X0 + 15) & (ring[:, 0] < X1 - 15)
    assert np.all(weights[top] == 0) and np.allclose(moved[top], ring[top])  # the sharp top stays put


def test_sharp_edges_and_the_frame_border_get_no_feather():
    """An object cut by the frame's edges (and sharp elsewhere) gets weight 0 everywhere."""
    alpha = np.zeros((H, W), np.float32)
    alpha[:, :80] = 1.0  # cut by the frame's left, top and bottom edges, sharp on the right
    ring = np.array([[0.5, y] for y in range(119, 0, -4)] + [[x, 0.5] for x in range(1, 80, 4)]
                    + [[79.5, y] for y in range(1, 120, 4)] + [[x, 119.5] for x in range(79, 0, -4)], np.float64)
    moved, weights = feather_ring(alpha, half_thickness(alpha >= 0.5), ring, max(W, H))
    assert np.all(weights == 0) and np.allclose(moved, ring)


def test_self_crossing_rings_are_told_apart():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
    bow = np.array([[0, 0], [10, 10], [10, 0], [0, 10]], np.float64)
    assert is_simple_ring(square) and is_simple_ring(_box_ring())
    assert not is_simple_ring(bow)
