"""The click tool's mapping from preview region pixels to source pixels (plain math, no bpy)."""

from __future__ import annotations

import math

import pytest

from track_anything.ui.click_map import (
    Placement,
    inside_source,
    region_to_source,
    region_to_view,
    source_to_view,
    view_to_source,
)


def test_fit_letterboxes_a_wide_source_in_a_square_canvas():
    """FIT scales by the smaller ratio; the image centre is the view origin; y flips."""
    p = Placement(src_w=400, src_h=200, render_w=200, render_h=200, fit="FIT")
    assert source_to_view(p, 200, 100) == pytest.approx((0.0, 0.0))
    assert source_to_view(p, 0, 0) == pytest.approx((-100.0, 50.0))  # top-left is up-left
    assert source_to_view(p, 400, 200) == pytest.approx((100.0, -50.0))
    assert view_to_source(p, 0.0, 50.0) == pytest.approx((200.0, 0.0))
    assert not inside_source(p, *view_to_source(p, 0.0, 80.0))  # in the letterbox bar


@pytest.mark.parametrize("fit", ["FIT", "FILL", "STRETCH", "ORIGINAL"])
def test_view_and_source_round_trip_under_any_transform(fit):
    """Offset, scale, rotation about a moved origin and flips invert exactly."""
    p = Placement(src_w=320, src_h=180, render_w=1920, render_h=1080, fit=fit, offset_x=37.0, offset_y=-12.5,
                  scale_x=1.3, scale_y=0.8, rotation=math.radians(25), origin=(0.3, 0.7), flip_x=True)
    for x, y in [(0, 0), (319.5, 179.5), (100.25, 42.0), (160, 90)]:
        assert view_to_source(p, *source_to_view(p, x, y)) == pytest.approx((x, y), abs=1e-9)


def test_rotation_turns_counter_clockwise_about_the_origin():
    """90 degrees about the centre: the right edge's midpoint goes to the top."""
    p = Placement(src_w=100, src_h=100, render_w=100, render_h=100, rotation=math.pi / 2)
    assert source_to_view(p, 100, 50) == pytest.approx((0.0, 50.0), abs=1e-9)


def test_offset_moves_the_image_and_scale_grows_it_from_its_origin():
    """A 10 px offset shifts clicks; scale 2 about the bottom-left corner keeps that corner."""
    p = Placement(src_w=100, src_h=100, render_w=100, render_h=100, offset_x=10, offset_y=0)
    assert view_to_source(p, 10, 0) == pytest.approx((50.0, 50.0))
    q = Placement(src_w=100, src_h=100, render_w=100, render_h=100, scale_x=2, scale_y=2, origin=(0.0, 0.0))
    assert source_to_view(q, 0, 100) == pytest.approx((-50.0, -50.0))  # bottom-left stays
    assert source_to_view(q, 100, 0) == pytest.approx((150.0, 150.0))


def test_region_pixels_go_through_the_visible_view_rectangle():
    """Region (0,0) is the view rect's bottom-left; a zoomed-in view maps clicks accordingly."""
    assert region_to_view(0, 0, 400, 300, (-200, -150, 200, 150)) == (-200, -150)
    assert region_to_view(400, 300, 400, 300, (-200, -150, 200, 150)) == (200, 150)
    p = Placement(src_w=1920, src_h=1080, render_w=1920, render_h=1080)
    # the region shows view x -480..480, y -270..270 (zoomed 2x around the centre)
    rect = (-480.0, -270.0, 480.0, 270.0)
    assert region_to_source(200, 150, 400, 300, rect, p) == pytest.approx((960.0, 540.0))
    assert region_to_source(0, 300, 400, 300, rect, p) == pytest.approx((480.0, 270.0))
