"""Classic video inpainting: copy hidden background from other frames, Telea for the rest.

For each frame, candidate reference frames are visited nearest first: every frame within
``radius`` plus every ``stride``-th frame within ``far`` (objects that move slowly hide
the same pixels for many frames). Each reference is aligned to the target by a
homography chained from those of consecutive frames, each fitted with RANSAC to corner tracks (Shi-Tomasi corners followed by pyramidal
Lucas-Kanade, checked forwards and backwards) on unmasked pixels only; its own unmasked
pixels fill what is still missing. What no reference shows is filled by
``cv2.inpaint`` (Telea). Frames are read through ``get_frame`` into a bounded cache
(the dense window plus the sparse grid frames), so memory does not grow with the clip;
pixels outside the hole are returned bit-exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from .classic_util import disk

_LK = {"winSize": (15, 15), "maxLevel": 3, "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}


def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 homography (OpenCV LU; numpy's LAPACK call is slow for tiny matrices)."""
    ok, inv = cv2.invert(np.asarray(m, np.float64), flags=cv2.DECOMP_LU)
    return inv if ok else np.linalg.pinv(m)


class _Frame:
    """One cached frame: pixels, hole mask, and (lazily) its grey image and corners."""

    def __init__(self, frame: np.ndarray, mask: np.ndarray) -> None:
        self.frame, self.mask = frame, mask
        self.pyr: np.ndarray | None = None  # grey image LK tracks on
        self.pts: np.ndarray | None = None
        self._valid: np.ndarray | None = None

    def valid(self) -> np.ndarray:
        """uint8 map of the pixels this frame can lend (255 outside its hole, shrunk by one pixel)."""
        if self._valid is None:
            self._valid = cv2.erode(np.where(self.mask, 0, 255).astype(np.uint8), disk(1))
        return self._valid


class ClassicInpainter:
    """Homography-aligned reference frames fill the holes; Telea inpaints what none of them shows."""

    name = "classic-inpaint"
    synthetic = False

    def __init__(self, radius: int = 6, far: int = 48, stride: int = 4, min_inliers: int = 15,
                 telea_radius: int = 4, features: int = 200) -> None:
        """`radius`: every frame this close may serve as a reference; `far`, `stride`: beyond that, every
        `stride`-th frame up to `far` away (frames are read ahead up to `far` to chain the
        alignments of consecutive frames); `min_inliers`: RANSAC inliers needed to trust an alignment; `telea_radius`: cv2.inpaint radius;
        `features`: corners tracked per frame.
        """
        self.radius = max(0, int(radius))
        self.far = max(self.radius, int(far))
        self.stride = max(1, int(stride))
        self.min_inliers = int(min_inliers)
        self.telea_radius = int(telea_radius)
        self.features = int(features)

    def _candidates(self, pos: int, n: int) -> list[int]:
        """Reference positions for the frame at list position `pos`, nearest first."""
        near = set(range(max(0, pos - self.radius), min(n, pos + self.radius + 1)))
        grid = set(range(0, n, self.stride))
        cand = [p for p in near | {g for g in grid if abs(g - pos) <= self.far} if p != pos]
        return sorted(cand, key=lambda p: (abs(p - pos), p))

    def inpaint(
        self,
        get_frame: Callable[[int], np.ndarray],
        get_mask: Callable[[int], np.ndarray],
        indices: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, filled frame) for every index in order; references come from `indices` only."""
        order = [int(i) for i in indices]
        n = len(order)
        cache: dict[int, _Frame] = {}
        # chain[p] = (segment, A_p): A_p maps frame p's pixels into the first frame of its segment;
        # consecutive frames are aligned once, H(j -> i) = inv(A_i) @ A_j within a segment.
        chain: dict[int, tuple[int, np.ndarray]] = {}
        state = {"next": 0, "seg": 0}

        def load(p: int) -> _Frame:
            if p not in cache:
                i = order[p]
                frame = np.ascontiguousarray(get_frame(i))
                mask = np.asarray(get_mask(i)).astype(bool)
                if mask.shape != frame.shape[:2]:
                    raise ValueError(f"mask of frame {i} is {mask.shape}, frame is {frame.shape[:2]}")
                cache[p] = _Frame(frame, mask)
            return cache[p]

        def extend_chain(upto: int) -> None:
            while state["next"] <= min(upto, n - 1):
                p = state["next"]
                cur = load(p)
                hmat = None
                if p > 0 and (p - 1) in chain:
                    prev = load(p - 1)
                    if prev.frame.shape == cur.frame.shape:
                        hmat = self._align(prev, cur)
                if hmat is None:
                    state["seg"] += 1
                    chain[p] = (state["seg"], np.eye(3))
                else:
                    a = chain[p - 1][1] @ _inv3(hmat)
                    chain[p] = (state["seg"], a / a[2, 2])
                state["next"] = p + 1

        for pos, i in enumerate(order):
            if should_stop is not None and should_stop():
                return
            cands = self._candidates(pos, n)
            extend_chain(pos + self.far)
            wanted = set(cands) | {pos, state["next"] - 1}
            for p in [p for p in cache if p not in wanted]:
                del cache[p]
            for p in [p for p in chain if p < pos - self.far - 1]:
                del chain[p]
            cur = load(pos)
            if not cur.mask.any():
                yield i, cur.frame.copy()
                continue
            seg = chain[pos][0]
            refs = ((load(p), chain[p][1]) for p in cands if chain[p][0] == seg)  # loaded only while needed
            yield i, self._fill(cur, chain[pos][1], refs)

    def _fill(self, cur: _Frame, a_cur: np.ndarray, refs: Iterable[tuple[_Frame, np.ndarray]]) -> np.ndarray:
        """`cur` with its hole filled from aligned references (nearest first), then Telea for the rest.

        `a_cur` and each reference's matrix map their pixels into the first frame of their segment.
        `refs` may be lazy: it is read only while part of the hole is still unfilled.
        """
        frame, mask = cur.frame, cur.mask
        x, y, bw, bh = cv2.boundingRect(mask.view(np.uint8))
        hole = mask[y:y + bh, x:x + bw].copy()
        filled = frame[y:y + bh, x:x + bw].copy()
        to_box = np.array([[1, 0, -x], [0, 1, -y], [0, 0, 1]], np.float64) @ _inv3(a_cur)
        for ref, a_ref in refs:
            if not hole.any():
                break
            if ref.frame.shape != frame.shape:
                continue
            hmat = to_box @ a_ref
            valid = cv2.warpPerspective(ref.valid(), hmat, (bw, bh), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            take = hole & (valid > 0)
            if not take.any():
                continue
            warped = cv2.warpPerspective(ref.frame, hmat, (bw, bh), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_REPLICATE)
            filled[take] = warped[take]
            hole &= ~take
        if hole.any():
            self._telea(frame, filled, hole, x, y)
        out = frame.copy()
        box = out[y:y + bh, x:x + bw]
        inside = mask[y:y + bh, x:x + bw]
        box[inside] = filled[inside]
        return out

    def _telea(self, frame: np.ndarray, filled: np.ndarray, hole: np.ndarray, x: int, y: int) -> None:
        """Fill what no reference saw (`hole`, in the box at x, y) by Telea, from the box's surroundings."""
        bh, bw = hole.shape
        m = self.telea_radius + 2
        ex0, ey0 = max(0, x - m), max(0, y - m)
        ex1, ey1 = min(frame.shape[1], x + bw + m), min(frame.shape[0], y + bh + m)
        ctx = frame[ey0:ey1, ex0:ex1].copy()
        hole_ctx = np.zeros(ctx.shape[:2], np.uint8)
        ctx[y - ey0:y - ey0 + bh, x - ex0:x - ex0 + bw] = filled
        hole_ctx[y - ey0:y - ey0 + bh, x - ex0:x - ex0 + bw] = hole
        rest = cv2.inpaint(ctx, hole_ctx, self.telea_radius, cv2.INPAINT_TELEA)
        filled[hole] = rest[y - ey0:y - ey0 + bh, x - ex0:x - ex0 + bw][hole]

    def _prepare(self, f: _Frame) -> None:
        """Build the frame's grey image and its corners away from the hole (once)."""
        if f.pyr is not None:
            return
        gray = cv2.cvtColor(f.frame, cv2.COLOR_RGB2GRAY)
        f.pyr = gray
        keep = np.where(cv2.dilate(f.mask.astype(np.uint8), disk(3)) > 0, 0, 255).astype(np.uint8)
        pts = cv2.goodFeaturesToTrack(gray, self.features, 0.005, 8, mask=keep, blockSize=5)
        f.pts = np.zeros((0, 1, 2), np.float32) if pts is None else pts.astype(np.float32)

    def _align(self, src: _Frame, dst: _Frame) -> np.ndarray | None:
        """Homography taking `src` pixels onto `dst` from LK corner tracks (forward-backward checked), or None."""
        self._prepare(src)
        self._prepare(dst)
        dpts = dst.pts
        if len(dpts) < self.min_inliers:
            return None
        spts, st, _ = cv2.calcOpticalFlowPyrLK(dst.pyr, src.pyr, dpts, None, **_LK)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(src.pyr, dst.pyr, spts, None, **_LK)
        h, w = src.mask.shape
        sp, dp = spts.reshape(-1, 2), dpts.reshape(-1, 2)
        ok = (st.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (np.linalg.norm(back.reshape(-1, 2) - dp, axis=1) < 0.5)
        xi, yi = np.round(sp[:, 0]).astype(int), np.round(sp[:, 1]).astype(int)
        ok &= (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
        ok[ok] &= ~src.mask[yi[ok], xi[ok]]
        if ok.sum() < self.min_inliers:
            return None
        hmat, inl = cv2.findHomography(sp[ok], dp[ok], cv2.RANSAC, 1.0, maxIters=2000, confidence=0.995)
        if hmat is None or inl is None or int(inl.sum()) < self.min_inliers:
            return None
        return hmat
