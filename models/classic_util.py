"""Shared pieces of the weight-free classic backend: colour models, mask clean-up, boxes.

Colours are quantised to 16 levels per RGB channel (4096 bins). A colour model is a
pair of smoothed histograms (object / surroundings) turned into a lookup table of
P(object | colour), which can be applied to any image region with one fancy index.
"""

from __future__ import annotations

import cv2
import numpy as np

LEVELS = 16
SHIFT = 4  # 256 / LEVELS == 2 ** SHIFT
NBINS = LEVELS ** 3


def colour_index(rgb: np.ndarray) -> np.ndarray:
    """Quantised colour bin (int32, 0..4095) of every pixel of an RGB uint8 image."""
    q = (rgb >> SHIFT).astype(np.int32)
    return (q[..., 0] << (2 * SHIFT)) | (q[..., 1] << SHIFT) | q[..., 2]


def _smooth3(h: np.ndarray, passes: int = 2) -> np.ndarray:
    """Blur a LEVELS^3 histogram with a [1, 2, 1] kernel along each axis so sparse samples generalise."""
    c = h.reshape(LEVELS, LEVELS, LEVELS).astype(np.float64)
    for _ in range(passes):
        for ax in range(3):
            c = np.moveaxis(c, ax, 0)
            out = 0.5 * c
            out[1:] += 0.25 * c[:-1]
            out[:-1] += 0.25 * c[1:]
            c = np.moveaxis(out, 0, ax)
    return c.reshape(-1)


def histogram(idx: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Normalised, smoothed colour histogram (float64, NBINS) of the bins `idx` where `mask` is set."""
    v = idx[mask] if mask is not None else idx.reshape(-1)
    h = np.bincount(v.reshape(-1), minlength=NBINS).astype(np.float64)
    total = h.sum()
    if total <= 0:
        return np.zeros(NBINS)
    h = _smooth3(h / total)
    return h / max(h.sum(), 1e-12)


def posterior_lut(fg: np.ndarray, bg: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """P(object | colour bin) as float32 from object and background histograms (equal priors)."""
    return ((fg + eps) / (fg + bg + 2 * eps)).astype(np.float32)


def bhattacharyya(a: np.ndarray, b: np.ndarray) -> float:
    """Similarity (0..1) of two normalised histograms."""
    return float(np.sqrt(np.clip(a, 0, None) * np.clip(b, 0, None)).sum())


def logit(p: np.ndarray, lim: float = 6.0) -> np.ndarray:
    """Clipped log-odds of probabilities."""
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.clip(np.log(p / (1 - p)), -lim, lim).astype(np.float32)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive bounding box of a bool mask, or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def expand(box: tuple[float, float, float, float], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box grown by `margin` pixels on every side, clipped to the frame (ints, exclusive end)."""
    x0, y0, x1, y1 = box
    return (max(0, int(np.floor(x0 - margin))), max(0, int(np.floor(y0 - margin))),
            min(width, int(np.ceil(x1 + margin))), min(height, int(np.ceil(y1 + margin))))


def disk(radius: int) -> np.ndarray:
    """Elliptic structuring element of the given radius."""
    r = max(int(radius), 0)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def clean_mask(mask: np.ndarray, keep: np.ndarray | None = None, min_frac: float = 0.08,
               hole_frac: float = 0.05, min_px: int = 6) -> np.ndarray:
    """Drop small islands and fill small holes; islands touching `keep` (bool) are always kept."""
    if mask.size == 0 or not mask.any():
        return mask.astype(bool)  # (OpenCV's labelling crashes on empty arrays)
    m = mask.astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n <= 1:
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    biggest = int(areas.max())
    good = areas >= max(min_px, min_frac * biggest)
    if keep is not None and keep.any():
        touched = np.unique(lab[keep & (lab > 0)])
        good[touched[touched > 0] - 1] = True
    out = good[lab - 1] & (lab > 0)
    inv = (~out).astype(np.uint8)
    n2, lab2, stats2, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    if n2 > 1:
        h, w = out.shape
        area = int(out.sum())
        x, y, bw, bh, a = (stats2[1:, k] for k in range(5))
        inner = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h) & (a <= hole_frac * max(area, 1))
        if inner.any():
            fill = np.zeros(n2, bool)
            fill[1:] = inner
            out |= fill[lab2]
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    u = np.logical_or(a, b).sum()
    if u == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / u)


def grabcut_refine(rgb: np.ndarray, gc_mask: np.ndarray, iterations: int) -> np.ndarray:
    """Run OpenCV GrabCut from an initial GC_* label mask; returns the bool foreground (unchanged if degenerate)."""
    m = gc_mask.astype(np.uint8).copy()
    fg = (m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)
    bg = (m == cv2.GC_BGD) | (m == cv2.GC_PR_BGD)
    if fg.sum() < 2 or bg.sum() < 2 or min(m.shape) < 3:
        return fg
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(np.ascontiguousarray(rgb), m, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return fg
    return (m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)
