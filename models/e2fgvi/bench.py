"""Throughput benchmark of the production E2FGVI-HQ Inpainter on a procedural clip.

`tam bench e2fgvi` (wired by the CLI) calls `run_bench`. The clip is generated here (no
files): textured frames with a moving ellipse as the hole, so timings do not depend on
decoding and are comparable between machines.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .inpainter import E2FGVIInpainter


def synthetic_frame(i: int, size: tuple[int, int]) -> np.ndarray:
    """Frame `i` of a panning texture (RGB uint8) of `size` (h, w)."""
    h, w = size
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :] + 3.0 * i
    r = 127 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)
    g = 127 + 100 * np.sin((x + y) / 31.0)
    b = (x * 0.5 + y * 0.25) % 256
    return np.clip(np.stack(np.broadcast_arrays(r, g, b), -1), 0, 255).astype(np.uint8)


def synthetic_mask(i: int, size: tuple[int, int]) -> np.ndarray:
    """A moving ellipse covering about 5% of the frame (bool)."""
    h, w = size
    cy, cx = h * 0.5, w * (0.3 + 0.4 * ((i % 50) / 50.0))
    ry, rx = h * 0.18, w * 0.09
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


def _peak_host_bytes() -> int:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def run_bench(size: tuple[int, int] = (480, 864), frames: int = 100, device: str = "auto",
              weights: str | Path = "synthetic", fast: bool = False) -> dict:
    """Inpaint `frames` procedural frames of `size` (h, w); seconds per frame and peak memory.

    `weights`: "synthetic", "official" (the installed checkpoint) or a checkpoint path.

    `fast` uses the CUDA half-precision path (fp16 autocast + fused attention); on CPU it
    has no effect. Peak memory is the GPU's peak allocation on CUDA, else the process's
    peak resident size.
    """
    if weights == "official":  # the installed E2FGVI-HQ-CVPR22.pth from the registry
        from ..weights import resolve

        weights = resolve("e2fgvi_hq")
    inp = E2FGVIInpainter(weights, device=device, work_size=size,
                          precision="fp16" if fast else "fp32")
    dev = inp.device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    done = 0
    start = time.perf_counter()
    for _idx, _frame in inp.inpaint(lambda i: synthetic_frame(i, size), lambda i: synthetic_mask(i, size),
                                    range(frames)):
        done += 1
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _peak_host_bytes()
    return {
        "s_per_frame": elapsed / max(done, 1),
        "peak_mem_bytes": int(peak),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "weights_label": inp.weights_label,
        "frames": done,
        "size": [int(size[0]), int(size[1])],
        "precision": inp.precision,
        "windows_run": inp.windows_run,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m track_anything.models.e2fgvi.bench [--size H W] [--frames N] [--fast]`: print the result as JSON."""
    parser = argparse.ArgumentParser(description="E2FGVI-HQ inpainting benchmark")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 864), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", default="synthetic")
    parser.add_argument("--fast", action="store_true")
    args = parser.parse_args(argv)
    res = run_bench(tuple(args.size), args.frames, args.device, args.weights, args.fast)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
