"""Edge refinement, the `Matter` stage: a tracker's mask + the frame -> soft alpha at source resolution.

Weight-free (numpy + OpenCV). From the hard mask (a probability map is thresholded at 0.5 and
resized to the frame) a shape prior is made: the mask blurred along the object's motion
(shutter x motion px long: what motion blur does to an edge) and by the processing-to-source
`scale` (a mask made at 480p and upsampled to 4K is uncertain by about that many pixels).
The unknown band is where that prior is soft, plus `band` px around the mask's edge; outside
it the alpha is the mask (0 or 1). Inside it the alpha is solved at full resolution with a
few box filters:

1. colour projection: each band pixel's colour is explained as a mix of the local foreground
   and background colours (means of the known pixels nearby); alpha = the mixing weight,
   blended with the shape prior by how distinct those two colours are;
2. a radius-2 guided filter (He et al., colour guide) of that alpha, which follows the
   image's colour edges and removes the projection's noise; noise-level alpha snaps to 0 / 1.

Sources with subsampled chroma (4:2:0 video: `chroma=0`) are judged by luma at sharp edges
and by colour only where the expected motion blur is wider than the chroma smear.

Only tiles that hold band pixels are worked on, each with a fixed margin, so memory is bounded
by the tile size whatever the frame size (4K included) and time follows the edge length, not
the frame area. Temporal stability: where the frame and the mask did not change since the
previous frame (`prev`), the previous alpha is kept as it was, so a static edge cannot
flicker with sensor noise.

`foreground()` estimates the object's own colour under the soft edge (Forte & Pitie's
blur-fusion estimate), so a premultiplied export does not carry background spill.

Choice of method: measured against a plain guided filter of the mask and pymatting's
closed-form / learning-based matting on soft-ground-truth clips: see BENCHMARKS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class MatteState:
    """What the next frame's refinement needs from this one: the frame, the hard mask and the alpha."""

    frame: np.ndarray  # uint8 (H, W, 3)
    hard: np.ndarray  # bool (H, W)
    alpha: np.ndarray  # float32 (H, W)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window, reflected at the border."""
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter with a colour guide (float32 0..1, (H, W, 3)) of a float32 (H, W) input."""
    g = guide
    mi = [_box(g[..., c], r) for c in range(3)]
    mp = _box(src, r)
    cov_ip = [_box(g[..., c] * src, r) - mi[c] * mp for c in range(3)]
    v = {}
    for a in range(3):
        for b in range(a, 3):
            v[a, b] = _box(g[..., a] * g[..., b], r) - mi[a] * mi[b] + (eps if a == b else 0.0)
    # inverse of the symmetric 3x3 covariance + eps I, by cofactors, per pixel
    c00 = v[1, 1] * v[2, 2] - v[1, 2] * v[1, 2]
    c01 = v[0, 2] * v[1, 2] - v[0, 1] * v[2, 2]
    c02 = v[0, 1] * v[1, 2] - v[0, 2] * v[1, 1]
    c11 = v[0, 0] * v[2, 2] - v[0, 2] * v[0, 2]
    c12 = v[0, 2] * v[0, 1] - v[0, 0] * v[1, 2]
    c22 = v[0, 0] * v[1, 1] - v[0, 1] * v[0, 1]
    det = v[0, 0] * c00 + v[0, 1] * c01 + v[0, 2] * c02
    det = np.where(np.abs(det) < 1e-12, 1e-12, det)
    a0 = (c00 * cov_ip[0] + c01 * cov_ip[1] + c02 * cov_ip[2]) / det
    a1 = (c01 * cov_ip[0] + c11 * cov_ip[1] + c12 * cov_ip[2]) / det
    a2 = (c02 * cov_ip[0] + c12 * cov_ip[1] + c22 * cov_ip[2]) / det
    b = mp - a0 * mi[0] - a1 * mi[1] - a2 * mi[2]
    return _box(a0, r) * g[..., 0] + _box(a1, r) * g[..., 1] + _box(a2, r) * g[..., 2] + _box(b, r)


def _colour_projection(img: np.ndarray, fg: np.ndarray, bg: np.ndarray, r: int, chroma: np.ndarray):
    """(alpha, |F - B|^2, support): each pixel as a mix of the local known-foreground and -background
    mean colours; support (0..1) falls to 0 where the window holds too few known pixels of either side.

    `chroma` (per pixel, 0..1) weighs the colour difference: 1 = full RGB distance, 0 = luma
    only (x3, to keep the scale), for sources whose chroma is subsampled (4:2:0 video smears
    it over 2 px, which would spread a sharp edge's alpha).
    """
    fgf, bgf = fg.astype(np.float32), bg.astype(np.float32)
    wf, wb = _box(fgf, r), _box(bgf, r)
    f = np.stack([_box(img[..., c] * fgf, r) for c in range(3)], -1) / (wf[..., None] + 1e-6)
    b = np.stack([_box(img[..., c] * bgf, r) for c in range(3)], -1) / (wb[..., None] + 1e-6)
    d = f - b
    e = img - b
    num = (e * d).sum(-1)
    d2 = (d * d).sum(-1)
    if np.any(chroma < 1.0):
        luma = np.asarray(_LUMA, np.float32)
        dy, ey = d @ luma, e @ luma
        num = chroma * num + (1.0 - chroma) * 3.0 * ey * dy
        d2 = chroma * d2 + (1.0 - chroma) * 3.0 * dy * dy
    support = np.clip(np.minimum(wf, wb) / 0.05, 0.0, 1.0)
    return np.clip(num / (d2 + 1e-4), 0.0, 1.0), d2, support


_LUMA = (0.299, 0.587, 0.114)


class EdgeMatter:
    """Turns hard masks or probabilities into soft alpha at source resolution (see the module docstring)."""

    def __init__(self, *, band: float = 1.0, shutter: float = 0.5, eps: float = 1e-3, tile: int = 128,
                 static_tol: float = 3.0, confidence: float = 0.02, gf_radius: int = 2,
                 chroma: float = 1.0, snap: float = 0.03) -> None:
        """`band`: half-width in px at scale 1 and no motion; `shutter`: assumed open fraction of the
        frame interval (motion blur length = shutter x motion); `eps`, `gf_radius`: guided filter;
        `tile`: tile side in px; `static_tol`: grey levels of change (of 5x5 means) below which a
        pixel is unchanged since the previous frame; `confidence`: squared colour distance (0..3) at
        which the colour projection and the shape prior weigh the same; `chroma`: trust in the
        source's own chroma at sharp edges (1 = RGB/4:4:4, 0 = 4:2:0 video); `snap`: alpha below it
        (or above 1 - it) becomes 0 (1)."""
        self.band = float(band)
        self._means: list[tuple[np.ndarray, np.ndarray]] = []  # (frame, its 5x5 means): the last two frames
        self.shutter = float(shutter)
        self.eps = float(eps)
        self.tile = int(tile)
        self.static_tol = float(static_tol)
        self.confidence = float(confidence)
        self.gf_radius = int(gf_radius)
        self.chroma = float(chroma)
        self.snap = float(snap)

    def matte(self, frame: np.ndarray, coarse: np.ndarray, scale: float = 1.0, prev: MatteState | None = None,
              motion: tuple[float, float] | None = None) -> np.ndarray:
        """Soft alpha float32 (H, W) in 0..1 for `frame` (uint8 (H, W, 3)) from `coarse` (bool mask or float prob).

        `coarse` may be smaller than the frame (a tracker's processing grid): it is resized and
        `scale` defaults to the ratio. `motion` (dx, dy px/frame) shapes the band along the
        motion; when None it is the mask's centroid shift since `prev`. With `prev`, unchanged
        pixels keep prev.alpha.
        """
        img8 = np.asarray(frame)
        if img8.ndim != 3 or img8.shape[2] != 3 or img8.dtype != np.uint8:
            raise ValueError(f"frame must be uint8 (H, W, 3), got {img8.dtype} {img8.shape}")
        h, w = img8.shape[:2]
        prob = np.asarray(coarse)
        prob = prob.astype(np.float32) if prob.dtype != np.float32 else prob
        if prob.ndim != 2:
            raise ValueError(f"coarse mask must be 2-D, got shape {prob.shape}")
        if prob.shape != (h, w):
            scale = max(float(scale), h / prob.shape[0], w / prob.shape[1])
            prob = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        hard = prob >= 0.5
        if motion is None:
            motion = _centroid_shift(prev.hard, hard) if prev is not None and prev.hard.shape == hard.shape else (0.0, 0.0)
        alpha = hard.astype(np.float32)
        if not hard.any() or hard.all():
            return alpha
        kernel = self._prior_kernel(scale, motion)
        r = int(np.ceil(self.band + max(float(scale), 1.0) - 1.0))
        reach = r + kernel.shape[0] // 2 + 1  # how far from the mask edge the alpha can be soft
        m = 2 * reach + 4 * self.gf_radius + 4  # tile margin: prior, band, projection and filter windows
        for y0, y1, x0, x1 in self._band_tiles(hard, reach):
            ty0, ty1, tx0, tx1 = max(0, y0 - m), min(h, y1 + m), max(0, x0 - m), min(w, x1 + m)
            sub = self._solve_tile(img8[ty0:ty1, tx0:tx1], hard[ty0:ty1, tx0:tx1], kernel, r)
            alpha[y0:y1, x0:x1] = sub[y0 - ty0:y1 - ty0, x0 - tx0:x1 - tx0]
        if prev is not None and prev.frame.shape == img8.shape:
            keep = self._static(img8, hard, prev, reach)
            alpha[keep] = prev.alpha[keep]
        return alpha

    def trimap(self, hard: np.ndarray, scale: float = 1.0, motion: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """The whole frame's trimap (uint8: 0 background, 128 unknown band, 255 foreground) `matte` solves in."""
        kernel = self._prior_kernel(scale, motion)
        r = int(np.ceil(self.band + max(float(scale), 1.0) - 1.0))
        fg, bg, unknown, _ = self._regions(np.asarray(hard, bool), kernel, r)
        return np.where(unknown, 128, np.where(fg, 255, 0)).astype(np.uint8)

    def _regions(self, hard: np.ndarray, kernel: np.ndarray, r: int):
        """(known fg, known bg, unknown band, shape prior) of a mask: the prior is the mask blurred along the motion."""
        prior = cv2.filter2D(hard.astype(np.float32), -1, kernel, borderType=cv2.BORDER_REPLICATE)
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        edge = cv2.morphologyEx(hard.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        soft8 = ((prior > 1e-3) & (prior < 1 - 1e-3)).astype(np.uint8) | edge
        unknown = cv2.dilate(soft8, k).astype(bool)
        fg = (prior >= 1 - 1e-3) & ~unknown
        bg = (prior <= 1e-3) & ~unknown
        return fg, bg, unknown, prior

    def _prior_kernel(self, scale: float, motion: tuple[float, float]) -> np.ndarray:
        """Blur kernel of the shape prior: a line along the motion (shutter x motion long), widened by the scale."""
        dx, dy = (float(v) * self.shutter for v in motion)
        length = float(np.hypot(dx, dy))
        grow = max(float(scale), 1.0) - 1.0  # an upsampled mask's edge is uncertain by about the scale
        half = int(np.ceil(length / 2 + grow / 2))
        k = np.zeros((2 * half + 1, 2 * half + 1), np.float32)
        for t in np.linspace(-0.5, 0.5, max(2, int(np.ceil(length * 2)) + 1)):
            k[int(round(half + t * dy)), int(round(half + t * dx))] += 1.0
        if grow > 0:
            k = cv2.GaussianBlur(k, (0, 0), grow / 2.0)
        return k / k.sum()

    def _band_tiles(self, hard: np.ndarray, reach: int):
        """Tiles (y0, y1, x0, x1) of the frame that hold part of the unknown band."""
        h, w = hard.shape
        edge = cv2.morphologyEx(hard.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        near = cv2.dilate(edge, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1)))
        t = self.tile
        for y0 in range(0, h, t):
            for x0 in range(0, w, t):
                y1, x1 = min(h, y0 + t), min(w, x0 + t)
                ys = np.flatnonzero(near[y0:y1, x0:x1].any(axis=1))
                if ys.size:  # shrink the tile to the band's box inside it
                    xs = np.flatnonzero(near[y0:y1, x0:x1].any(axis=0))
                    yield y0 + int(ys[0]), y0 + int(ys[-1]) + 1, x0 + int(xs[0]), x0 + int(xs[-1]) + 1

    def _solve_tile(self, img8: np.ndarray, hard: np.ndarray, kernel: np.ndarray, r: int) -> np.ndarray:
        """Alpha of one tile (with its margin): the shape prior, corrected by colour where colours tell."""
        fg, bg, unknown, prior = self._regions(hard, kernel, r)
        rgb = img8.astype(np.float32) * (1.0 / 255.0)
        img = rgb
        rw = r + kernel.shape[0] // 2 + 2
        chroma = np.float32(1.0)
        if self.chroma < 1.0:
            # where motion blur is expected the alpha ramp is wider than the chroma smear: trust colour there
            ramp = ((prior > 0.05) & (prior < 0.95)).astype(np.float32)
            chroma = np.maximum(self.chroma, _box(ramp, 2))
            y = img @ np.asarray(_LUMA, np.float32)
            img = self.chroma * img + (1.0 - self.chroma) * y[..., None]  # the guide sees what is sharp
        proj, dist2, support = _colour_projection(rgb, fg, bg, rw,
                                                  np.broadcast_to(chroma, prior.shape))
        wgt = (dist2 / (dist2 + self.confidence) * support).astype(np.float32)
        est = wgt * proj + (1.0 - wgt) * prior
        est = np.where(unknown, est, prior).astype(np.float32)
        if self.gf_radius > 0:
            filtered = guided_filter(img, est, self.gf_radius, self.eps)
            if self.chroma < 1.0:  # luma alone is often ambiguous: keep the prior where colour could not tell
                filtered = prior + _box(wgt, self.gf_radius) * (filtered - prior)
            est = filtered
        out = hard.astype(np.float32)
        a = np.clip(est[unknown], 0.0, 1.0)
        if self.snap > 0:  # noise-level alpha is not coverage: snap it to 0 / 1
            a[a < self.snap] = 0.0
            a[a > 1.0 - self.snap] = 1.0
        out[unknown] = a
        return out

    def _local_means(self, frame: np.ndarray) -> np.ndarray:
        """5x5 means of `frame`, computed once per frame object: every object of a frame, and the next
        frame's comparison, reuse them (kept for the last two frames)."""
        for seen, means in self._means:
            if seen is frame:
                return means
        means = _box(frame.astype(np.float32), 2)
        self._means = [*self._means[-1:], (frame, means)]
        return means

    def _static(self, img8: np.ndarray, hard: np.ndarray, prev: MatteState, r: int) -> np.ndarray:
        """Pixels whose neighbourhood did not change in colour or mask since `prev` (keep their alpha)."""
        # 5x5 means first: sensor noise averages out, a sub-pixel move of a contrasted edge does not
        now = self._local_means(img8)
        before = self._local_means(prev.frame)
        calm = np.abs(now - before).max(axis=2) < self.static_tol
        k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 3, 2 * r + 3))
        changed = cv2.dilate((hard != prev.hard).astype(np.uint8), k).astype(bool)
        moved = cv2.dilate((~calm).astype(np.uint8), k).astype(bool)
        return ~(changed | moved)


def _centroid_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(dx, dy) in px from the centroid of mask `a` to that of `b` ((0, 0) when either is empty)."""
    ma, mb = cv2.moments(a.astype(np.uint8), True), cv2.moments(b.astype(np.uint8), True)
    if ma["m00"] == 0 or mb["m00"] == 0:
        return 0.0, 0.0
    return (float(mb["m10"] / mb["m00"] - ma["m10"] / ma["m00"]), float(mb["m01"] / mb["m00"] - ma["m01"] / ma["m00"]))


def foreground(frame: np.ndarray, alpha: np.ndarray, radius: int = 45) -> np.ndarray:
    """Estimated foreground colour float32 (H, W, 3) in 0..1: the frame with background spill removed.

    Blur-fusion estimate (Forte & Pitie 2021), run twice (a wide then a small radius): local
    alpha-weighted means of foreground and background colours, corrected by the compositing
    equation's residual. Only the soft part of the alpha needs it; elsewhere F is the frame.
    """
    out = np.asarray(frame).astype(np.float32) * (1.0 / 255.0)
    a_all = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
    soft_all = (a_all > 0.0) & (a_all < 1.0)
    ys, xs = np.flatnonzero(soft_all.any(axis=1)), np.flatnonzero(soft_all.any(axis=0))
    if ys.size == 0:
        return out
    m = 2 * radius + 2  # work on the soft part's box only, with the blur's reach around it
    y0, y1 = max(0, int(ys[0]) - m), min(out.shape[0], int(ys[-1]) + m + 1)
    x0, x1 = max(0, int(xs[0]) - m), min(out.shape[1], int(xs[-1]) + m + 1)
    img, a, soft = out[y0:y1, x0:x1], a_all[y0:y1, x0:x1], soft_all[y0:y1, x0:x1]
    f, b = img.copy(), img.copy()
    for r in (radius, max(2, radius // 15)):
        f, b = _blur_fusion(img, f, b, a, r)
    img[soft] = np.clip(f[soft], 0.0, 1.0)  # img is a view into out
    return out


def _blur_fusion(img: np.ndarray, f: np.ndarray, b: np.ndarray, a: np.ndarray, r: int):
    """One blur-fusion step: returns the refined (foreground, background) estimates."""
    a3 = a[..., None]
    wa = _box(a, r)[..., None]
    wb = _box(1.0 - a, r)[..., None]
    fb = np.stack([_box(f[..., c] * a, r) for c in range(3)], -1) / np.maximum(wa, 1e-5)
    bb = np.stack([_box(b[..., c] * (1.0 - a), r) for c in range(3)], -1) / np.maximum(wb, 1e-5)
    resid = img - a3 * fb - (1.0 - a3) * bb
    return fb + a3 * resid, bb + (1.0 - a3) * resid
