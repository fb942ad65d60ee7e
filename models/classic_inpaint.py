"""Classic video inpainting: copy hidden background from neighbouring frames, Telea for the rest.

For each frame, the nearest frames (in the order of distance) are aligned to it by a
homography fitted with ORB features + RANSAC on the unmasked pixels only; their pixels
that are not masked themselves fill the hole. What no neighbour shows is filled by
``cv2.inpaint`` (Telea). Frames are read through ``get_frame`` into a bounded window, so
memory does not grow with the clip; pixels outside the hole are returned bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np

from .classic_util import disk


class ClassicInpainter:
    """Homography-aligned neighbour frames fill the holes; Telea inpaints what none of them shows."""

    name = "classic-inpaint"
    synthetic = False

    def __init__(self, radius: int = 12, max_refs: int = 8, min_inliers: int = 15, telea_radius: int = 4,
                 features: int = 1500) -> None:
        """`radius`: how many frames either side may serve as references (the window is 2*radius+1 frames);
        `max_refs`: aligned references used per frame at most; `min_inliers`: RANSAC inliers needed to
        trust an alignment; `telea_radius`: cv2.inpaint radius; `features`: ORB keypoints per frame.
        """
        self.radius = max(0, int(radius))
        self.max_refs = max(0, int(max_refs))
        self.min_inliers = int(min_inliers)
        self.telea_radius = int(telea_radius)
        self._orb = cv2.ORB_create(nfeatures=int(features), fastThreshold=10)
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    def inpaint(
        self,
        get_frame: Callable[[int], np.ndarray],
        get_mask: Callable[[int], np.ndarray],
        indices: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, filled frame) for every index in order; references come from `indices` only."""
        order = [int(i) for i in indices]
        cache: dict[int, tuple[np.ndarray, np.ndarray, tuple | None]] = {}

        def load(pos: int):
            i = order[pos]
            if i not in cache:
                frame = np.ascontiguousarray(get_frame(i))
                mask = np.asarray(get_mask(i)).astype(bool)
                if mask.shape != frame.shape[:2]:
                    raise ValueError(f"mask of frame {i} is {mask.shape}, frame is {frame.shape[:2]}")
                cache[i] = (frame, mask, None)
            return cache[i]

        def features(i: int):
            frame, mask, feats = cache[i]
            if feats is None:
                gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
                keep = np.where(cv2.dilate(mask.astype(np.uint8), disk(3)) > 0, 0, 255).astype(np.uint8)
                kps, desc = self._orb.detectAndCompute(gray, keep)
                pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
                feats = (pts, desc)
                cache[i] = (frame, mask, feats)
            return feats

        for pos, i in enumerate(order):
            if should_stop is not None and should_stop():
                return
            lo, hi = max(0, pos - self.radius), min(len(order) - 1, pos + self.radius)
            for k in list(cache):
                if k not in order[lo:hi + 1]:
                    del cache[k]
            frame, mask, _ = load(pos)
            if not mask.any():
                yield i, frame.copy()
                continue
            hole = mask.copy()
            filled = frame.copy()
            used = 0
            near = sorted(range(lo, hi + 1), key=lambda p: (abs(p - pos), p))
            for p in near:
                if p == pos or used >= self.max_refs or not hole.any():
                    continue
                j = order[p]
                ref, ref_mask, _ = load(p)
                if ref.shape != frame.shape:
                    continue
                hmat = self._align(features(j), features(i))
                if hmat is None:
                    continue
                h, w = mask.shape
                warped = cv2.warpPerspective(ref, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                valid = cv2.warpPerspective(np.where(ref_mask, 0, 255).astype(np.uint8), hmat, (w, h),
                                            flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                valid = cv2.erode(valid, disk(1)) > 0
                take = hole & valid
                if take.any():
                    filled[take] = warped[take]
                    hole &= ~take
                    used += 1
            if hole.any():
                rest = cv2.inpaint(filled, hole.astype(np.uint8), self.telea_radius, cv2.INPAINT_TELEA)
                filled[hole] = rest[hole]
            out = frame.copy()
            out[mask] = filled[mask]
            yield i, out

    def _align(self, src, dst) -> np.ndarray | None:
        """Homography taking the reference frame's pixels onto the target frame, or None if unreliable."""
        (sp, sd), (dp, dd) = src, dst
        if sd is None or dd is None or len(sp) < self.min_inliers or len(dp) < self.min_inliers:
            return None
        matches = self._matcher.match(sd, dd)
        if len(matches) < self.min_inliers:
            return None
        a = np.float32([sp[m.queryIdx] for m in matches])
        b = np.float32([dp[m.trainIdx] for m in matches])
        hmat, inl = cv2.findHomography(a, b, cv2.RANSAC, 2.0, maxIters=2000, confidence=0.995)
        if hmat is None or inl is None or int(inl.sum()) < self.min_inliers:
            return None
        return hmat
