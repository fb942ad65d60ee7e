"""Compare edge-refinement methods on soft-ground-truth clips: quality (MSE, SAD, Grad, dtSSD) and speed.

    python scripts/matte_bench.py --size 1920x1080 --frames 8 [--methods binary,guided,ours,cf,lbdm]
    python scripts/matte_bench.py --size 3840x2160 --speed

Each clip kind (motion blur, strands, antialiasing only) is rendered with exact coverage; every
method refines the ground truth's binary masks (coverage > 0.5) of every object, frame after
frame, and is scored against the true coverage. `binary480` / `ours480` start instead from a
tracker-like mask: the coverage at short side 480, thresholded, upsampled (scale = short/480). `cf` / `lbdm` are pymatting's closed-form and
learning-based matting solved on the same trimap as ours, cropped to the band's box (they need
`pip install pymatting`; not a dependency of the product). Speed is frames/s per object of the
refinement call alone (rendering and scoring excluded). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load():
    """Import the package from this checkout as `track_anything`."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.register_root()


def _crop_solve(fn, img: np.ndarray, tri: np.ndarray, pad: int = 8) -> np.ndarray:
    """Run a pymatting estimator on the unknown band's box only; known pixels keep the trimap's value."""
    alpha = (tri == 255).astype(np.float32)
    ys, xs = np.nonzero(tri == 128)
    if ys.size == 0:
        return alpha
    y0, y1 = max(0, ys.min() - pad), min(tri.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(tri.shape[1], xs.max() + pad + 1)
    t = tri[y0:y1, x0:x1].astype(np.float64) / 255.0
    if not (t == 0).any() or not (t == 1).any():
        return alpha
    a = fn(img[y0:y1, x0:x1].astype(np.float64) / 255.0, t)
    sub = alpha[y0:y1, x0:x1]
    unk = tri[y0:y1, x0:x1] == 128
    sub[unk] = np.clip(a[unk], 0, 1)
    return alpha


def run(size: tuple[int, int], frames: int, methods: list[str], seed: int) -> list[dict]:
    """Score every method on every clip kind; one row per (kind, method)."""
    from track_anything.models.matting import EdgeMatter, MatteState, _centroid_shift, guided_filter
    from track_anything.tam_blender_addon import metrics as M
    from track_anything.tam_blender_addon.matte_clips import SOFT_KINDS, soft_clip_spec
    from track_anything.tam_blender_addon.synth import make_clip

    w, h = size
    rows = []
    for kind in SOFT_KINDS:
        clip = make_clip(soft_clip_spec(kind, w, h, frames, seed=seed))
        rendered = [clip.render_soft(i) for i in range(frames)]
        for method in methods:
            errs, dts, secs, calls = [], [], 0.0, 0
            for oid in clip.obj_ids:
                em, prev, last = EdgeMatter(), None, None
                for frame, labels, alphas in rendered:
                    hard, gt = labels == oid, alphas[oid]
                    if method.endswith("480"):  # a tracker's mask: made at short side 480, upsampled
                        sw, sh = round(w * 480 / min(w, h)), round(h * 480 / min(w, h))
                        small = cv2.resize(gt, (sw, sh), interpolation=cv2.INTER_AREA) >= 0.5
                        hard = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) >= 0.5
                    t0 = time.perf_counter()
                    if method in ("binary", "binary480"):
                        a = hard.astype(np.float32)
                    elif method == "ours480":
                        a = em.matte(frame, small, min(w, h) / 480, prev)
                    elif method == "ours":
                        a = em.matte(frame, hard, 1.0, prev)
                    else:
                        motion = _centroid_shift(prev.hard, hard) if prev is not None else (0.0, 0.0)
                        tri = em.trimap(hard, 1.0, motion)
                        if method == "guided":
                            g = guided_filter(frame.astype(np.float32) / 255.0, hard.astype(np.float32), 4, 1e-3)
                            a = np.where(tri == 128, np.clip(g, 0, 1), tri / 255.0).astype(np.float32)
                        else:
                            import pymatting

                            fn = pymatting.estimate_alpha_cf if method == "cf" else pymatting.estimate_alpha_lbdm
                            a = _crop_solve(fn, frame, tri)
                    secs += time.perf_counter() - t0
                    calls += 1
                    prev = MatteState(frame, hard, a)
                    errs.append((M.mse(a, gt), M.sad(a, gt), M.gradient_error(a, gt)))
                    if last is not None:
                        dts.append(M.dtssd(a, last[0], gt, last[1]))
                    last = (a, gt)
            e = np.mean(errs, axis=0)
            rows.append({"kind": kind, "method": method, "MSE": e[0], "SAD": e[1], "Grad": e[2],
                         "dtSSD": float(np.mean(dts)), "fps": calls / secs if secs > 0 else float("inf")})
            print(f"{kind:12s} {method:7s} MSE {e[0]:.2e} SAD {e[1]:.3f} Grad {e[2]:.3f} "
                  f"dtSSD {rows[-1]['dtSSD']:.3f} {rows[-1]['fps']:.1f} fps", file=sys.stderr, flush=True)
    return rows


def speed(size: tuple[int, int], frames: int = 4) -> str:
    """Seconds per frame and object of EdgeMatter on the motion-blur clip, mask from a 480p tracker."""
    import dataclasses
    import resource

    from track_anything.models.matting import EdgeMatter, MatteState, foreground
    from track_anything.tam_blender_addon.matte_clips import soft_clip_spec
    from track_anything.tam_blender_addon.synth import make_clip

    w, h = size
    spec = dataclasses.replace(soft_clip_spec("motion_blur", w, h, frames, seed=7), supersample=2, motion_samples=4)
    clip = make_clip(spec)
    rendered = [clip.render(i) for i in range(frames)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    em, prev, times = EdgeMatter(), None, []
    for img, lab in rendered:
        hard = lab == 1
        t0 = time.perf_counter()
        a = em.matte(img, hard, scale=h / 480, prev=prev)
        times.append(time.perf_counter() - t0)
        prev = MatteState(img, hard, a)
    t0 = time.perf_counter()
    foreground(img, a)
    tf = time.perf_counter() - t0
    per = float(np.mean(times[1:]))
    grow = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    return (f"{w}x{h}: matte {per:.3f} s/frame/object ({1 / per:.1f} fps), foreground {tf:.3f} s, "
            f"peak RSS +{grow:.0f} MB over the rendered clip")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1280x720", help="WxH")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="binary,guided,ours")
    ap.add_argument("--speed", action="store_true", help="only time EdgeMatter (and foreground) at --size")
    args = ap.parse_args(argv)
    _load()
    w, h = (int(v) for v in args.size.lower().split("x"))
    if args.speed:
        print(speed((w, h)))
        return 0
    rows = run((w, h), args.frames, args.methods.split(","), args.seed)
    print(f"| clip ({w}x{h}, {args.frames} frames) | method | MSE | SAD | Grad | dtSSD | frames/s per object |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        fps = "-" if r["method"].startswith("binary") else f"{r['fps']:.1f}"
        print(f"| {r['kind']} | {r['method']} | {r['MSE']:.2e} | {r['SAD']:.3f} | {r['Grad']:.3f} | "
              f"{r['dtSSD']:.3f} | {fps} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
