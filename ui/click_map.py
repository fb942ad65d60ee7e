"""Where a click in the sequencer preview lands in the source image (plain math, no bpy).

The preview draws the render canvas centred on the view origin, one view unit per
render pixel. (The Movie Clip Editor's main region is simpler: its view spans the
clip's frame from (0, 0) at the bottom-left to (W * aspect_x, H * aspect_y), see
`placement_from_clip`.) A strip's image is first fitted into the canvas (Fit, Fill, Stretch or
Original size), then flipped, scaled and rotated about its origin, then offset. These
functions invert that chain so a click becomes source pixels (origin top-left, y down),
and run it forwards for drawing masks and points over the preview.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Placement:
    """How a strip's source image sits in the preview (the strip's fit and transform)."""

    src_w: int
    src_h: int
    render_w: int
    render_h: int
    fit: str = "FIT"  # FIT | FILL | STRETCH | ORIGINAL
    offset_x: float = 0.0
    offset_y: float = 0.0
    scale_x: float = 1.0
    scale_y: float = 1.0
    rotation: float = 0.0  # radians, counter-clockwise
    origin: tuple[float, float] = (0.5, 0.5)  # pivot, fractions of the image (x right, y up)
    flip_x: bool = False
    flip_y: bool = False

    def fit_scale(self) -> tuple[float, float]:
        """Scale from source pixels to canvas pixels chosen by the fit method."""
        sx, sy = self.render_w / self.src_w, self.render_h / self.src_h
        if self.fit == "FIT":
            return (min(sx, sy),) * 2
        if self.fit == "FILL":
            return (max(sx, sy),) * 2
        if self.fit == "STRETCH":
            return sx, sy
        return 1.0, 1.0

    def _pivot(self) -> tuple[float, float]:
        """The transform's pivot in fitted-image coordinates (centre = 0, y up)."""
        fx, fy = self.fit_scale()
        return (self.origin[0] - 0.5) * self.src_w * fx, (self.origin[1] - 0.5) * self.src_h * fy


def source_to_view(p: Placement, x: float, y: float) -> tuple[float, float]:
    """Source pixel (top-left origin, y down) -> preview view coordinates."""
    fx, fy = p.fit_scale()
    lx = (x - p.src_w / 2.0) * fx
    ly = (p.src_h / 2.0 - y) * fy
    if p.flip_x:
        lx = -lx
    if p.flip_y:
        ly = -ly
    px, py = p._pivot()
    dx, dy = (lx - px) * p.scale_x, (ly - py) * p.scale_y
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    return c * dx - s * dy + px + p.offset_x, s * dx + c * dy + py + p.offset_y


def view_to_source(p: Placement, vx: float, vy: float) -> tuple[float, float]:
    """Preview view coordinates -> source pixel (top-left origin, y down); inverse of `source_to_view`."""
    if p.scale_x == 0 or p.scale_y == 0:
        raise ValueError("the strip is scaled to zero")
    px, py = p._pivot()
    qx, qy = vx - p.offset_x - px, vy - p.offset_y - py
    c, s = math.cos(p.rotation), math.sin(p.rotation)
    dx, dy = c * qx + s * qy, -s * qx + c * qy
    lx, ly = dx / p.scale_x + px, dy / p.scale_y + py
    if p.flip_x:
        lx = -lx
    if p.flip_y:
        ly = -ly
    fx, fy = p.fit_scale()
    return lx / fx + p.src_w / 2.0, p.src_h / 2.0 - ly / fy


def region_to_view(rx: float, ry: float, region_w: int, region_h: int,
                   view_rect: tuple[float, float, float, float]) -> tuple[float, float]:
    """Region pixel (bottom-left origin) -> view coordinates, given the visible view rectangle.

    `view_rect` is (xmin, ymin, xmax, ymax): the view coordinates at the region's
    bottom-left and top-right corners (what View2D calls ``cur``).
    """
    xmin, ymin, xmax, ymax = view_rect
    return xmin + rx / region_w * (xmax - xmin), ymin + ry / region_h * (ymax - ymin)


def region_to_source(rx: float, ry: float, region_w: int, region_h: int,
                     view_rect: tuple[float, float, float, float], p: Placement) -> tuple[float, float]:
    """Region pixel -> source pixel: the whole chain a click in the preview goes through."""
    return view_to_source(p, *region_to_view(rx, ry, region_w, region_h, view_rect))


def inside_source(p: Placement, x: float, y: float) -> bool:
    """True if the source pixel lies on the image."""
    return 0.0 <= x < p.src_w and 0.0 <= y < p.src_h


def placement_from_strip(strip, scene, src_w: int, src_h: int) -> Placement:
    """The Placement of a bpy strip (duck-typed: reads transform, fit method and flips)."""
    t = getattr(strip, "transform", None)
    origin = tuple(getattr(t, "origin", (0.5, 0.5))) if t is not None else (0.5, 0.5)
    return Placement(
        src_w=src_w, src_h=src_h,
        render_w=int(scene.render.resolution_x), render_h=int(scene.render.resolution_y),
        fit=str(getattr(strip, "fit_method", "FIT")),
        offset_x=float(getattr(t, "offset_x", 0.0)), offset_y=float(getattr(t, "offset_y", 0.0)),
        scale_x=float(getattr(t, "scale_x", 1.0)), scale_y=float(getattr(t, "scale_y", 1.0)),
        rotation=float(getattr(t, "rotation", 0.0)), origin=(float(origin[0]), float(origin[1])),
        flip_x=bool(getattr(strip, "use_flip_x", False)), flip_y=bool(getattr(strip, "use_flip_y", False)),
    )


def clip_view_aspect(display_aspect: tuple[float, float], pixel_aspect: float = 1.0) -> tuple[float, float]:
    """View units per clip pixel (x, y) in the Movie Clip Editor: the display aspect, the smaller one 1.

    Blender's ``ED_space_clip_get_aspect``: ``aspy = aspect_y / aspect_x / pixel_aspect``
    with ``aspx = 1``, then both divided by the smaller.
    """
    ax, ay = 1.0, float(display_aspect[1]) / float(display_aspect[0]) / float(pixel_aspect or 1.0)
    return (ax / ay, 1.0) if ax >= ay else (1.0, ay / ax)


def placement_from_clip(clip, src_w: int, src_h: int) -> Placement:
    """The Placement of a movie clip in the Movie Clip Editor's main region (duck-typed clip).

    The editor's View2D puts the frame's bottom-left corner at view (0, 0) and stretches
    it by the display aspect, so clip pixel (x, y) sits at view (x * ax, (H - y) * ay).
    """
    pixel_aspect = float(getattr(getattr(getattr(clip, "tracking", None), "camera", None), "pixel_aspect", 1.0))
    ax, ay = clip_view_aspect(tuple(getattr(clip, "display_aspect", (1.0, 1.0))), pixel_aspect)
    w, h = src_w * ax, src_h * ay
    return Placement(src_w=src_w, src_h=src_h, render_w=round(w), render_h=round(h), fit="STRETCH",
                     offset_x=w / 2.0, offset_y=h / 2.0, scale_x=w / round(w) if round(w) else 1.0,
                     scale_y=h / round(h) if round(h) else 1.0)
