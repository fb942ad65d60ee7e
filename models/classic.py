"""Weight-free classic backend (OpenCV only): GrabCut clicks, optical-flow tracking, homography inpainting.

It lets the whole product run and be tested where no checkpoint exists, and it is
always labelled as what it is (`classic-*` names, ``synthetic = False``: no network).

* ``ClassicSegmenter`` ("classic-grabcut"): box / clicks / coarse mask -> GrabCut.
* ``ClassicPropagator`` ("classic-flow", in ``classic_track``): DIS optical flow warps the
  previous mask; a colour model learned on the keyframes re-anchors it every frame.
* ``ClassicInpainter`` ("classic-inpaint", in ``classic_inpaint``): fill holes from
  neighbouring frames aligned by homography, Telea inpainting for the rest.
"""

from __future__ import annotations

import cv2
import numpy as np

from .classic_inpaint import ClassicInpainter
from .classic_track import ClassicPropagator
from .classic_util import (
    bbox,
    bhattacharyya,
    clean_mask,
    colour_index,
    disk,
    expand,
    grabcut_refine,
    histogram,
    posterior_lut,
)
from .protocols import SegmentResult

__all__ = ["ClassicInpainter", "ClassicPropagator", "ClassicSegmenter"]


class ClassicSegmenter:
    """Clicks / box / coarse mask -> mask with OpenCV GrabCut, run in a crop around the prompt."""

    name = "classic-grabcut"
    synthetic = False

    def __init__(self, iterations: int = 5, click_radius: int | None = None, click_rounds: int = 2,
                 click_grow: float = 0.1, click_slack: float = 0.05, max_crop_side: int = 512) -> None:
        """`iterations`: GrabCut rounds; `click_radius`: seed disk radius (default ~1% of the frame);
        `click_rounds`: box passes after a clicks-only cut (0 = none), each from the last mask's box grown by
        `click_grow` of its size, kept while the score drops by no more than `click_slack`;
        `max_crop_side`: GrabCut runs on the prompt's crop scaled down to this side (large objects, 4K frames).
        """
        self.iterations = int(iterations)
        self.click_radius = click_radius
        self.click_rounds = int(click_rounds)
        self.click_grow = float(click_grow)
        self.click_slack = float(click_slack)
        self.max_crop_side = int(max_crop_side)
        self._frame: np.ndarray | None = None
        self._idx: np.ndarray | None = None
        self._key: str | None = None

    def set_image(self, frame: np.ndarray, key: str | None = None) -> None:
        """Keep the frame (and its quantised colours); nothing to embed for GrabCut."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("ClassicSegmenter.set_image expects an RGB uint8 (H, W, 3) frame")
        if key is not None and key == self._key and self._frame is not None and self._frame.shape == frame.shape:
            return
        self._frame = np.ascontiguousarray(frame)
        self._idx = colour_index(self._frame)
        self._key = key

    def _prompt_mask(self, mask_prompt: np.ndarray, h: int, w: int) -> np.ndarray:
        """A bool (H, W) mask from a bool mask or logits of any size (> 0 = inside)."""
        m = np.asarray(mask_prompt)
        if m.ndim == 3:
            m = m[0]
        m = m > 0 if m.dtype != bool else m
        if m.shape != (h, w):
            m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        return m

    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_prompt: np.ndarray | None = None,
    ) -> SegmentResult:
        """Segment the prompted object on the frame given to set_image; best mask first, with alternatives."""
        if self._frame is None:
            raise RuntimeError("ClassicSegmenter.predict called before set_image")
        h, w = self._frame.shape[:2]
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        lab = np.ones(len(pts), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        if len(lab) != len(pts):
            raise ValueError("points and labels differ in length")
        inside = (pts[:, 0] >= 0) & (pts[:, 0] <= w - 1) & (pts[:, 1] >= 0) & (pts[:, 1] <= h - 1)
        pos, neg = pts[(lab > 0) & inside], pts[(lab <= 0) & inside]  # clicks off the frame say nothing
        if box is not None:
            b = np.asarray(box, np.float64).reshape(4)
            if min(b[0], b[2]) >= w or min(b[1], b[3]) >= h or max(b[0], b[2]) <= 0 or max(b[1], b[3]) <= 0 \
                    or abs(b[2] - b[0]) < 1 or abs(b[3] - b[1]) < 1:
                box = None  # a box that covers no pixel of the frame
        prior = None if mask_prompt is None else self._prompt_mask(mask_prompt, h, w)
        if prior is not None and not prior.any():
            prior = None
        if box is None and len(pos) == 0 and prior is None:
            empty = np.zeros((h, w), bool)
            return SegmentResult(mask=empty, score=0.0)
        if box is None and prior is None and self.click_rounds > 0:
            return self._from_clicks(pos, neg)
        return self._predict_once(pos, neg, box, prior, tight=box is not None)

    def _predict_once(self, pos: np.ndarray, neg: np.ndarray, box: np.ndarray | None,
                      prior: np.ndarray | None, tight: bool = False) -> SegmentResult:
        """One GrabCut pass from validated prompts (clicks inside the frame, a box covering it, a mask).

        `tight`: the box was drawn by the user around the whole object, so the object reaches its four sides.
        """
        img, idx = self._frame, self._idx
        h, w = img.shape[:2]
        r = self.click_radius or max(2, int(round(0.01 * min(h, w))))

        # region of interest and the probable-foreground region
        gc = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if box is not None:
            b = np.asarray(box, np.float64).reshape(4)
            bx0, bx1 = sorted((b[0], b[2]))
            by0, by1 = sorted((b[1], b[3]))
            size = max(bx1 - bx0, by1 - by0)
            roi = expand((bx0, by0, bx1, by1), max(10.0, 0.3 * size), w, h)
            gc[:] = cv2.GC_BGD
            ix0, iy0 = max(0, int(np.floor(bx0))), max(0, int(np.floor(by0)))
            ix1, iy1 = min(w, int(np.ceil(bx1))), min(h, int(np.ceil(by1)))
            gc[iy0:iy1, ix0:ix1] = cv2.GC_PR_FGD
            if prior is not None:
                inside = np.zeros((h, w), bool)
                inside[iy0:iy1, ix0:ix1] = True
                gc[inside & ~prior] = cv2.GC_PR_BGD
        elif prior is not None:
            pb = bbox(prior)
            size = max(pb[2] - pb[0], pb[3] - pb[1])
            roi = expand(pb, max(10.0, 0.3 * size), w, h)
            gc[:] = cv2.GC_BGD
            band = cv2.dilate(prior.astype(np.uint8), disk(max(3, int(0.15 * size)))).astype(bool)
            gc[band] = cv2.GC_PR_BGD
            gc[prior] = cv2.GC_PR_FGD
        else:
            gc[:] = cv2.GC_BGD
            grow = self._grow_from_clicks(idx, pos, neg, r)
            pb = bbox(grow)
            size = max(pb[2] - pb[0], pb[3] - pb[1])
            roi = expand(pb, max(12.0, 0.5 * size), w, h)
            gc[roi[1]:roi[3], roi[0]:roi[2]] = cv2.GC_PR_BGD
            gc[grow] = cv2.GC_PR_FGD
        for (x, y) in pos:
            cv2.circle(gc, (int(round(x)), int(round(y))), r, int(cv2.GC_FGD), -1)
        for (x, y) in neg:
            cv2.circle(gc, (int(round(x)), int(round(y))), r, int(cv2.GC_BGD), -1)

        x0, y0, x1, y1 = roi
        if x1 - x0 < 2 or y1 - y0 < 2:
            return SegmentResult(mask=np.zeros((h, w), bool), score=0.0)
        sub = gc[y0:y1, x0:x1]
        init = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
        cut = self._grabcut(img[y0:y1, x0:x1], sub)
        keep = np.zeros_like(cut)
        for (x, y) in pos:
            xi, yi = int(round(x)) - x0, int(round(y)) - y0
            if 0 <= xi < keep.shape[1] and 0 <= yi < keep.shape[0]:
                keep[yi, xi] = True
        cleaned = clean_mask(cut, keep=keep)
        order_in = [cleaned, cut, init]
        if tight and box is not None:
            whole = self._complete_to_box(cleaned, sub, box, (x0, y0))
            if whole is not None:
                order_in.insert(0, whole)

        cands, scores = [], []
        for m in order_in:
            full = np.zeros((h, w), bool)
            full[y0:y1, x0:x1] = m
            if any(np.array_equal(full, c) for c in cands):
                continue
            cands.append(full)
            scores.append(self._score(idx, full, roi, pos, neg))
        order = np.argsort(scores, kind="stable")[::-1]
        if len(order_in) == 4 and cands:
            order = [0] + [i for i in order if i != 0]  # the whole object first: colour prefers a part of it
        cands = [cands[i] for i in order]
        scores = [scores[i] for i in order]
        return SegmentResult(mask=cands[0], score=scores[0], alternatives=cands[1:], alternative_scores=scores[1:])

    def _grabcut(self, rgb: np.ndarray, gc: np.ndarray) -> np.ndarray:
        """GrabCut on a crop, scaled down when large (its cost grows with the pixels, not the object's detail);
        the cut comes back through a bilinear upsample of the mask, not a staircase of the small grid."""
        h, w = gc.shape
        s = self.max_crop_side / max(h, w) if self.max_crop_side > 0 else 1.0
        if s >= 1.0:
            return grabcut_refine(rgb, gc, self.iterations)
        size = (max(3, int(round(w * s))), max(3, int(round(h * s))))
        small = grabcut_refine(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA),
                               cv2.resize(gc, size, interpolation=cv2.INTER_NEAREST), self.iterations)
        soft = cv2.GaussianBlur(small.astype(np.float32), (0, 0), 0.6)
        return cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5

    def _complete_to_box(self, cut: np.ndarray, gc: np.ndarray, box: np.ndarray,
                         origin: tuple[int, int]) -> np.ndarray | None:
        """The cut made whole inside the user's box, else None.

        GrabCut drops the parts of an object that look like its surroundings (the white stripes of a ball
        on a pale wall). An object is one piece, so a cut in several sizeable pieces is bridged by their
        convex hull; a tight box says where the object ends, so a cut short of a side has its hull stretched
        to the box; the pixels added there are kept unless their colour is clearly the surroundings'.
        """
        if not cut.any():
            return None
        h, w = cut.shape
        ox, oy = origin
        b = np.asarray(box, np.float64).reshape(4)
        bx0, bx1 = sorted((b[0] - ox, b[2] - ox))
        by0, by1 = sorted((b[1] - oy, b[3] - oy))
        bx0, by0, bx1, by1 = max(bx0, 0.0), max(by0, 0.0), min(bx1, float(w)), min(by1, float(h))
        bw, bh = bx1 - bx0, by1 - by0
        if bw < 4 or bh < 4:
            return None
        start = cut
        n, _, stats, _ = cv2.connectedComponentsWithStats(cut.astype(np.uint8), connectivity=8)
        areas = stats[1:, cv2.CC_STAT_AREA]
        if (areas >= 0.08 * areas.max()).sum() >= 2:
            pts = cv2.findNonZero(cut.astype(np.uint8))
            bridge = np.zeros((h, w), np.uint8)
            cv2.fillPoly(bridge, [cv2.convexHull(pts)], 1)
            cut = cut | bridge.astype(bool)
        cx0, cy0, cx1, cy1 = bbox(cut)
        slack = 0.04
        shape = np.zeros((h, w), np.uint8)
        short = cx0 - bx0 > slack * bw or bx1 - cx1 > slack * bw or cy0 - by0 > slack * bh or by1 - cy1 > slack * bh
        if not short and cut is start:
            return None  # one piece reaching every side of the box: nothing says a part is missing
        if short:
            pts = cv2.findNonZero(cut.astype(np.uint8)).reshape(-1, 2).astype(np.float64) + 0.5
            hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2).astype(np.float64)
            # stretch the hull's extent onto the box, side by side
            hull[:, 0] = bx0 + (hull[:, 0] - cx0) * bw / max(cx1 - cx0, 1.0)
            hull[:, 1] = by0 + (hull[:, 1] - cy0) * bh / max(cy1 - cy0, 1.0)
            cv2.fillPoly(shape, [np.round(hull * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        if self._solidity(cut) > 0.85:
            # a compact object fills the ellipse inscribed in its tight box too (caps cut off diagonally)
            centre = (int(round((bx0 + bx1) * 8)), int(round((by0 + by1) * 8)))
            axes = (int(round(bw * 8 * 0.97)), int(round(bh * 8 * 0.97)))
            cv2.ellipse(shape, centre, axes, 0.0, 0.0, 360.0, 1, -1, lineType=cv2.LINE_8, shift=4)
        add = shape.astype(bool) & ~cut
        if not add.any():
            return None if cut is start else clean_mask(cut)
        idx = self._idx[oy:oy + h, ox:ox + w]
        outside = gc == cv2.GC_BGD
        if outside.sum() >= 16:
            p = posterior_lut(histogram(idx, cut), histogram(idx, outside))[idx]
            add &= p > 0.2
        return clean_mask(cut | add)

    @staticmethod
    def _solidity(mask: np.ndarray) -> float:
        """Area over convex-hull area (1 = convex) of a bool mask."""
        pts = cv2.findNonZero(mask.astype(np.uint8))
        if pts is None or len(pts) < 3:
            return 0.0
        hull_area = cv2.contourArea(cv2.convexHull(pts))
        return float(mask.sum()) / max(hull_area, 1.0)

    def _from_clicks(self, pos: np.ndarray, neg: np.ndarray) -> SegmentResult:
        """Clicks only: a first cut from colour growth, then GrabCut again from its (slightly grown) box.

        Growth from a small seed disk tends to stop at the first texture edge of the object; the box pass
        lets GrabCut learn the whole object's colours and usually recovers the rest.
        """
        first = self._predict_once(pos, neg, None, None)
        best = first
        h, w = self._frame.shape[:2]
        for k in range(self.click_rounds):
            b = bbox(best.mask)
            if b is None:
                break
            size = max(b[2] - b[0], b[3] - b[1])
            grown = expand(b, max(3.0, self.click_grow * size), w, h)
            nxt = self._predict_once(pos, neg, np.array(grown, np.float64), None)
            if not nxt.mask.any():
                break
            if k == 0:
                # a part of one colour scores high by itself, so the first box pass is judged by whether
                # it keeps that part and still separates from its surroundings
                kept = float((nxt.mask & best.mask).sum()) / max(float(best.mask.sum()), 1.0)
                # ... or turns scattered parts (the stripes of one colour) into one compact body: the parts
                # between them look like the surroundings, so the colour score drops although the cut is right
                whole = self._solidity(best.mask) < 0.7 <= 0.85 <= self._solidity(nxt.mask)
                if kept < 0.85 or (nxt.score < 0.5 * best.score and not whole):
                    break
            elif nxt.score < best.score - self.click_slack:
                break
            if np.array_equal(nxt.mask, best.mask):
                break
            best = nxt
        if best is first:
            return first
        alts = [first.mask] + [a for a in first.alternatives if not np.array_equal(a, best.mask)]
        scores = [first.score] + list(first.alternative_scores)[:len(alts) - 1]
        return SegmentResult(mask=best.mask, score=best.score, alternatives=alts, alternative_scores=scores)

    def _grow_from_clicks(self, idx: np.ndarray, pos: np.ndarray, neg: np.ndarray, r: int) -> np.ndarray:
        """Probable foreground around positive clicks: colour-similar pixels connected to a click."""
        h, w = idx.shape
        reach = int(max(20, 0.15 * min(h, w)))
        seeds = np.zeros((h, w), bool)
        for (x, y) in pos:
            cv2.circle(seeds.view(np.uint8), (int(round(x)), int(round(y))), max(r, 5), 1, -1)
        near = cv2.dilate(seeds.view(np.uint8), disk(reach)).astype(bool)
        fg = histogram(idx, seeds)
        ring = near & ~cv2.dilate(seeds.view(np.uint8), disk(max(r, 5) + 2)).astype(bool)
        if neg.size:
            negm = np.zeros((h, w), np.uint8)
            for (x, y) in neg:
                cv2.circle(negm, (int(round(x)), int(round(y))), max(r, 5), 1, -1)
            ring |= negm.astype(bool)
        bg = histogram(idx, ring) if ring.any() else np.full_like(fg, 1.0 / fg.size)
        post = posterior_lut(fg, 0.5 * bg + 0.5 / fg.size)[idx]
        similar = (post > 0.6) & near
        similar = cv2.morphologyEx(similar.astype(np.uint8), cv2.MORPH_OPEN, disk(1)).astype(bool) | seeds
        n, lab = cv2.connectedComponents(similar.astype(np.uint8), connectivity=8)
        hit = np.unique(lab[seeds])
        return np.isin(lab, hit[hit > 0])

    @staticmethod
    def _score(idx: np.ndarray, mask: np.ndarray, roi: tuple[int, int, int, int], pos: np.ndarray,
               neg: np.ndarray) -> float:
        """0..1 quality: colour separation between the mask and the rest of the crop, minus broken clicks."""
        x0, y0, x1, y1 = roi
        m = mask[y0:y1, x0:x1]
        if m.sum() < 3 or (~m).sum() < 3:
            return 0.0
        sub = idx[y0:y1, x0:x1]
        sep = 1.0 - bhattacharyya(histogram(sub, m), histogram(sub, ~m))
        bad = 0
        for (x, y) in pos:
            bad += not mask[min(max(int(round(y)), 0), mask.shape[0] - 1), min(max(int(round(x)), 0), mask.shape[1] - 1)]
        for (x, y) in neg:
            bad += bool(mask[min(max(int(round(y)), 0), mask.shape[0] - 1), min(max(int(round(x)), 0), mask.shape[1] - 1)])
        total = max(len(pos) + len(neg), 1)
        return float(np.clip(sep * (1.0 - bad / total), 0.0, 1.0))
