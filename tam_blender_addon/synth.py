"""Deterministic synthetic clips with exact ground truth, for tests, benchmarks and `tam eval`.

A clip is a textured background seen by a slowly panning camera, with textured objects
moving over it along piecewise-linear paths (position and scale keyframes). Objects are
drawn far to near, so the label map is occlusion-correct by construction: a pixel holds
the id of the nearest object whose analytic shape covers the pixel centre. Everything is
drawn from a seed (``numpy.random.Generator``) and rendered on demand, one frame at a
time, so memory does not grow with clip length.

Soft ground truth: with ``ClipSpec.supersample = n`` (n >= 2) every pixel is rendered from
n x n sub-pixel samples and, with ``shutter > 0``, ``motion_samples`` instants spread over the
open shutter (motion blur); objects may carry thin ``strands`` (hair-like curves about a pixel
wide). A pixel's alpha for an object is the exact fraction of its samples where that object is
the nearest one (``Clip.alphas``), the frame is the mean colour of the same samples, and the
label map is "alpha > 0.5". ``write_clip`` then writes 16-bit alpha PNGs beside the binary GT.
With ``supersample = 0`` (the default) rendering is exactly what it always was.

Presets (``preset_spec``): ``demo``, ``small_object_pan``, ``occlusion``, ``leave_reenter``,
``grow_zoom`` (one object growing ~33 -> ~150 px at 480x272), ``striped_ball`` (a rolling ball with
white stripes). ``scale_spec`` renders the same shot at another frame size (e.g. 1080p, 4K).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

TEXTURES = ("noise", "stripes", "blobs")
SHAPES = ("ellipse", "rect", "blob")
PRESETS = ("demo", "small_object_pan", "occlusion", "leave_reenter", "grow_zoom", "striped_ball")


@dataclass
class ObjectSpec:
    """One object: id, base size, path keyframes (frame, cx, cy, scale), look, depth."""

    obj_id: int
    size: tuple[float, float]  # width, height in pixels at scale 1
    path: list[tuple[float, float, float, float]]  # (frame, centre x, centre y, scale), sorted by frame
    shape: str = "ellipse"
    texture: str = "noise"
    hue: float = 0.0  # 0..1, the object's palette hue
    depth: int = 0  # larger = nearer the camera (drawn on top)
    spin: float = 0.0  # rotation in degrees per frame (texture and outline turn together)
    strands: int = 0  # thin hair-like curves growing out of the outline (needs ClipSpec.supersample)
    strand_width: float = 1.0  # strand thickness in pixels at scale 1
    strand_length: float = 0.35  # strand length as a fraction of the object's larger side


@dataclass
class ClipSpec:
    """Everything that determines a clip; the same spec always renders the same pixels."""

    name: str = "custom"
    width: int = 320
    height: int = 240
    num_frames: int = 48
    fps: float = 24.0
    seed: int = 0
    background: str = "noise"
    background_hue: float = 0.0
    pan: tuple[float, float] = (0.5, 0.0)  # camera motion in px/frame (the background moves by -pan)
    objects: list[ObjectSpec] = field(default_factory=list)
    noise: float = 1.5  # sensor noise sigma (grey levels), fresh every frame; 0 = none
    antialias: bool = True  # blend object edges by pixel coverage (labels still test the pixel centre)
    supersample: int = 0  # n >= 2: n x n samples per pixel give exact soft alpha (labels = alpha > 0.5)
    shutter: float = 0.0  # motion blur: fraction of the frame interval the shutter is open (needs supersample)
    motion_samples: int = 8  # instants sampled over the open shutter


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all 0..1) as float RGB 0..255."""
    hsv = np.array([[[h % 1.0 * 180.0, s * 255.0, v * 255.0]]], np.float32)
    hsv8 = np.clip(hsv, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv8, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Band-limited noise in 0..1: random values on a coarse grid, cubic-upsampled."""
    gh, gw = max(2, int(np.ceil(h / scale)) + 2), max(2, int(np.ceil(w / scale)) + 2)
    coarse = rng.random((gh, gw)).astype(np.float32)
    up = cv2.resize(coarse, (int(round(gw * scale)), int(round(gh * scale))), interpolation=cv2.INTER_CUBIC)
    up = up[:h, :w]
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / max(hi - lo, 1e-6)


def _texture_field(rng: np.random.Generator, kind: str, h: int, w: int, feature: float) -> np.ndarray:
    """A 0..1 texture field of the given kind; `feature` is its typical detail size in px."""
    if kind in ("noise", "pale_noise"):
        f = 0.6 * _smooth_noise(rng, h, w, feature * 2.0) + 0.4 * _smooth_noise(rng, h, w, feature * 0.5)
    elif kind in ("stripes", "white_stripes"):
        theta = rng.uniform(0, np.pi)
        period = feature * rng.uniform(1.2, 2.0)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        wobble = 0.5 * period * _smooth_noise(rng, h, w, feature * 4.0)
        f = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta) + wobble) / period)
        f = 0.85 * f + 0.15 * _smooth_noise(rng, h, w, feature * 0.5)
    elif kind == "blobs":
        base = _smooth_noise(rng, h, w, feature * 1.5)
        f = 1.0 / (1.0 + np.exp(-(base - 0.5) * 12.0))
        f = 0.8 * f + 0.2 * _smooth_noise(rng, h, w, feature * 0.4)
    else:
        raise ValueError(f"unknown texture {kind!r}; known: {', '.join(TEXTURES)}")
    lo, hi = float(f.min()), float(f.max())
    return ((f - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def _colourise(t: np.ndarray, hue: float, rng: np.random.Generator, sat: tuple[float, float],
               val: tuple[float, float]) -> np.ndarray:
    """Map a 0..1 field to RGB between two colours of nearby hues (a palette around `hue`)."""
    c0 = _hsv_to_rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(*sat), val[0])
    c1 = _hsv_to_rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(*sat), val[1])
    return c0[None, None, :] * (1.0 - t[..., None]) + c1[None, None, :] * t[..., None]


def _shape_value(shape: str, u: np.ndarray, v: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Normalised shape function: the object covers (u, v) in [-1, 1]^2 where the value is <= 1."""
    if shape == "ellipse":
        return u * u + v * v
    if shape == "rect":
        p = 6.0
        return np.abs(u) ** p + np.abs(v) ** p
    if shape == "blob":
        r = np.sqrt(u * u + v * v)
        th = np.arctan2(v, u)
        return r / _blob_radius(th, params)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def _blob_radius(th: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Blob outline radius at angles `th`, scaled so its widest extent along x and y is 1."""
    amps, phases = params[:3], params[3:6]
    rad = 1.0 + sum(a * np.cos((k + 2) * th + ph) for k, (a, ph) in enumerate(zip(amps, phases, strict=True)))
    return rad / params[6]


def _blob_params(rng: np.random.Generator) -> np.ndarray:
    """Random blob harmonics plus the normaliser that makes the blob span [-1, 1] on both axes."""
    p = np.concatenate([rng.uniform(0.06, 0.16, 3), rng.uniform(0, 2 * np.pi, 3), [1.0]])
    th = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
    r = _blob_radius(th, p)
    p[6] = max(float(np.abs(r * np.cos(th)).max()), float(np.abs(r * np.sin(th)).max()))
    return p


class _Obj:
    """An object ready to render: its texture image and shape parameters."""

    def __init__(self, spec: ObjectSpec, rng: np.random.Generator) -> None:
        self.spec = spec
        path = sorted(spec.path, key=lambda k: k[0])
        self.keys = np.array(path, np.float64)
        max_scale = float(self.keys[:, 3].max())
        side = int(np.ceil(max(spec.size) * max_scale)) + 8
        self.side = max(side, 16)
        feature = max(3.0, min(spec.size) / 5.0) * max_scale
        t = _texture_field(rng, spec.texture, self.side, self.side, feature)
        self.texture = _colourise(t, spec.hue, rng, (0.55, 0.95), (0.35, 0.95)).astype(np.float32)
        if spec.texture == "white_stripes":  # a beach ball: the palette's light end is near-white
            paint = _hsv_to_rgb(spec.hue, rng.uniform(0.7, 0.9), rng.uniform(0.6, 0.85))
            white = np.clip((t - 0.4) / 0.2, 0.0, 1.0)[..., None]
            self.texture = (paint * (1.0 - white) + 250.0 * white).astype(np.float32)
        self.params = _blob_params(rng)
        self.strands = self._strand_polylines(rng)

    def _outline_radius(self, th: float) -> float:
        """Distance from the centre to the outline along angle `th`, in (u, v) units."""
        c, s = abs(np.cos(th)), abs(np.sin(th))
        if self.spec.shape == "rect":
            return float((c ** 6 + s ** 6) ** (-1.0 / 6.0))
        if self.spec.shape == "blob":
            return float(_blob_radius(np.array([th]), self.params)[0])
        return 1.0

    def _strand_polylines(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Strands as polylines in object-local pixels at scale 1 (origin the centre), rooted inside the outline."""
        out = []
        hx, hy = self.spec.size[0] / 2.0, self.spec.size[1] / 2.0
        length = self.spec.strand_length * max(self.spec.size)
        for _ in range(self.spec.strands):
            th = rng.uniform(0, 2 * np.pi)
            r = 0.85 * self._outline_radius(th)
            root = np.array([r * np.cos(th) * hx, r * np.sin(th) * hy])
            curl = rng.uniform(-1.2, 1.2)
            ln = length * rng.uniform(0.6, 1.0)
            pts = [root]
            for k in range(1, 6):
                a = th + curl * k / 5.0
                pts.append(pts[-1] + ln / 5.0 * np.array([np.cos(a), np.sin(a)]))
            out.append(np.array(pts, np.float64))
        return out

    def state(self, i: float) -> tuple[float, float, float]:
        """Centre x, centre y and scale at frame i (linear between keyframes, held outside)."""
        k = self.keys
        return (float(np.interp(i, k[:, 0], k[:, 1])), float(np.interp(i, k[:, 0], k[:, 2])),
                float(np.interp(i, k[:, 0], k[:, 3])))

    def raster(self, i: int, width: int, height: int, antialias: bool = True):
        """(y0, x0, centre-covered mask, coverage 0..1, RGB float patch) at frame i, or None if off-frame."""
        cx, cy, s = self.state(i)
        hw, hh = self.spec.size[0] * s / 2.0, self.spec.size[1] * s / 2.0
        if hw <= 0 or hh <= 0:
            return None
        ang = np.deg2rad(self.spec.spin * i)
        ca, sa = float(np.cos(ang)), float(np.sin(ang))
        ex = hw if self.spec.spin == 0 else float(np.hypot(hw, hh))
        ey = hh if self.spec.spin == 0 else ex
        x0, x1 = max(0, int(np.floor(cx - ex))), min(width - 1, int(np.ceil(cx + ex)))
        y0, y1 = max(0, int(np.floor(cy - ey))), min(height - 1, int(np.ceil(cy + ey)))
        if x1 < x0 or y1 < y0:
            return None
        yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float32)

        def uv(dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
            px, py = xx + dx - cx, yy + dy - cy
            return (ca * px + sa * py) / hw, (-sa * px + ca * py) / hh

        u, v = uv(0.0, 0.0)
        inside = _shape_value(self.spec.shape, u, v, self.params) <= 1.0
        if antialias:
            cover = np.zeros(inside.shape, np.float32)
            offs = (-1.0 / 3.0, 0.0, 1.0 / 3.0)
            for oy in offs:
                for ox in offs:
                    cover += _shape_value(self.spec.shape, *uv(ox, oy), self.params) <= 1.0
            cover /= 9.0
        else:
            cover = inside.astype(np.float32)
        if not cover.any():
            return None
        mx = ((u + 1.0) * 0.5 * (self.side - 1)).astype(np.float32)
        my = ((v + 1.0) * 0.5 * (self.side - 1)).astype(np.float32)
        rgb = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return y0, x0, inside, cover, rgb

    def raster_fine(self, t: float, width: int, height: int, n: int):
        """(y0, x0, inside, RGB) on the n x n sub-pixel grid of a pixel box at (fractional) time t, or None.

        Sub-sample (a, b) of pixel (y, x) sits at (y + (a + 0.5) / n - 0.5, x + (b + 0.5) / n - 0.5);
        `inside` is (h*n, w*n) bool (shape or strand), RGB (h*n, w*n, 3) float.
        """
        cx, cy, s = self.state(t)
        hw, hh = self.spec.size[0] * s / 2.0, self.spec.size[1] * s / 2.0
        if hw <= 0 or hh <= 0:
            return None
        ang = np.deg2rad(self.spec.spin * t)
        ca, sa = float(np.cos(ang)), float(np.sin(ang))
        ex, ey = (hw, hh) if self.spec.spin == 0 else (float(np.hypot(hw, hh)),) * 2
        if self.strands:
            reach = (self.spec.strand_length * max(self.spec.size) + self.spec.strand_width) * s + 2.0
            ex, ey = ex + reach, ey + reach
        x0, x1 = max(0, int(np.floor(cx - ex - 1))), min(width - 1, int(np.ceil(cx + ex + 1)))
        y0, y1 = max(0, int(np.floor(cy - ey - 1))), min(height - 1, int(np.ceil(cy + ey + 1)))
        if x1 < x0 or y1 < y0:
            return None
        step = 1.0 / n
        ys = y0 + (np.arange((y1 - y0 + 1) * n, dtype=np.float32) + 0.5) * step - 0.5
        xs = x0 + (np.arange((x1 - x0 + 1) * n, dtype=np.float32) + 0.5) * step - 0.5
        px, py = xs[None, :] - cx, ys[:, None] - cy
        u = (ca * px + sa * py) / hw
        v = (-sa * px + ca * py) / hh
        inside = _shape_value(self.spec.shape, u, v, self.params) <= 1.0
        for poly in self.strands:
            self._draw_strand(inside, poly, u, v, s, (hw, hh), (ca, sa), (cx, cy), (ys, xs))
        if not inside.any():
            return None
        mx = ((u + 1.0) * 0.5 * (self.side - 1)).astype(np.float32)
        my = ((v + 1.0) * 0.5 * (self.side - 1)).astype(np.float32)
        rgb = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return y0, x0, inside, rgb

    def _draw_strand(self, inside, poly, u, v, s, half, rot, centre, grid) -> None:
        """Mark the sub-samples within half a strand width of one strand polyline (object-local distance)."""
        hw, hh = half
        ca, sa = rot
        ys, xs = grid
        # strand points in image coordinates, to limit the work to the strand's own box
        lx, ly = poly[:, 0] * s, poly[:, 1] * s
        ix = centre[0] + ca * lx - sa * ly
        iy = centre[1] + sa * lx + ca * ly
        pad = self.spec.strand_width * s + 1.0
        c0, c1 = np.searchsorted(xs, ix.min() - pad), np.searchsorted(xs, ix.max() + pad)
        r0, r1 = np.searchsorted(ys, iy.min() - pad), np.searchsorted(ys, iy.max() + pad)
        if c1 <= c0 or r1 <= r0:
            return
        qx = u[r0:r1, c0:c1] * hw / s  # object-local pixels at scale 1
        qy = v[r0:r1, c0:c1] * hh / s
        best = np.full(qx.shape, np.inf, np.float32)
        for a, b in zip(poly[:-1], poly[1:], strict=True):
            d = b - a
            tt = np.clip(((qx - a[0]) * d[0] + (qy - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
            best = np.minimum(best, (qx - a[0] - tt * d[0]) ** 2 + (qy - a[1] - tt * d[1]) ** 2)
        inside[r0:r1, c0:c1] |= best <= (self.spec.strand_width / 2.0) ** 2


class Clip:
    """A rendered-on-demand clip: frames (RGB uint8), label maps (uint8) and clean backgrounds."""

    def __init__(self, spec: ClipSpec) -> None:
        if spec.width < 8 or spec.height < 8 or spec.num_frames < 1:
            raise ValueError("a clip needs at least 8x8 pixels and one frame")
        if spec.supersample == 1 or spec.supersample < 0:
            raise ValueError("supersample is 0 (off) or the samples per pixel side (>= 2)")
        if not spec.supersample and (spec.shutter > 0 or any(o.strands for o in spec.objects)):
            raise ValueError("motion blur (shutter) and strands need supersample >= 2")
        ids = [o.obj_id for o in spec.objects]
        if len(set(ids)) != len(ids) or any(not 1 <= i <= 255 for i in ids):
            raise ValueError("object ids must be distinct and in 1..255")
        self.spec = spec
        self.width, self.height, self.num_frames, self.fps = spec.width, spec.height, spec.num_frames, spec.fps
        self.obj_ids = sorted(ids)
        rng = np.random.default_rng(spec.seed)
        n = spec.num_frames - 1
        px, py = float(spec.pan[0]), float(spec.pan[1])
        margin = 4
        cw = spec.width + int(np.ceil(abs(px) * n)) + 2 * margin
        ch = spec.height + int(np.ceil(abs(py) * n)) + 2 * margin
        self._origin = (margin + (abs(px) * n if px < 0 else 0.0), margin + (abs(py) * n if py < 0 else 0.0))
        feature = max(4.0, min(spec.width, spec.height) / 24.0)
        t = _texture_field(rng, spec.background, ch, cw, feature)
        self._canvas = _colourise(t, spec.background_hue, rng, (0.25, 0.6), (0.25, 0.8)).astype(np.float32)
        if spec.background == "pale_noise":  # a light, washed-out backdrop (sand, a wall, overcast sky)
            self._canvas = _colourise(t, spec.background_hue, rng, (0.0, 0.04), (0.85, 1.0)).astype(np.float32)
        order = sorted(spec.objects, key=lambda o: (o.depth, o.obj_id))
        self._objs = [_Obj(o, rng) for o in order]

    def __len__(self) -> int:
        """Number of frames."""
        return self.num_frames

    def _check(self, i: int) -> int:
        """Validate a frame index."""
        if not 0 <= int(i) < self.num_frames:
            raise IndexError(f"frame {i} outside 0..{self.num_frames - 1}")
        return int(i)

    def camera(self, i: int) -> tuple[float, float]:
        """Camera offset (x, y) in background-canvas pixels at frame i."""
        return (self._origin[0] + self.spec.pan[0] * i, self._origin[1] + self.spec.pan[1] * i)

    def _background_f(self, i: int) -> np.ndarray:
        """The background seen at frame i as float RGB (sub-pixel pan, bilinear)."""
        tx, ty = self.camera(i)
        m = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]], np.float64)
        return cv2.warpAffine(self._canvas, m, (self.width, self.height),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    def background(self, i: int) -> np.ndarray:
        """Frame i with no objects: the ground truth an inpainter should recover."""
        return np.clip(self._background_f(self._check(i)) + 0.5, 0, 255).astype(np.uint8)

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB uint8 frame, uint8 label map) of frame i; far objects first, so labels are occlusion-correct."""
        if self.spec.supersample:
            frame, labels, _ = self.render_soft(i)
            return frame, labels
        i = self._check(i)
        img = self._background_f(i)
        labels = np.zeros((self.height, self.width), np.uint8)
        for obj in self._objs:
            r = obj.raster(i, self.width, self.height, self.spec.antialias)
            if r is None:
                continue
            y0, x0, inside, cover, rgb = r
            h, w = inside.shape
            sub = img[y0:y0 + h, x0:x0 + w]
            sub += (rgb - sub) * cover[..., None]
            labels[y0:y0 + h, x0:x0 + w][inside] = obj.spec.obj_id
        if self.spec.noise > 0:
            img += np.random.default_rng([self.spec.seed, 7919, i]).normal(0.0, self.spec.noise, img.shape)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), labels

    def render_soft(self, i: int) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
        """(RGB uint8 frame, uint8 labels, {obj_id: float32 alpha}) of frame i from sub-pixel and shutter samples.

        Per instant, objects are drawn near to far on the sub-pixel grid and each keeps only the
        samples no nearer object took, so alphas are exact, occlusion-correct and sum to <= 1.
        The camera pan is not blurred (the background is the one of frame i).
        """
        i = self._check(i)
        n = int(self.spec.supersample)
        if n < 2:
            raise ValueError("render_soft needs a clip with supersample >= 2")
        h, w = self.height, self.width
        times = [float(i)]
        if self.spec.shutter > 0:
            k = max(2, int(self.spec.motion_samples))
            times = [i + self.spec.shutter * ((j + 0.5) / k - 0.5) for j in range(k)]
        alphas = {o.spec.obj_id: np.zeros((h, w), np.float32) for o in self._objs}
        colour = np.zeros((h, w, 3), np.float32)
        wt = 1.0 / len(times)
        for t in times:
            taken: list[tuple[int, int, np.ndarray]] = []
            for obj in reversed(self._objs):  # near to far
                r = obj.raster_fine(t, w, h, n)
                if r is None:
                    continue
                y0, x0, inside, rgb = r
                vis = inside.copy()
                for ty, tx, tin in taken:  # drop the samples a nearer object covers
                    oy0, oy1 = max(y0, ty) * n, min(y0 * n + vis.shape[0], ty * n + tin.shape[0])
                    ox0, ox1 = max(x0, tx) * n, min(x0 * n + vis.shape[1], tx * n + tin.shape[1])
                    if oy1 > oy0 and ox1 > ox0:
                        vis[oy0 - y0 * n:oy1 - y0 * n, ox0 - x0 * n:ox1 - x0 * n] &= \
                            ~tin[oy0 - ty * n:oy1 - ty * n, ox0 - tx * n:ox1 - tx * n]
                taken.append((y0, x0, inside))
                ph, pw = vis.shape[0] // n, vis.shape[1] // n
                visf = vis.astype(np.float32)
                # INTER_AREA at an exact integer factor is the block mean of the n x n samples
                cnt = cv2.resize(visf, (pw, ph), interpolation=cv2.INTER_AREA)
                col = cv2.resize(rgb * visf[..., None], (pw, ph), interpolation=cv2.INTER_AREA)
                alphas[obj.spec.obj_id][y0:y0 + ph, x0:x0 + pw] += cnt * wt
                colour[y0:y0 + ph, x0:x0 + pw] += col * wt
        total = np.zeros((h, w), np.float32)
        for a in alphas.values():
            np.minimum(a, 1.0, out=a)
            total += a
        img = self._background_f(i) * np.clip(1.0 - total, 0.0, 1.0)[..., None] + colour
        labels = np.zeros((h, w), np.uint8)
        for oid, a in alphas.items():
            labels[a > 0.5] = oid
        if self.spec.noise > 0:
            img += np.random.default_rng([self.spec.seed, 7919, i]).normal(0.0, self.spec.noise, img.shape)
        return np.clip(img + 0.5, 0, 255).astype(np.uint8), labels, alphas

    def alphas(self, i: int) -> dict[int, np.ndarray]:
        """True coverage (float32 0..1) of every object at frame i; needs supersample >= 2."""
        return self.render_soft(i)[2]

    def get(self, i: int) -> np.ndarray:
        """RGB uint8 frame i."""
        return self.render(i)[0]

    def labels(self, i: int) -> np.ndarray:
        """Ground-truth uint8 label map of frame i (0 = background)."""
        return self.render(i)[1]

    def mask(self, i: int, obj_id: int) -> np.ndarray:
        """Ground-truth bool mask of one object at frame i (visible pixels only)."""
        return self.labels(i) == obj_id

    def box(self, i: int, obj_id: int) -> np.ndarray | None:
        """Tight float box (x0, y0, x1, y1) around the visible object at frame i, or None if unseen."""
        ys, xs = np.nonzero(self.mask(i, obj_id))
        if xs.size == 0:
            return None
        return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)

    def frames(self) -> Iterator[np.ndarray]:
        """All frames in order, one at a time."""
        for i in range(self.num_frames):
            yield self.get(i)

    def items(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(index, frame, label map) for every frame in order, one at a time."""
        for i in range(self.num_frames):
            f, lab = self.render(i)
            yield i, f, lab


def make_clip(spec: ClipSpec | str, seed: int = 0) -> Clip:
    """Build the clip for `spec` (a ClipSpec, or a preset name drawn with `seed`)."""
    if isinstance(spec, str):
        spec = preset_spec(spec, seed=seed)
    return Clip(spec)


def _hues(rng: np.random.Generator, k: int) -> tuple[float, list[float]]:
    """A background hue and k object hues spread away from it (so objects stand out)."""
    bg = float(rng.random())
    if k == 1:
        return bg, [float((bg + rng.uniform(0.3, 0.7)) % 1.0)]
    start = rng.uniform(0.22, 0.3)
    span = 1.0 - 2 * start
    return bg, [float((bg + start + span * j / (k - 1)) % 1.0) for j in range(k)]


def _unit(rng: np.random.Generator) -> tuple[float, float]:
    """A random unit direction."""
    a = rng.uniform(0, 2 * np.pi)
    return float(np.cos(a)), float(np.sin(a))


def _preset_small_object_pan(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'small_object_pan': (width, height, frames, background hue, pan, objects)."""
    n = 60
    bg, (hue,) = _hues(rng, 1)
    pan = _pan(rng, pan_dir, 0.3, 0.8)
    grow = rng.uniform(1.4, 2.0)
    dx, dy = _unit(rng)
    v = rng.uniform(0.6, 1.6)
    travel = np.array([dx, dy]) * v * (n - 1)
    half = 34 * grow / 2 + 6
    lo = np.array([half, half]) + np.maximum(-travel, 0)
    hi = np.array([w - half, h - half]) - np.maximum(travel, 0)
    hi = np.maximum(hi, lo + 1)
    c0 = rng.uniform(lo, hi)
    c1 = c0 + travel
    objects = [ObjectSpec(1, (33.0, 34.0), [(0, c0[0], c0[1], 1.0), (n - 1, c1[0], c1[1], grow)],
                          shape=str(rng.choice(["ellipse", "rect", "blob"])), texture=tex(), hue=hue)]
    return w, h, n, bg, pan, objects


def _preset_demo(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'demo': (width, height, frames, background hue, pan, objects)."""
    n = 48
    bg, hues = _hues(rng, 3)
    pan = _pan(rng, pan_dir, 0.3, 0.7)
    s = rng.choice([-1.0, 1.0])
    objects = [
        ObjectSpec(1, (56.0, 44.0), [(0, 160 - s * 100, 70, 1.0), (n - 1, 160 + s * 100, 90, 1.1)],
                   shape=shp(), texture=tex(), hue=hues[0], depth=1),
        ObjectSpec(2, (40.0, 52.0), [(0, 90, 170, 0.8), (n - 1, 120, 160, 1.4)],
                   shape=shp(), texture=tex(), hue=hues[1], depth=0),
        ObjectSpec(3, (30.0, 30.0), [(0, 250, 190, 1.0), (n // 2, 220, 150, 1.0), (n - 1, 260, 110, 0.8)],
                   shape=shp(), texture=tex(), hue=hues[2], depth=2),
    ]
    return w, h, n, bg, pan, objects


def _preset_occlusion(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'occlusion': (width, height, frames, background hue, pan, objects)."""
    n = 48
    bg, hues = _hues(rng, 2)
    pan = _pan(rng, pan_dir, 0.2, 0.6)
    s = rng.choice([-1.0, 1.0])
    mid = (n - 1) / 2
    cy = rng.uniform(100, 140)
    # the back object drifts slowly; the front one crosses it, covering about a third at mid-clip
    back = ObjectSpec(1, (64.0, 60.0), [(0, 160 - s * 20, cy, 1.0), (n - 1, 160 + s * 20, cy + 10, 1.15)],
                      shape=shp(), texture=tex(), hue=hues[0], depth=0)
    off = rng.uniform(26, 32) * rng.choice([-1.0, 1.0])
    front = ObjectSpec(2, (44.0, 48.0),
                       [(0, 160 - s * 130, cy + off + 25), (mid, 160, cy + off), (n - 1, 160 + s * 130, cy + off - 25)],
                       shape=shp(), texture=tex(), hue=hues[1], depth=1)
    front.path = [(f, x, y, 1.0) for f, x, y in front.path]
    objects = [back, front]
    return w, h, n, bg, pan, objects


def _preset_grow_zoom(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'grow_zoom': (width, height, frames, background hue, pan, objects)."""
    # the camera closes in: the object grows from ~33 to ~150 px over 64 frames at 480x272
    w, h, n = 480, 272, 64
    bg, (hue,) = _hues(rng, 1)
    pan = _pan(rng, pan_dir, 0.2, 0.5)
    c0 = (rng.uniform(120, 360), rng.uniform(80, 190))
    objects = [ObjectSpec(1, (33.0, 33.0), [(0, c0[0], c0[1], 1.0), (n - 1, 240.0, 136.0, 150.0 / 33.0)],
                          shape=shp(), texture="noise", hue=hue)]
    return w, h, n, bg, pan, objects


def _preset_striped_ball(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'striped_ball': (width, height, frames, background hue, pan, objects)."""
    # a rolling ball with white stripes: colour alone splits it into two parts
    w, h, n = 480, 272, 64
    bg, (hue,) = _hues(rng, 1)
    pan = _pan(rng, pan_dir, 0.2, 0.5)
    s = rng.choice([-1.0, 1.0])
    y = rng.uniform(110, 160)
    objects = [ObjectSpec(1, (70.0, 70.0), [(0, 240 - s * 150, y, 0.8), (n - 1, 240 + s * 150, y + 15, 1.2)],
                          shape="ellipse", texture="white_stripes", hue=hue, spin=s * 4.0)]
    return w, h, n, bg, pan, objects


def _preset_leave_reenter(rng: np.random.Generator, w: int, h: int, pan_dir: tuple[float, float], tex, shp) -> tuple:
    """Preset 'leave_reenter': (width, height, frames, background hue, pan, objects)."""
    n = 60
    bg, hues = _hues(rng, 2)
    pan = _pan(rng, pan_dir, 0.2, 0.6)
    s = rng.choice([-1.0, 1.0])
    edge = w + 40 if s > 0 else -40
    y = rng.uniform(80, 120)
    objects = [
        ObjectSpec(1, (40.0, 40.0), [(0, 160, y, 1.0), (20, edge, y + 10, 1.0), (32, edge, y + 20, 1.0),
                                     (n - 1, 160 + s * 60, y + 30, 1.1)],
                   shape=shp(), texture=tex(), hue=hues[0], depth=1),
        ObjectSpec(2, (48.0, 40.0), [(0, 160 - s * 90, 190, 1.0), (n - 1, 160 - s * 60, 180, 1.2)],
                   shape=shp(), texture=tex(), hue=hues[1], depth=0),
    ]
    return w, h, n, bg, pan, objects


def _pan(rng: np.random.Generator, pan_dir: tuple[float, float], lo: float, hi: float) -> tuple[float, float]:
    """The camera pan per frame: a speed drawn in [lo, hi) along `pan_dir`."""
    speed = rng.uniform(lo, hi)
    return (pan_dir[0] * speed, pan_dir[1] * speed)


_PRESET_BUILDERS = {
    "small_object_pan": _preset_small_object_pan,
    "demo": _preset_demo,
    "occlusion": _preset_occlusion,
    "grow_zoom": _preset_grow_zoom,
    "striped_ball": _preset_striped_ball,
    "leave_reenter": _preset_leave_reenter,
}


def preset_spec(name: str, seed: int = 0, **overrides) -> ClipSpec:
    """The ClipSpec of a named preset; `seed` varies textures, colours, speeds and directions."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    rng = np.random.default_rng([seed, PRESETS.index(name)])
    w, h = 320, 240

    def tex() -> str:
        return str(rng.choice(TEXTURES))

    def shp() -> str:
        return str(rng.choice(SHAPES))

    pdx, pdy = _unit(rng)
    w, h, n, bg, pan, objects = _PRESET_BUILDERS[name](rng, w, h, (pdx, pdy), tex, shp)
    background = "pale_noise" if name == "striped_ball" else tex()
    spec = ClipSpec(name=name, width=w, height=h, num_frames=n, fps=24.0, seed=seed, background=background,
                    background_hue=bg, pan=pan, objects=objects)
    return replace(spec, **overrides) if overrides else spec


def scale_spec(spec: ClipSpec, width: int, height: int) -> ClipSpec:
    """The same shot at another frame size: object sizes, paths and the camera pan scale with the frame."""
    sx, sy = width / spec.width, height / spec.height
    objs = [replace(o, size=(o.size[0] * sx, o.size[1] * sy),
                    path=[(f, x * sx, y * sy, s) for f, x, y, s in o.path]) for o in spec.objects]
    return replace(spec, width=int(width), height=int(height), pan=(spec.pan[0] * sx, spec.pan[1] * sy),
                   objects=objs)


def write_clip(clip: Clip, out_dir: str | Path, video: bool = True, images: bool = False,
               crf: int = 12) -> dict[str, Path]:
    """Write the clip (clip.mp4 and/or frames/00000.png...) and gt/<obj_id>/<frame:05d>.png (0/255) masks.

    A supersampled clip also gets gt_alpha/<obj_id>/<frame:05d>.png: 16-bit true coverage (0..65535).
    """
    if not (video or images):
        raise ValueError("write_clip needs video=True or images=True")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"gt": out / "gt", "spec": out / "clip.json"}
    soft = bool(clip.spec.supersample)
    if soft:
        paths["gt_alpha"] = out / "gt_alpha"
    for oid in clip.obj_ids:
        (out / "gt" / str(oid)).mkdir(parents=True, exist_ok=True)
        if soft:
            (out / "gt_alpha" / str(oid)).mkdir(parents=True, exist_ok=True)
    writer = None
    if video:
        import imageio_ffmpeg

        paths["video"] = out / "clip.mp4"
        writer = imageio_ffmpeg.write_frames(
            str(paths["video"]), (clip.width, clip.height), fps=clip.fps, codec="libx264", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=2, output_params=["-crf", str(int(crf)), "-preset", "medium"])
        writer.send(None)
    if images:
        paths["frames"] = out / "frames"
        paths["frames"].mkdir(exist_ok=True)
    try:
        for i in range(clip.num_frames):
            frame, labels, alphas = clip.render_soft(i) if soft else (*clip.render(i), {})
            if writer is not None:
                writer.send(np.ascontiguousarray(frame))
            if images:
                cv2.imwrite(str(paths["frames"] / f"{i:05d}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            for oid in clip.obj_ids:
                cv2.imwrite(str(out / "gt" / str(oid) / f"{i:05d}.png"), np.where(labels == oid, 255, 0).astype(np.uint8))
                if soft:
                    a16 = np.round(np.clip(alphas[oid], 0.0, 1.0) * 65535.0).astype(np.uint16)
                    cv2.imwrite(str(out / "gt_alpha" / str(oid) / f"{i:05d}.png"), a16)
    finally:
        if writer is not None:
            writer.close()
    paths["spec"].write_text(json.dumps(asdict(clip.spec), indent=1))
    return paths


def load_spec(path: str | Path) -> ClipSpec:
    """Read back the clip.json that write_clip stores, so a written clip can be re-rendered exactly."""
    d = json.loads(Path(path).read_text())
    objs = [ObjectSpec(**{**o, "size": tuple(o["size"]), "path": [tuple(k) for k in o["path"]]})
            for o in d.pop("objects", [])]
    return ClipSpec(**{**d, "pan": tuple(d["pan"]), "objects": objs})


def main(argv: list[str] | None = None) -> int:
    """`python -m track_anything.tam_blender_addon.synth PRESET OUT [--seed N] [--images] [--no-video]`."""
    import argparse

    ap = argparse.ArgumentParser(prog="synth", description="Write a synthetic clip with exact ground truth.")
    ap.add_argument("preset", choices=PRESETS)
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", default=None, metavar="WxH", help="render the preset's shot at this frame size")
    ap.add_argument("--images", action="store_true", help="also write frames/00000.png ...")
    ap.add_argument("--no-video", action="store_true", help="do not write clip.mp4 (implies --images)")
    args = ap.parse_args(argv)
    spec = preset_spec(args.preset, seed=args.seed)
    if args.size:
        sw, sh = (int(v) for v in args.size.lower().split("x"))
        spec = scale_spec(spec, sw, sh)
    paths = write_clip(make_clip(spec), args.out, video=not args.no_video,
                       images=args.images or args.no_video)
    for key, path in sorted(paths.items()):
        print(f"{key}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
