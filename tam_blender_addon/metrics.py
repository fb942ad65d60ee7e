"""DAVIS video-segmentation measures (region J, boundary F), alpha-matte errors, and a folder evaluator.

Worker side (OpenCV allowed). The boundary measure follows the DAVIS 2017 evaluation
conventions: one-pixel boundaries from `seg2bmap` (a pixel is a boundary pixel when it
differs from its right, lower or lower-right neighbour), a match tolerance of
ceil(0.008 * image diagonal) pixels applied by dilating with a disk, and the DAVIS empty
cases (both boundaries empty -> F = 1, exactly one empty -> F = 0).

Alpha errors (used when the ground truth is soft: 16-bit PNG) follow the alpha-matting
benchmark's reference code (Rhemann et al.; the Adobe/DIM MATLAB scripts), with alpha in
0..1 and the whole frame as the region (a video matte has no trimap): SAD = sum |a - g| / 1000,
MSE = mean (a - g)^2, Grad = sum (|grad a| - |grad g|)^2 / 1000 with Gaussian-derivative
filters of sigma 1.4, Conn = connectivity error with threshold step 0.1, / 1000. dtSSD
(Erofeev et al. 2015, temporal coherence) is sqrt(mean(((a_t - a_t-1) - (g_t - g_t-1))^2))
x 100 per frame pair, as the video-matting literature reports it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError, MediaError

BOUND_TH = 0.008
ALPHA_KEYS = ("SAD", "MSE", "Grad", "Conn", "dtSSD")
_FRAME_RE = re.compile(r"^(\d+)\.png$")


def j_measure(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: intersection over union of two binary masks (both empty -> 1)."""
    p, g = _as_bool_pair(pred, gt)
    union = np.count_nonzero(p | g)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(p & g) / union)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask, offset half a pixel toward the origin (DAVIS)."""
    s = np.asarray(seg).astype(bool)
    if s.ndim != 2:
        raise InputError(f"seg2bmap needs a 2-D mask, got shape {s.shape}")
    east = np.zeros_like(s)
    south = np.zeros_like(s)
    southeast = np.zeros_like(s)
    east[:, :-1] = s[:, 1:]
    south[:-1, :] = s[1:, :]
    southeast[:-1, :-1] = s[1:, 1:]
    b = (s ^ east) | (s ^ south) | (s ^ southeast)
    # Last row and column only compare along the edge; the corner is never a boundary.
    b[-1, :] = s[-1, :] ^ east[-1, :]
    b[:, -1] = s[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Disk structuring element (x^2 + y^2 <= r^2) of size (2r+1)^2 as uint8."""
    r = int(radius)
    ax = np.arange(-r, r + 1)
    xx, yy = np.meshgrid(ax, ax)
    return ((xx * xx + yy * yy) <= r * r).astype(np.uint8)


def boundary_tolerance(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    """Match distance in pixels: `bound_th` itself if >= 1, else ceil(bound_th * image diagonal)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def f_measure_prec_rec(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float, float]:
    """Boundary (F, precision, recall) of `pred` against `gt`, DAVIS convention."""
    p, g = _as_bool_pair(pred, gt)
    pb = seg2bmap(p)
    gb = seg2bmap(g)
    kernel = disk(boundary_tolerance(p.shape, bound_th))
    p_dil = cv2.dilate(pb.astype(np.uint8), kernel).astype(bool)
    g_dil = cv2.dilate(gb.astype(np.uint8), kernel).astype(bool)
    n_p = int(np.count_nonzero(pb))
    n_g = int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    elif n_p == 0:
        precision, recall = 1.0, 0.0
    elif n_g == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = np.count_nonzero(pb & g_dil) / n_p
        recall = np.count_nonzero(gb & p_dil) / n_g
    if precision + recall == 0:
        return 0.0, float(precision), float(recall)
    return float(2 * precision * recall / (precision + recall)), float(precision), float(recall)


def f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary accuracy F of `pred` against `gt` (DAVIS f_measure)."""
    return f_measure_prec_rec(pred, gt, bound_th)[0]


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool, same 2-D shape, else InputError."""
    p = np.asarray(pred).astype(bool)
    g = np.asarray(gt).astype(bool)
    if p.shape != g.shape or p.ndim != 2:
        raise InputError(f"masks differ in shape: prediction {p.shape}, ground truth {g.shape}")
    return p, g


def _as_float_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both alphas as float64 0..1, same 2-D shape, else InputError."""
    p = np.asarray(pred, np.float64)
    g = np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 2:
        raise InputError(f"alphas differ in shape: prediction {p.shape}, ground truth {g.shape}")
    return p, g


def sad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of absolute differences of two 0..1 alphas, in thousands (matting benchmark SAD)."""
    p, g = _as_float_pair(pred, gt)
    return float(np.abs(p - g).sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean squared error of two 0..1 alphas over the frame."""
    p, g = _as_float_pair(pred, gt)
    return float(np.mean((p - g) ** 2))


def _gauss_derivative_kernel(sigma: float) -> np.ndarray:
    """The reference `gaussgradient` x-kernel: gauss(y) * dgauss(x), unit L2 norm, epsilon 1e-2 support."""
    half = int(math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * 1e-2))))
    ax = np.arange(-half, half + 1, dtype=np.float64)
    g = np.exp(-ax ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    dg = -ax * g / sigma ** 2
    k = g[:, None] * dg[None, :]
    return k / math.sqrt(float((k * k).sum()))


def gradient_error(pred: np.ndarray, gt: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error: sum of squared differences of Gaussian-gradient magnitudes, / 1000."""
    p, g = _as_float_pair(pred, gt)
    kx = _gauss_derivative_kernel(sigma)
    ky = np.ascontiguousarray(kx.T)

    def amp(a: np.ndarray) -> np.ndarray:
        gx = cv2.filter2D(a, cv2.CV_64F, kx, borderType=cv2.BORDER_REPLICATE)
        gy = cv2.filter2D(a, cv2.CV_64F, ky, borderType=cv2.BORDER_REPLICATE)
        return np.sqrt(gx * gx + gy * gy)

    return float(((amp(p) - amp(g)) ** 2).sum() / 1000.0)


def connectivity_error(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error (Rhemann et al.; reference code's definition, 4-connectivity), / 1000."""
    p, g = _as_float_pair(pred, gt)
    steps = np.arange(0.0, 1.0 + step / 2, step)
    l_map = np.full(p.shape, -1.0)
    for ii in range(1, len(steps)):
        both = ((p >= steps[ii]) & (g >= steps[ii])).astype(np.uint8)
        n, cc, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4)
        omega = np.zeros(p.shape, bool)
        if n > 1:
            omega = cc == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        l_map[(l_map == -1) & ~omega] = steps[ii - 1]
    l_map[l_map == -1] = 1.0
    pd, gd = p - l_map, g - l_map
    p_phi = 1.0 - pd * (pd >= 0.15)
    g_phi = 1.0 - gd * (gd >= 0.15)
    return float(np.abs(p_phi - g_phi).sum() / 1000.0)


def dtssd(pred_t: np.ndarray, pred_prev: np.ndarray, gt_t: np.ndarray, gt_prev: np.ndarray) -> float:
    """Temporal coherence error of one frame pair (Erofeev et al.), x 100 as video-matting papers report it."""
    p, g = _as_float_pair(pred_t, gt_t)
    pp, gp = _as_float_pair(pred_prev, gt_prev)
    if p.shape != pp.shape:
        raise InputError(f"frames differ in shape: {p.shape} and {pp.shape}")
    return float(math.sqrt(float((((p - pp) - (g - gp)) ** 2).mean())) * 100.0)


def alpha_errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """SAD, MSE, Grad and Conn of one frame's alpha against soft ground truth."""
    return {"SAD": sad(pred, gt), "MSE": mse(pred, gt), "Grad": gradient_error(pred, gt),
            "Conn": connectivity_error(pred, gt)}


def read_alpha_png(path: str | Path) -> tuple[np.ndarray, bool]:
    """A matte PNG as float32 alpha 0..1 and whether it is soft (16-bit); 8-bit reads as /255."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if img is None:
        raise MediaError(f"mask {path} cannot be read")
    if img.ndim == 3:
        img = img[..., 0] if img.shape[2] < 3 else cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY)
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0, True
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0, False
    raise MediaError(f"mask {path} has an unsupported pixel type {img.dtype}")


def _frames_of(folder: Path) -> dict[int, Path]:
    """Frame number -> file for the NNNNN.png files of one object folder."""
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _FRAME_RE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return out


def _object_dirs(root: Path, what: str) -> dict[str, Path]:
    """Object folder name -> folder under a results root."""
    if not root.is_dir():
        raise InputError(f"{what} folder {root} does not exist")
    return {p.name: p for p in root.iterdir() if p.is_dir()}


def evaluate_dirs(pred_dir: str | Path, gt_dir: str | Path, *, exclude_first_last: bool = False,
                  bound_th: float = BOUND_TH) -> dict:
    """J, F and J&F per object and overall for folders laid out as DIR/<object_id>/<frame:05d>.png.

    Both folders must hold the same objects and, per object, the same frames (else
    InputError). `exclude_first_last` drops each object's first and last frame, as the
    DAVIS semi-supervised benchmark does. Returns {"objects": {id: {"J", "F", "J&F",
    "num_frames", "J_frames", "F_frames"}}, "mean": {"J", "F", "J&F"}, "num_objects"}
    (the mean's keys are repeated at the top level); the overall J and F are means over
    objects and J&F is their average. When the ground truth is soft (16-bit PNG), every
    object and the mean also get SAD, MSE, Grad, Conn (means over frames) and dtSSD (mean
    over consecutive frame pairs), and "soft" is True; J and F then compare the prediction
    (alpha >= 0.5) with the ground truth's alpha > 0.5.
    """
    pred_root, gt_root = Path(pred_dir), Path(gt_dir)
    gt_objs = _object_dirs(gt_root, "ground-truth")
    pred_objs = _object_dirs(pred_root, "prediction")
    if not gt_objs:
        raise InputError(f"ground-truth folder {gt_root} holds no object folders")
    missing = sorted(set(gt_objs) - set(pred_objs), key=_natural)
    extra = sorted(set(pred_objs) - set(gt_objs), key=_natural)
    if missing:
        raise InputError(f"prediction folder {pred_root} lacks object(s) {', '.join(missing)}")
    if extra:
        raise InputError(f"prediction folder {pred_root} has object(s) {', '.join(extra)} not in the ground truth")
    per_object: dict[int | str, dict] = {}
    for name in sorted(gt_objs, key=_natural):
        gt_frames = _frames_of(gt_objs[name])
        pred_frames = _frames_of(pred_objs[name])
        if not gt_frames:
            raise InputError(f"ground-truth object {name} has no frames")
        if set(gt_frames) != set(pred_frames):
            lack = sorted(set(gt_frames) - set(pred_frames))
            more = sorted(set(pred_frames) - set(gt_frames))
            detail = f"lacks frame {lack[0]:05d}" if lack else f"has extra frame {more[0]:05d}"
            raise InputError(f"object {name}: the prediction {detail} (frames must match the ground truth)")
        frames = sorted(gt_frames)
        if exclude_first_last:
            frames = frames[1:-1]
            if not frames:
                raise InputError(f"object {name} has too few frames to drop the first and last")
        js: list[float] = []
        fs: list[float] = []
        errs: list[dict[str, float]] = []
        dts: list[float] = []
        prev: tuple[int, np.ndarray, np.ndarray] | None = None
        for f in frames:
            g_a, soft = read_alpha_png(gt_frames[f])
            p_a, _ = read_alpha_png(pred_frames[f])
            if g_a.shape != p_a.shape:
                raise InputError(f"object {name} frame {f:05d}: prediction is {p_a.shape[1]}x{p_a.shape[0]}, "
                                 f"ground truth is {g_a.shape[1]}x{g_a.shape[0]}")
            g, p = (g_a > 0.5, p_a >= 0.5) if soft else (g_a >= 0.5, p_a >= 0.5)
            js.append(j_measure(p, g))
            fs.append(f_measure(p, g, bound_th))
            if soft:
                errs.append(alpha_errors(p_a, g_a))
                if prev is not None and prev[0] == f - 1:
                    dts.append(dtssd(p_a, prev[1], g_a, prev[2]))
                prev = (f, p_a, g_a)
        j, fm = float(np.mean(js)), float(np.mean(fs))
        key: int | str = int(name) if name.isdigit() else name
        per_object[key] = {"J": j, "F": fm, "J&F": (j + fm) / 2, "num_frames": len(frames),
                           "J_frames": js, "F_frames": fs}
        if errs and len(errs) == len(frames):
            per_object[key].update({k: float(np.mean([e[k] for e in errs])) for k in ALPHA_KEYS[:4]})
            per_object[key]["dtSSD"] = float(np.mean(dts)) if dts else 0.0
            per_object[key]["MSE_frames"] = [e["MSE"] for e in errs]
    j_mean = float(np.mean([o["J"] for o in per_object.values()]))
    f_mean = float(np.mean([o["F"] for o in per_object.values()]))
    mean = {"J": j_mean, "F": f_mean, "J&F": (j_mean + f_mean) / 2}
    if all("MSE" in o for o in per_object.values()):
        mean.update({k: float(np.mean([o[k] for o in per_object.values()])) for k in ALPHA_KEYS})
    return {"objects": per_object, "mean": mean, **mean, "num_objects": len(per_object),
            "soft": "MSE" in mean}


def _natural(s: str) -> tuple:
    """Numeric folder names in numeric order, others after them."""
    return (0, int(s), "") if s.isdigit() else (1, 0, s)
