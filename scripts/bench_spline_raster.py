"""Time `spline_raster.rasterize_layer` (Use Edited Shape) on a 1920x1080 matte with a hole; print the round-trip IoU."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tam_blender_addon"))
import launch  # noqa: E402 - beside the engine: loads this checkout as track_anything

launch.register_root()
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from track_anything.tam_blender_addon.matte_shapes import extract_rings, iou, rim_compensation  # noqa: E402
from track_anything.tam_blender_addon.session import mask_to_runs  # noqa: E402
from track_anything.tam_blender_addon.spline_raster import (  # noqa: E402
    BezierSpline,
    rasterize_layer,
    to_mask_space,
    vector_handles,
)

W, H = 1920, 1080
m = np.zeros((H, W), np.uint8)
cv2.ellipse(m, (900, 500), (400, 300), 15, 0, 360, 1, -1)
cv2.circle(m, (900, 500), 100, 0, -1)
splines = []
for ring in extract_rings(m.astype(bool), exact_vertices=400):
    co = to_mask_space(rim_compensation(ring.points, W, H), W, H)
    left, right = vector_handles(co, True)
    splines.append(BezierSpline(left, co, right))
n = sum(len(s.co) for s in splines)
best = 1e9
for _ in range(5):
    t = time.perf_counter()
    out = rasterize_layer(splines, W, H)
    best = min(best, time.perf_counter() - t)
runs = mask_to_runs(out)
print(f"1920x1080, {len(splines)} splines, {n} points: rasterise {best*1000:.0f} ms, IoU vs matte {iou(out, m.astype(bool)):.4f}, runs {len(runs)} ints")
