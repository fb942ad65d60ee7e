"""The Refiner: a segmenter run on the tracker's coarse mask (Track Anything's step 3).

Positive points sit at the most interior, most confident pixels of the object;
negative points sit just outside it, on background or on neighbouring objects, where
the tracker is sure the object is not. The refined mask is kept only when it agrees
with the coarse one, so a SAM answer that jumps to another object is thrown away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .protocols import Segmenter, SegmentResult, TrackResult

MAX_POSITIVE = 3
MAX_NEGATIVE = 4
MIN_IOU = 0.5


def derive_prompts(
    coarse: np.ndarray, labels: np.ndarray, prob: np.ndarray | None = None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Points (N, 2) x, y and labels (N,) 1/0 for SAM from one object's coarse mask."""
    import cv2

    m = coarse.astype(np.uint8)
    if m.sum() < 4:
        return None, None
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    score = dist / max(float(dist.max()), 1e-6)
    if prob is not None:
        score = score * np.clip(prob, 0.0, 1.0)
    pos: list[tuple[int, int]] = []
    s = score.copy()
    radius = max(3, int(dist.max()))
    for _ in range(MAX_POSITIVE):
        y, x = np.unravel_index(int(np.argmax(s)), s.shape)
        if s[y, x] <= 0.25 * (score.max() or 1.0):
            break
        pos.append((int(x), int(y)))
        cv2.circle(s, (int(x), int(y)), radius, 0.0, -1)
    if not pos:
        return None, None
    # negatives: on a ring just outside the object, at pixels of confident background
    # or of other objects, spread around the ring
    h, w = m.shape
    size = int(np.sqrt(m.sum()))
    k = max(3, size // 3)
    ring = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))) > 0
    ring &= ~coarse.astype(bool)
    if prob is not None:
        ring &= prob < 0.1
    ys, xs = np.nonzero(ring)
    neg: list[tuple[int, int]] = []
    if len(xs):
        cy, cx = np.mean(np.nonzero(m), axis=1)
        ang = np.arctan2(ys - cy, xs - cx)
        for a in np.linspace(-np.pi, np.pi, MAX_NEGATIVE, endpoint=False):
            d = np.abs(np.angle(np.exp(1j * (ang - a))))
            i = int(np.argmin(d + 1e-3 * np.hypot(ys - cy, xs - cx) / max(h, w)))
            if d[i] < np.pi / MAX_NEGATIVE:
                neg.append((int(xs[i]), int(ys[i])))
    pts = np.array(pos + neg, np.float32)
    lab = np.array([1] * len(pos) + [0] * len(neg), np.int32)
    return pts, lab


def masks_consistent(coarse: np.ndarray, refined: np.ndarray, min_iou: float = MIN_IOU) -> bool:
    """True when the refined mask is the same object: IoU with the coarse mask >= min_iou."""
    a = coarse.astype(bool)
    b = refined.astype(bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return False
    return float(np.logical_and(a, b).sum()) / float(union) >= min_iou


class PromptRefiner:
    """Refiner over any Segmenter: derived point prompts plus the coarse mask as mask prompt."""

    def __init__(self, segmenter: Segmenter, min_iou: float = MIN_IOU) -> None:
        self.segmenter = segmenter
        self.name = f"prompt-refiner({segmenter.name})"
        self.synthetic = bool(getattr(segmenter, "synthetic", False))
        self.min_iou = min_iou

    def refine(self, frame: np.ndarray, track: TrackResult, objects: Sequence[int],
               key: str | None = None) -> dict[int, SegmentResult]:
        """The refined masks of `objects` on `frame` that agree with the tracker's (others are left out)."""
        self.segmenter.set_image(frame, key=key)
        out: dict[int, SegmentResult] = {}
        for o in objects:
            coarse = track.labels == o
            points, plabels = derive_prompts(coarse, track.labels, track.prob(o))
            if points is None:
                continue
            res = self.segmenter.predict(points=points, labels=plabels, mask_prompt=coarse)
            if masks_consistent(coarse, np.asarray(res.mask, bool), self.min_iou):
                out[o] = res
        return out
