"""XMem tracking throughput on synthetic moving-texture frames (for ``tam bench xmem``).

Frames are made on the fly (a random texture panning under a few moving discs), so the
benchmark needs no video and its memory does not grow with the number of frames. The
first frame's discs are the reference; every later frame is one ``track`` call,
including the frame upload and the label-map download, which is what the pipeline pays.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np


class MovingTexture:
    """Deterministic synthetic video: a panning texture with `objects` discs moving across it."""

    def __init__(self, size: tuple[int, int], objects: int = 1, seed: int = 0):
        self.h, self.w = int(size[0]), int(size[1])
        rng = np.random.default_rng(seed)
        small = rng.integers(0, 256, (self.h // 8 + 2, self.w // 8 + 66, 3), dtype=np.uint8)
        self.texture = np.repeat(np.repeat(small, 8, 0), 8, 1)  # blocky texture, 512 px wider than the frame
        self.colors = rng.integers(0, 256, (objects, 3), dtype=np.uint8)
        self.radius = max(3, min(self.h, self.w) // 10)
        self.starts = rng.uniform(0.2, 0.8, (objects, 2))
        self.speeds = rng.uniform(-0.004, 0.004, (objects, 2))
        yy, xx = np.mgrid[0 : self.h, 0 : self.w]
        self._yy, self._xx = yy, xx

    def labels(self, t: int) -> np.ndarray:
        """uint8 (H, W) label map of frame `t`: disc i has id i + 1 (later discs on top)."""
        lab = np.zeros((self.h, self.w), np.uint8)
        for i, (start, speed) in enumerate(zip(self.starts, self.speeds, strict=True)):
            cy, cx = (np.abs(((start + speed * t) % 2.0) - 1.0) * 0.6 + 0.2) * (self.h, self.w)
            lab[(self._yy - cy) ** 2 + (self._xx - cx) ** 2 <= self.radius**2] = i + 1
        return lab

    def frame(self, t: int) -> np.ndarray:
        """uint8 RGB (H, W, 3) frame `t`."""
        off = (2 * t) % 512
        img = self.texture[: self.h, off : off + self.w].copy()
        lab = self.labels(t)
        for i, color in enumerate(self.colors):
            img[lab == i + 1] = color
        return img


def run_bench(
    size: tuple[int, int] = (480, 854),
    frames: int = 300,
    objects: int = 1,
    device: str = "auto",
    weights: str | Path = "synthetic",
    fast: bool = False,
    process_size: int | None = 480,
) -> dict:
    """Track `frames` synthetic frames of `size` (H, W); returns fps, peak memory, device and weights label.

    fps counts the tracked frames (not the reference). peak_mem_bytes is the CUDA peak
    allocated during the run on a GPU, and the process's peak resident memory on a CPU.
    """
    import torch

    from .propagator import XMemPropagator

    video = MovingTexture(size, objects)
    prop = XMemPropagator(weights, device=device, process_size=process_size, fast=fast)
    cuda = prop.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(prop.device)
        torch.cuda.reset_peak_memory_stats(prop.device)
    prop.add_reference(video.frame(0), video.labels(0), list(range(1, objects + 1)))
    t0 = time.perf_counter()
    for t in range(1, max(1, frames)):
        prop.track(video.frame(t))
    if cuda:
        torch.cuda.synchronize(prop.device)
    elapsed = time.perf_counter() - t0
    n = max(1, frames) - 1
    if cuda:
        peak = int(torch.cuda.max_memory_allocated(prop.device))
        name = f"cuda ({torch.cuda.get_device_name(prop.device)})"
    else:
        peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        name = str(prop.device)
    return {
        "fps": n / elapsed if elapsed > 0 and n > 0 else 0.0,
        "peak_mem_bytes": peak,
        "device": name,
        "weights_label": prop.weights_label,
        "frames": n,
        "size": [int(size[0]), int(size[1])],
        "objects": int(objects),
        "fast": bool(prop.fast),
        **_fast_parity(prop),
    }


FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "xmem"


def _fast_parity(prop) -> dict:
    """In fast mode, the fast path's max |probs| deviation from fp32 on the parity fixture (goal: <= 2e-2)."""
    if not prop.fast or not (FIXTURE / "inputs.npz").is_file():
        return {}
    from .parity import fast_deviation

    return {"fast_vs_fp32_max_abs_probs": fast_deviation(FIXTURE, str(prop.device))}


def _size(text: str) -> tuple[int, int]:
    """'480x854' (HxW) -> (480, 854)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 480x854, got {text!r}") from None
    return h, w


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """Add run_bench's options to an argparse (sub)parser (the `tam bench xmem` CLI)."""
    parser.add_argument("--size", type=_size, default=(480, 854), help="frame size HxW (default 480x854)")
    parser.add_argument("--frames", type=int, default=300, help="frames to generate (default 300)")
    parser.add_argument("--objects", type=int, default=1, help="number of tracked objects (default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    parser.add_argument("--weights", default="synthetic", help="XMem checkpoint path or 'synthetic'")
    parser.add_argument("--fast", action="store_true", help="CUDA fp16 autocast instead of fp32")


def bench_from_args(args: argparse.Namespace) -> dict:
    """Run the benchmark with options parsed by `add_bench_args`."""
    return run_bench(
        size=args.size,
        frames=args.frames,
        objects=args.objects,
        device=args.device,
        weights=args.weights,
        fast=args.fast,
    )
