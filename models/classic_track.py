"""Classic mask propagation: DIS optical flow, re-anchored on appearance every frame.

Per frame and object:
1. dense flow (current -> previous frame) gives each pixel's source; the previous mask
   is warped by a similarity transform fitted robustly (RANSAC) to the flow inside the
   object, or per pixel when no transform fits;
2. a colour model (object vs surroundings histograms; the keyframe part is permanent,
   the rest follows recent confident frames) gives P(object | colour) around the
   prediction; colour log-odds plus a spatial prior (signed distance to the warped
   mask) decide each pixel, so the mask snaps back to the object instead of drifting.
   Guards against look-alike backgrounds: colour is weighted by how well it separated
   the object on the keyframe; pixels moving like the surroundings rather than like the
   object's fitted similarity are voted down; growth outside the prediction must
   survive an opening (no threads along streaks); the mask is capped at the keyframe
   area times the fitted zooms (loosely when the object touched another one there);
3. when flow and appearance disagree, template matching relocates the object; when the
   object disappears (left the frame, fully hidden) its mask becomes empty and it is
   searched for again in later frames with the colour model (re-entry).
Overlaps between objects go to the object with the larger log-odds. Confidence is the
agreement of flow and appearance times the colour fit.

Large frames are tracked at a working resolution (shorter side ``work_side``, as the neural
trackers do), so every pixel-sized constant above means the same at any source size and a
4K shot costs little more than a 1080p one. The masks come back to source resolution
through the log-odds field (bilinear, sign-consistent with the working mask), so their
outline is smooth, not a staircase of working pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from .classic_util import (
    bbox,
    bhattacharyya,
    clean_mask,
    colour_index,
    disk,
    expand,
    grabcut_refine,
    histogram,
    iou,
    logit,
    posterior_lut,
)
from .protocols import TrackResult


@dataclass
class _ObjState:
    """Everything the tracker remembers about one object."""

    oid: int
    ref_fg: np.ndarray  # permanent: mean colour histogram of the object on reference frames
    ref_bg: np.ndarray  # permanent: its surroundings on reference frames
    ref_count: int = 0
    recent_fg: np.ndarray | None = None
    recent_bg: np.ndarray | None = None
    mask: np.ndarray | None = None  # bool (H, W) on the previous frame
    ref_area: float = 0.0
    last_area: float = 0.0
    lost: bool = True
    exp_area: float = 0.0  # keyframe area times the zooms fitted since (0 = unknown)
    sep: float = 1.0  # how well colour alone told the object from its surroundings on the keyframes (0..1)
    lut: np.ndarray | None = None
    score_map: np.ndarray | None = None  # log-odds in the ROI of the last frame
    roi: tuple[int, int, int, int] | None = None
    extra: dict = field(default_factory=dict)


class ClassicPropagator:
    """Optical-flow mask propagation with an appearance model; see the module docstring."""

    name = "classic-flow"
    synthetic = False

    def __init__(self, flow_preset: str = "medium", grabcut: bool = False, max_flow_side: int = 640,
                 min_area_frac: float = 0.02, redetect: bool = True, work_side: int = 480) -> None:
        """`flow_preset`: DIS preset (ultrafast/fast/medium); `grabcut`: add a GrabCut pass in the band;
        `max_flow_side`: flow is computed on frames scaled down to this long side; `min_area_frac`: a
        mask smaller than this fraction of the keyframe area counts as gone; `redetect`: search lost objects;
        `work_side`: frames whose shorter side is larger are tracked scaled down to it (0 = never).
        """
        presets = {"ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
                   "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
        if flow_preset not in presets:
            raise ValueError(f"unknown flow preset {flow_preset!r}; known: {', '.join(presets)}")
        self._dis = cv2.DISOpticalFlow_create(presets[flow_preset])
        self.grabcut = bool(grabcut)
        self.max_flow_side = int(max_flow_side)
        self.min_area_frac = float(min_area_frac)
        self.redetect = bool(redetect)
        self.work_side = int(work_side)
        self.sep_lo, self.sep_span, self.min_colour_weight = 0.1, 0.5, 0.15
        # the flow near an outline is smoothed towards the surroundings, so fitted zooms come out ~12% short
        # (in log terms): the expected area grows by scale ** 2.3, not scale ** 2
        self.motion_gain, self.motion_min, self.motion_lim, self.motion_keep_off = 3.0, 0.6, 3.0, 6
        self.motion_ref = 1.0
        self.thin_frac, self.hidden_area_gain = 0.12, 2.0
        self.max_grow, self.area_slack, self.zoom_gain = -1.0, 1.4, 2.3
        self.colour_dead = 0.7  # colour log-odds below this in size say nothing
        self.reset()

    # -- protocol ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every object and frame."""
        self._objs: dict[int, _ObjState] = {}
        self._prev_gray: np.ndarray | None = None
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # last frame and its colour bins
        self._shape: tuple[int, int] | None = None  # working frame size
        self._src_shape: tuple[int, int] | None = None  # source frame size

    def add_reference(self, frame: np.ndarray, labels: np.ndarray, obj_ids: Sequence[int]) -> None:
        """Learn the objects' look on `frame` (permanent) and make it the frame tracking continues from."""
        self._check_frame(frame, allow_new=True)
        ids = [int(o) for o in obj_ids]
        labels = self._labels_to_work(np.asarray(labels), ids)
        frame = self._to_work(frame)
        idx = colour_index(frame)
        for oid in set(self._objs) - set(ids):
            self._objs[oid].mask = np.zeros(labels.shape, bool)
            self._objs[oid].lost = True
        for oid in ids:
            m = labels == oid
            st = self._objs.get(oid)
            if st is None:
                st = _ObjState(oid, np.zeros(1), np.zeros(1))
                self._objs[oid] = st
            if m.any():
                fg, bg = histogram(idx, m), histogram(idx, self._ring(m))
                n = st.ref_count
                st.ref_fg = fg if n == 0 else (st.ref_fg * n + fg) / (n + 1)
                st.ref_bg = bg if n == 0 else (st.ref_bg * n + bg) / (n + 1)
                st.ref_count = n + 1
                st.sep = 1.0 - bhattacharyya(st.ref_fg, st.ref_bg)
                st.recent_fg, st.recent_bg = fg, bg
                st.ref_area = float(m.sum()) if n == 0 else max(st.ref_area, float(m.sum()))
                st.last_area = float(m.sum())
            st.mask = m
            st.lost = not m.any()
            st.exp_area = float(m.sum())
            if m.any() and (self._touches_other(labels, m, oid)):
                # partly hidden behind another object here, so its full size is unknown: cap loosely
                st.exp_area *= self.hidden_area_gain
            self._remember_template(st, frame)
        self._rebuild_luts()
        self._prev_gray = self._gray(frame)
        self._last = (frame.copy(), idx)

    def track(self, frame: np.ndarray) -> TrackResult:
        """Propagate every object's mask from the previous frame to `frame`, then remember the result."""
        if self._prev_gray is None:
            raise RuntimeError("ClassicPropagator.track called before add_reference")
        self._check_frame(frame)
        frame = self._to_work(frame)
        h, w = self._shape
        gray = self._gray(frame)
        flow = self._flow(gray, self._prev_gray)
        idx = colour_index(frame)
        results: dict[int, tuple] = {}
        for st in self._objs.values():
            if st.lost or st.mask is None or not st.mask.any():
                st.lost = True
                results[st.oid] = self._search(st, frame, idx, flow) if self.redetect else None
            else:
                results[st.oid] = self._follow(st, frame, idx, flow)
        labels, conf, probs = self._merge(results, h, w)
        ids = sorted(self._objs)
        for oid in ids:
            st = self._objs[oid]
            was_lost = st.lost
            m = labels == oid
            if m.sum() < self._min_area(st):
                m[:] = False
                labels[labels == oid] = 0
            st.mask = m
            st.lost = not m.any()
            if st.lost:
                conf[oid] = 0.0
            elif conf.get(oid, 0.0) > 0.55:
                self._learn(st, idx, m)
            if not st.lost:
                st.last_area = float(m.sum())
                st.exp_area = max(st.exp_area, st.last_area) if was_lost else st.exp_area
            self._remember_template(st, frame)
        self._rebuild_luts()
        self._prev_gray = gray
        self._last = (frame.copy(), idx)
        if self._shape != self._src_shape:
            labels, probs = self._to_source(results, ids)
        return TrackResult(labels=labels, confidence={o: float(conf.get(o, 0.0)) for o in ids}, probs=probs,
                           obj_ids=ids)

    def correct(self, labels: np.ndarray) -> None:
        """Replace the last frame's masks by `labels` (e.g. refined by SAM) and learn from them."""
        if self._shape is None or np.asarray(labels).shape != self._src_shape:
            raise ValueError("ClassicPropagator.correct: labels do not match the tracked frame")
        labels = self._labels_to_work(np.asarray(labels), list(self._objs))
        frame, idx = self._last if self._last is not None else (None, None)
        for oid, st in self._objs.items():
            m = np.asarray(labels) == oid
            st.mask = m
            st.lost = not m.any()
            if not st.lost:
                st.last_area = float(m.sum())
                st.exp_area = max(st.exp_area, st.last_area)
                if idx is not None and st.ref_count:
                    self._learn(st, idx, m)
            if frame is not None:
                self._remember_template(st, frame)
        self._rebuild_luts()

    # -- helpers --------------------------------------------------------------------------------
    def _check_frame(self, frame: np.ndarray, allow_new: bool = False) -> None:
        """Frames must be RGB uint8 and all the same size."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError("ClassicPropagator expects RGB uint8 (H, W, 3) frames")
        shape = frame.shape[:2]
        if self._src_shape is not None and shape != self._src_shape:
            if not allow_new:
                raise ValueError(f"frame size {shape} differs from the reference {self._src_shape}")
            self.reset()
        self._src_shape = shape
        h, w = shape
        s = self.work_side / min(h, w) if self.work_side > 0 else 1.0
        self._shape = (max(8, int(round(h * s))), max(8, int(round(w * s)))) if s < 1.0 else shape

    def _to_work(self, frame: np.ndarray) -> np.ndarray:
        """The frame at working resolution (area-averaged, so fine texture does not alias)."""
        if self._shape == self._src_shape:
            return frame
        h, w = frame.shape[:2]
        k = min(h // self._shape[0], w // self._shape[1])
        if k >= 2:  # an integer shrink first: OpenCV's fast path, 3x quicker on 4K than one odd-factor resize
            frame = cv2.resize(frame, (w // k, h // k), interpolation=cv2.INTER_AREA)
        return cv2.resize(frame, self._shape[::-1], interpolation=cv2.INTER_AREA)

    def _labels_to_work(self, labels: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """A source-size label map at working resolution: each pixel goes to the object covering most of it."""
        if labels.shape != self._src_shape:
            raise ValueError(f"label map {labels.shape} does not match the frame {self._src_shape}")
        if self._shape == self._src_shape:
            return labels
        size = self._shape[::-1]
        best = np.full(self._shape, 0.5, np.float32)  # an object must cover over half a working pixel
        out = np.zeros(self._shape, np.uint8)
        for oid in ids:
            m = labels == oid
            if not m.any():
                continue
            cover = cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            win = cover > best
            best[win] = cover[win]
            out[win] = oid
        return out

    def _to_source(self, results: dict[int, tuple | None], ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Labels and probabilities at source resolution from the working masks' log-odds, ROI by ROI.

        The field is the ROI log-odds forced to agree in sign with the final working mask, upsampled bilinearly:
        its zero crossing is a smooth outline through the working pixels' decisions.
        """
        sh, sw = self._src_shape
        h, w = self._shape
        sx, sy = w / sw, h / sh
        labels = np.zeros((sh, sw), np.uint8)
        probs = np.zeros((len(ids) + 1, sh, sw), np.float32)
        probs[0] = 1.0
        best = None
        for k, oid in enumerate(ids):
            r = results.get(oid)
            st = self._objs[oid]
            if r is None or st.lost:
                continue
            (x0, y0, x1, y1), score, _, _ = r
            m = st.mask[y0:y1, x0:x1]
            if not m.any():
                continue
            field = np.where(m, np.maximum(score, 0.05), np.minimum(score, -0.05)).astype(np.float32)
            field = np.clip(field, -8.0, 8.0)
            gx0, gy0 = max(0, int(np.floor(x0 / sx))), max(0, int(np.floor(y0 / sy)))
            gx1, gy1 = min(sw, int(np.ceil(x1 / sx))), min(sh, int(np.ceil(y1 / sy)))
            # source pixel (gx0 + j) has its centre at working x = (gx0 + j + 0.5) * sx - 0.5
            a = np.array([[sx, 0.0, (gx0 + 0.5) * sx - 0.5 - x0], [0.0, sy, (gy0 + 0.5) * sy - 0.5 - y0]])
            up = cv2.warpAffine(field, a, (gx1 - gx0, gy1 - gy0), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
            p = 1.0 / (1.0 + np.exp(-up))
            probs[k + 1, gy0:gy1, gx0:gx1] = p
            np.minimum(probs[0, gy0:gy1, gx0:gx1], 1.0 - p, out=probs[0, gy0:gy1, gx0:gx1])
            lsub = labels[gy0:gy1, gx0:gx1]
            if best is None and len(ids) > 1:
                best = np.full((sh, sw), -np.inf, np.float32)
            if best is not None:
                bsub = best[gy0:gy1, gx0:gx1]
                win = (up > 0) & (up > bsub)
                bsub[win] = up[win]
            else:
                win = up > 0
            lsub[win] = oid
        return labels, probs

    @staticmethod
    def _gray(frame: np.ndarray) -> np.ndarray:
        """Luma used for optical flow."""
        return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)

    def _flow(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Backward flow at full resolution: cur(x) ~ prev(x + flow(x)); computed on a scaled-down copy if large."""
        h, w = cur.shape
        s = min(1.0, self.max_flow_side / max(h, w))
        if s < 1.0:
            size = (max(8, int(round(w * s))), max(8, int(round(h * s))))
            f = self._dis.calc(cv2.resize(cur, size, interpolation=cv2.INTER_AREA),
                               cv2.resize(prev, size, interpolation=cv2.INTER_AREA), None)
            return cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) / s
        return self._dis.calc(cur, prev, None)

    def _ring(self, m: np.ndarray) -> np.ndarray:
        """The surroundings of a mask: a band a few pixels away from it."""
        side = np.sqrt(max(float(m.sum()), 1.0))
        outer = cv2.dilate(m.astype(np.uint8), disk(int(max(6, 0.4 * side)))).astype(bool)
        inner = cv2.dilate(m.astype(np.uint8), disk(2)).astype(bool)
        return outer & ~inner

    @staticmethod
    def _remember_template(st: _ObjState, frame: np.ndarray) -> None:
        """Keep the object's current look (crop + mask) for template relocation."""
        b = bbox(st.mask) if st.mask is not None else None
        if b is None or b[2] - b[0] < 4 or b[3] - b[1] < 4:
            st.extra.pop("template", None)
            return
        x0, y0, x1, y1 = b
        st.extra["template"] = (frame[y0:y1, x0:x1].copy(), st.mask[y0:y1, x0:x1].copy())

    @staticmethod
    def _touches_other(labels: np.ndarray, m: np.ndarray, oid: int) -> bool:
        """Whether mask `m` borders another labelled object (it may be partly hidden behind it)."""
        b = expand(bbox(m), 3, m.shape[1], m.shape[0])
        sub, ms = labels[b[1]:b[3], b[0]:b[2]], m[b[1]:b[3], b[0]:b[2]]
        ring = cv2.dilate(ms.astype(np.uint8), disk(2)).astype(bool) & ~ms
        return bool(((sub[ring] != 0) & (sub[ring] != oid)).any())

    def _min_area(self, st: _ObjState) -> float:
        """Below this many pixels an object counts as gone."""
        return max(4.0, self.min_area_frac * st.ref_area)

    def _rebuild_luts(self) -> None:
        """P(object | colour) per object: keyframe + recent object colours against surroundings and other objects."""
        for st in self._objs.values():
            if st.ref_count == 0:
                st.lut = None
                continue
            fg = 0.6 * st.ref_fg + 0.4 * st.recent_fg
            bg = 0.5 * st.ref_bg + 0.5 * st.recent_bg
            others = [o.ref_fg for o in self._objs.values() if o.oid != st.oid and o.ref_count]
            if others:
                bg = 0.75 * bg + 0.25 * np.mean(others, axis=0)
            st.lut = posterior_lut(fg, bg)

    def _learn(self, st: _ObjState, idx: np.ndarray, m: np.ndarray) -> None:
        """Follow slow appearance changes from a confident frame (the keyframe part stays fixed)."""
        b = bbox(m)
        side = np.sqrt(float(m.sum()))
        x0, y0, x1, y1 = expand(b, max(8.0, 0.6 * side), m.shape[1], m.shape[0])
        sub, mi = idx[y0:y1, x0:x1], m[y0:y1, x0:x1]
        ring = self._ring(mi)
        st.recent_fg = 0.8 * st.recent_fg + 0.2 * histogram(sub, mi)
        if ring.any():
            st.recent_bg = 0.7 * st.recent_bg + 0.3 * histogram(sub, ring)

    def _follow(self, st: _ObjState, frame: np.ndarray, idx: np.ndarray, flow: np.ndarray):
        """Predict by flow, then re-anchor on appearance; returns (roi, log-odds map, mask, confidence)."""
        h, w = self._shape
        prev = st.mask
        pb = bbox(prev)
        side = np.sqrt(float(prev.sum()))
        x0, y0, x1, y1 = expand(pb, 2.0, w, h)
        fl = flow[y0:y1, x0:x1]
        reach = float(np.abs(fl).max()) if fl.size else 0.0
        margin = max(8.0, 0.35 * side) + reach
        roi = expand(pb, margin, w, h)
        pred, fit_ok = self._predict(st, prev, flow, roi)
        if not pred.any():
            return None
        mot = self._motion_cue(st, flow, pred, roi) if fit_ok and self.motion_gain > 0 else None
        res = self._anchor(st, idx, frame, pred, roi, extra=mot)
        roi, score, m, agree, colour = res
        if (agree < 0.5 or colour < 0.5 or not fit_ok) and side >= 4:
            moved = self._relocate(st, frame, prev, roi)
            if moved is not None:
                alt = self._anchor(st, idx, frame, moved[0], moved[1])
                if alt[3] * alt[4] > agree * colour:
                    roi, score, m, agree, colour = alt
        conf = float(np.clip(agree, 0, 1) * np.clip(colour, 0, 1))
        if not fit_ok:
            conf *= 0.8
        return roi, score, m, conf

    def _motion_cue(self, st: _ObjState, flow: np.ndarray, pred: np.ndarray,
                    roi: tuple[int, int, int, int]) -> np.ndarray | None:
        """Log-odds from motion: does each ROI pixel move like the object (its fitted similarity) or like its
        surroundings? Separates an object from a look-alike background whenever the two move differently.
        """
        a = st.extra.get("fit")
        if a is None:
            return None
        x0, y0, x1, y1 = roi
        fl = flow[y0:y1, x0:x1]
        far = ~cv2.dilate(pred.astype(np.uint8), disk(4)).astype(bool)
        for o in self._objs.values():  # the surroundings are background, not another (moving) object
            if o.oid != st.oid and o.mask is not None and not o.lost:
                far &= ~o.mask[y0:y1, x0:x1]
        if int(far.sum()) < 30:
            return None
        f_bg = np.median(fl[far], axis=0)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ai = cv2.invertAffineTransform(a)
        ox = ai[0, 0] * xx + ai[0, 1] * yy + ai[0, 2] - xx
        oy = ai[1, 0] * xx + ai[1, 1] * yy + ai[1, 2] - yy
        cy, cx = (np.array(np.nonzero(pred)).mean(axis=1)).astype(int)
        d = float(np.hypot(ox[cy, cx] - f_bg[0], oy[cy, cx] - f_bg[1]))
        if d < self.motion_min:
            return None
        e_obj = np.hypot(fl[..., 0] - ox, fl[..., 1] - oy)
        near = np.zeros(pred.shape, np.uint8)
        for o in self._objs.values():  # flow next to another object is smeared with that object's motion
            if o.oid != st.oid and o.mask is not None and not o.lost:
                near |= o.mask[y0:y1, x0:x1]
        near = cv2.dilate(near, disk(self.motion_keep_off)).astype(bool) if near.any() else near.astype(bool)
        e_bg = np.hypot(fl[..., 0] - f_bg[0], fl[..., 1] - f_bg[1])
        # only evidence against: DIS blurs flow across outlines, so "moves like the object" bleeds outwards
        # the faster the object moves against its surroundings, the wider DIS smears its border flow: trust less
        gain = self.motion_gain * min(1.0, self.motion_ref / d)
        cue = np.clip(gain * (e_bg - e_obj) / d, -self.motion_lim, 0.0).astype(np.float32)
        cue[near] = 0.0
        return cue

    def _predict(self, st: _ObjState, prev: np.ndarray, flow: np.ndarray, roi: tuple[int, int, int, int]):
        """Warp the previous mask into `roi` of the current frame: similarity fit to the flow, else per pixel.

        A fitted zoom also scales the object's expected area (the cap on how far its mask may grow).
        """
        x0, y0, x1, y1 = roi
        fl = flow[y0:y1, x0:x1]
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        sx, sy = xx + fl[..., 0], yy + fl[..., 1]
        pw = cv2.remap(prev.astype(np.float32), sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                       borderValue=0)
        inner = pw > 0.99
        n = int(inner.sum())
        st.extra.pop("fit", None)
        if n >= 12:
            step = max(1, n // 400)
            sel = np.flatnonzero(inner.reshape(-1))[::step]
            src = np.stack([sx.reshape(-1)[sel], sy.reshape(-1)[sel]], 1)
            dst = np.stack([xx.reshape(-1)[sel], yy.reshape(-1)[sel]], 1)
            a, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0,
                                                 maxIters=300, confidence=0.995)
            if a is not None and inl is not None and inl.sum() >= max(8, 0.5 * len(sel)):
                scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
                if 0.8 < scale < 1.25:
                    st.extra["fit"] = a.copy()
                    a = a.copy()
                    a[0, 2] -= x0
                    a[1, 2] -= y0
                    warped = cv2.warpAffine(prev.astype(np.float32), a, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                    st.exp_area *= scale ** self.zoom_gain
                    return warped >= 0.5, True
        return pw >= 0.5, False

    def _anchor(self, st: _ObjState, idx: np.ndarray, frame: np.ndarray, pred: np.ndarray,
                roi: tuple[int, int, int, int], cap: bool = True, extra: np.ndarray | None = None):
        """Decide each ROI pixel from colour log-odds + distance to the prediction; returns (roi, L, mask, agree, colour)."""
        x0, y0, x1, y1 = roi
        sub = idx[y0:y1, x0:x1]
        p = st.lut[sub] if st.lut is not None else np.full(sub.shape, 0.5, np.float32)
        pu = pred.astype(np.uint8)
        din = cv2.distanceTransform(pu, cv2.DIST_L2, 3)
        dout = cv2.distanceTransform(1 - pu, cv2.DIST_L2, 3)
        sd = din - dout
        # colour speaks as loudly as it separated the object on the keyframes; where it did not
        # (grey on grey, backgrounds in the object's colours) the flow prediction carries the mask
        wc = float(np.clip((st.sep - self.sep_lo) / self.sep_span, self.min_colour_weight, 1.0))
        lc = logit(p, 4.0)
        # weak colour evidence is no evidence: a colour the object shares with its surroundings (white stripes
        # on a pale wall) would otherwise shave a pixel off its outline every frame
        lc = np.sign(lc) * np.maximum(np.abs(lc) - self.colour_dead, 0.0)
        score = lc * wc + np.clip(0.45 * sd, -8.0, 2.0)
        if extra is not None:
            score = score + extra
        score = cv2.GaussianBlur(score, (0, 0), 1.0)
        m = score > 0
        limit = (1.0 + self.max_grow) * float(pred.sum()) if self.max_grow >= 0 else np.inf
        if cap and st.exp_area > 0:
            limit = min(limit, self.area_slack * st.exp_area)
        limit = int(min(limit + 4, m.size))
        if int(m.sum()) > limit:
            # an object does not outgrow its fitted zoom by much: keep the `limit` most certain pixels,
            # which trims leaks creeping into look-alike surroundings frame after frame
            t = float(np.partition(score[m], -limit)[-limit])
            m = score > t
        if self.grabcut and m.any():
            gc = np.where(m, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
            gc[(score > 4.0) & pred] = cv2.GC_FGD
            gc[(score < -4.0) | (sd < -12)] = cv2.GC_BGD
            m = grabcut_refine(frame[y0:y1, x0:x1], gc, 1)
        if self.thin_frac > 0 and m.any():
            # new pixels must belong to a body, not a thread: growth outside the prediction that an opening
            # removes is a leak along a look-alike streak of background
            r = int(round(self.thin_frac * np.sqrt(float(pred.sum()))))
            if r >= 1:
                opened = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, disk(r)).astype(bool)
                m = (m & pred) | (m & opened)
        core = m & pred
        if m.any():
            n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
            hit = np.unique(lab[core])
            m = np.isin(lab, hit[hit > 0]) if hit.size and hit.max() > 0 else np.zeros_like(m)
            m = clean_mask(m, keep=core)
        agree = iou(pred, m) if m.any() else 0.0
        colour = float(np.clip((p[m].mean() - 0.5) / 0.35, 0, 1)) if m.any() else 0.0
        return roi, score, m, agree, colour

    def _relocate(self, st: _ObjState, frame: np.ndarray, prev: np.ndarray, roi: tuple[int, int, int, int]):
        """Template-match the previous frame's object appearance in a wide window; returns (pred, roi) or None."""
        tpl = st.extra.get("template")
        if tpl is None:
            return None
        h, w = self._shape
        patch, pmask = tpl
        th, tw = pmask.shape
        pb = bbox(prev)
        cx, cy = (pb[0] + pb[2]) / 2, (pb[1] + pb[3]) / 2
        sx0, sy0, sx1, sy1 = expand((cx - tw / 2, cy - th / 2, cx + tw / 2, cy + th / 2), max(tw, th), w, h)
        if sx1 - sx0 < tw or sy1 - sy0 < th:
            return None
        res = cv2.matchTemplate(frame[sy0:sy1, sx0:sx1], patch, cv2.TM_CCORR_NORMED, mask=pmask.astype(np.uint8))
        _, best, _, loc = cv2.minMaxLoc(res)
        if not np.isfinite(best) or best < 0.8:
            return None
        px, py = sx0 + loc[0], sy0 + loc[1]
        full = np.zeros((h, w), bool)
        full[py:py + th, px:px + tw] = pmask
        margin = max(6.0, 0.25 * max(tw, th))
        nroi = expand((px, py, px + tw, py + th), margin, w, h)
        return full[nroi[1]:nroi[3], nroi[0]:nroi[2]], nroi

    def _search(self, st: _ObjState, frame: np.ndarray, idx: np.ndarray, flow: np.ndarray):
        """Look for a lost object by colour over the whole frame (re-entry, end of an occlusion)."""
        if st.lut is None:
            return None
        h, w = self._shape
        p = st.lut[idx]
        cand = (p > 0.8).astype(np.uint8)
        cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, disk(1))
        for o in self._objs.values():
            if o.oid != st.oid and not o.lost and o.mask is not None:
                cand[o.mask] = 0
        n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
        if n <= 1:
            return None
        need = max(20.0, 0.03 * st.ref_area)
        best, best_score = None, 0.0
        for k in range(1, n):
            area = stats[k, cv2.CC_STAT_AREA]
            if area < need or area > 3.0 * max(st.ref_area, st.last_area):
                continue
            comp = lab == k
            sim = bhattacharyya(histogram(idx, comp), st.ref_fg)
            score = sim * float(p[comp].mean())
            if sim > 0.55 and score > best_score:
                best, best_score = k, score
        if best is None:
            return None
        comp = lab == best
        b = bbox(comp)
        roi = expand(b, max(6.0, 0.3 * np.sqrt(float(comp.sum()))), w, h)
        res = self._anchor(st, idx, frame, comp[roi[1]:roi[3], roi[0]:roi[2]], roi, cap=False)
        roi, score, m, agree, colour = res
        if not m.any():
            return None
        return roi, score, m, float(0.7 * colour * best_score)

    def _merge(self, results: dict[int, tuple | None], h: int, w: int):
        """Combine per-object ROI answers into one label map; overlaps go to the larger log-odds."""
        labels = np.zeros((h, w), np.uint8)
        best = np.full((h, w), -np.inf, np.float32)
        ids = sorted(self._objs)
        probs = np.zeros((len(ids) + 1, h, w), np.float32)
        conf: dict[int, float] = {}
        for k, oid in enumerate(ids):
            r = results.get(oid)
            if r is None:
                conf[oid] = 0.0
                continue
            (x0, y0, x1, y1), score, m, c = r
            conf[oid] = c
            s = np.where(m, np.maximum(score, 0.01), -np.inf).astype(np.float32)
            bsub, lsub = best[y0:y1, x0:x1], labels[y0:y1, x0:x1]
            win = s > bsub
            bsub[win] = s[win]
            lsub[win] = oid
            probs[k + 1, y0:y1, x0:x1] = 1.0 / (1.0 + np.exp(-score))
        probs[0] = 1.0 - probs[1:].max(axis=0) if ids else 1.0
        return labels, conf, probs
