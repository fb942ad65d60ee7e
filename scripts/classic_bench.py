"""The classic backend through the real CLI on rendered clips: J and tracking time per frame size, in one run.

`python scripts/classic_bench.py OUT_DIR [--preset grow_zoom] [--sizes 480x272,1920x1080,3840x2160]
[--key first|middle] [--pingpong]` renders the preset's shot at each size (synth.scale_spec; clips are
kept in OUT_DIR and reused), runs `tam track --backend classic` from a box around the true mask of the
key frame, then `tam export` and `tam eval`, and prints one line per size with the wall-clock and CPU
time of `tam track` and their ratios to the first size (CPU time is the steadier figure on a shared
machine). `--pingpong` plays the shot forward then backward (twice its length) to expose drift.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "tam_blender_addon" / "launch.py"


def _load_synth():
    """The repo's synthetic clip module, imported without an install."""
    spec = importlib.util.spec_from_file_location("_tam_launch", LAUNCH)
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()
    from track_anything.tam_blender_addon import synth

    return synth


class _PingPong:
    """A clip played forward then backward: what write_clip needs of a Clip."""

    def __init__(self, clip) -> None:
        self._clip = clip
        self.spec, self.obj_ids, self.fps = clip.spec, clip.obj_ids, clip.fps
        self.width, self.height = clip.width, clip.height
        self.num_frames = 2 * clip.num_frames

    def items(self):
        n = self._clip.num_frames
        for k, i in enumerate(list(range(n)) + list(range(n - 1, -1, -1))):
            frame, labels = self._clip.render(i)
            yield k, frame, labels


def _cli(*args: str) -> subprocess.CompletedProcess:
    """Run the worktree's CLI (not the installed `tam`), failing loudly."""
    return subprocess.run([sys.executable, str(LAUNCH), "cli", "-q", *args], check=True, capture_output=True,
                          text=True)


def _child_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes (the CLI and its ffmpeg)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_size(synth, out: Path, preset: str, seed: int, size: tuple[int, int], key: str, pingpong: bool) -> dict:
    """Render (or reuse) the clip at `size`, track it with the CLI from a key-frame box, return J and times."""
    name = f"{preset}_s{seed}_{size[0]}x{size[1]}" + ("_pingpong" if pingpong else "")
    clip_dir = out / name
    if not (clip_dir / "clip.json").exists():
        clip = synth.make_clip(synth.scale_spec(synth.preset_spec(preset, seed=seed), *size))
        synth.write_clip(_PingPong(clip) if pingpong else clip, clip_dir)
    n = len(list((clip_dir / "gt" / "1").glob("*.png")))
    k = 0 if key == "first" else n // 2
    gt = cv2.imread(str(clip_dir / "gt" / "1" / f"{k:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
    ys, xs = np.nonzero(gt)
    box = f"{k}:{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}:1"
    session = clip_dir / f"session_{key}"
    pred = clip_dir / f"pred_{key}"
    for p in (session, pred):
        if p.exists():
            import shutil

            shutil.rmtree(p)
    t0, c0 = time.perf_counter(), _child_cpu()
    _cli("track", str(clip_dir / "clip.mp4"), "--session", str(session), "--backend", "classic", "--box", box,
         "--direction", "both")
    t_track, c_track = time.perf_counter() - t0, _child_cpu() - c0
    _cli("export", str(session), "--format", "png", "--out", str(pred))
    res = json.loads(_cli("eval", str(pred), str(clip_dir / "gt"), "--json").stdout)
    per_frame = []
    for f in sorted((clip_dir / "gt" / "1").glob("*.png")):
        g = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0
        pf = pred / "1" / f.name
        m = cv2.imread(str(pf), cv2.IMREAD_GRAYSCALE) > 0 if pf.exists() else np.zeros_like(g)
        u = (g | m).sum()
        per_frame.append(1.0 if u == 0 else float((g & m).sum() / u))
    return {"clip": name, "size": f"{size[0]}x{size[1]}", "frames": n, "key": key,
            "J": res["mean"]["J"], "J_worst_frame": min(per_frame), "track_s": t_track,
            "track_cpu_s": c_track}


def main(argv: list[str] | None = None) -> int:
    """Benchmark every size in one run and print a line each plus the time ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", default="grow_zoom")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", default="480x272,1920x1080,3840x2160")
    ap.add_argument("--key", choices=["first", "middle"], default="first")
    ap.add_argument("--pingpong", action="store_true")
    args = ap.parse_args(argv)
    synth = _load_synth()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in args.sizes.split(","):
        w, h = (int(v) for v in s.lower().split("x"))
        rows.append(run_size(synth, out, args.preset, args.seed, (w, h), args.key, args.pingpong))
        r = rows[-1]
        print(f"{r['clip']}: J {r['J']:.3f} (worst frame {r['J_worst_frame']:.3f}), tam track {r['track_s']:.1f} s "
              f"wall ({r['track_s'] / rows[0]['track_s']:.1f}x the first size), {r['track_cpu_s']:.1f} s CPU "
              f"({r['track_cpu_s'] / rows[0]['track_cpu_s']:.1f}x)", flush=True)
    (out / "classic_bench.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
