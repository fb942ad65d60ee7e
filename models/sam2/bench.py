"""SAM 2.1 tracking throughput and memory on synthetic moving-texture frames (for ``tam bench sam2``),
and the half-precision deviation from fp32 on the parity fixture.

Frames are made on the fly (models/xmem/bench.py's MovingTexture), so the benchmark holds no frame
list; every tracked frame is one streaming step of `Sam2VideoTracker`, including the frame upload and
the logits download, which is what the pipeline pays.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch

from ..device import half_dtype
from ..xmem.bench import MovingTexture, _size
from .network import SIZES
from .tracker import Sam2VideoTracker, build_network

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "sam2"


def run_bench(size: tuple[int, int] = (480, 854), frames: int = 100, objects: int = 1, device: str = "auto",
              weights: str | Path = "synthetic", fast: bool = False, model_size: str = "tiny",
              image_size: int = 1024) -> dict:
    """Track `frames` synthetic frames of `size` (H, W) with `objects` objects; fps, peak memory, labels.

    fps counts the tracked frames after the keyframe. peak_mem_bytes is the CUDA peak allocated on a GPU
    and the process's peak resident memory on a CPU. `fast` = the half precision of `models.device.half_dtype` (bf16/fp16 on CUDA; fp32 elsewhere).
    """
    net, label, dev = build_network(model_size, weights, device, image_size)
    video = MovingTexture(size, objects)
    tracker = Sam2VideoTracker(net, video.frame, max(2, frames), half=fast)
    lab0 = video.labels(0)
    for i in range(1, objects + 1):
        tracker.add_keyframe(0, i, mask=lab0 == i)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    steps = tracker.propagate(start=1) if frames > 1 else iter(())
    t0 = time.perf_counter()
    n = sum(1 for _ in steps)
    if cuda:
        torch.cuda.synchronize(dev)
    elapsed = time.perf_counter() - t0
    if cuda:
        peak, name = int(torch.cuda.max_memory_allocated(dev)), f"cuda ({torch.cuda.get_device_name(dev)})"
    else:
        peak, name = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, str(dev)
    out = {
        "fps": n / elapsed if elapsed > 0 and n else 0.0,
        "peak_mem_bytes": peak,
        "device": name,
        "weights_label": label,
        "model_size": model_size,
        "image_size": image_size,
        "frames": n,
        "size": [int(size[0]), int(size[1])],
        "objects": int(objects),
        "fast": half_dtype(dev, fast, prefer_bf16=True) is not None,
    }
    if out["fast"]:
        out.update(half_deviation(str(dev)))
    elif fast:
        out["half_note"] = f"no half precision on {dev.type}: it computed in fp32 (models.device.half_dtype)"
    return out


def half_deviation(device: str = "cuda", fixture: Path = FIXTURE) -> dict:
    """Max |Δ| of the half-precision path from fp32 on the parity fixture's calls (masks, object scores),
    and how many object-frames changed presence (score sign)."""
    from .parity import run

    ref = run(fixture, device=device, threads=None)
    half = run(fixture, device=device, threads=None, half=True)
    keys = [k for k in ref if k.startswith("call") and (k.endswith("_masks") or k.endswith("_obj_scores"))]
    masks = [k for k in keys if k.endswith("_masks")]
    scores = [k for k in keys if k.endswith("_obj_scores")]
    both = [np.isfinite(ref[k]) & (np.abs(ref[k]) < 1000) & (np.abs(half[k]) < 1000) for k in masks]
    return {
        "half_vs_fp32_max_abs_mask_logits": max(float(np.abs(half[k] - ref[k])[m].max(initial=0.0))
                                                for k, m in zip(masks, both, strict=True)),
        "half_vs_fp32_max_abs_obj_scores": max(float(np.abs(half[k] - ref[k]).max()) for k in scores),
        "half_vs_fp32_presence_flips": int(sum(int((np.sign(half[k]) != np.sign(ref[k])).sum()) for k in scores)),
    }


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    """run_bench's options on an argparse (sub)parser (the `tam bench sam2` CLI)."""
    parser.add_argument("--size", type=_size, default=(480, 854), help="frame size HxW (default 480x854)")
    parser.add_argument("--frames", type=int, default=100, help="frames to generate (default 100)")
    parser.add_argument("--objects", type=int, default=1, help="number of tracked objects (default 1)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N, mps (default auto)")
    parser.add_argument("--weights", default="synthetic", help="SAM 2.1 checkpoint path or 'synthetic'")
    parser.add_argument("--fast", action="store_true", help="bf16/fp16 autocast on CUDA instead of fp32 (no effect on MPS/CPU)")
    parser.add_argument("--sam2-model", default="tiny", choices=SIZES, help="model size (default tiny)")
    parser.add_argument("--image-size", type=int, default=1024, help="network input size (default 1024)")


def bench_from_args(args: argparse.Namespace) -> dict:
    """Run the benchmark with options parsed by `add_bench_args`."""
    return run_bench(size=args.size, frames=args.frames, objects=args.objects, device=args.device,
                     weights=args.weights, fast=args.fast, model_size=args.sam2_model, image_size=args.image_size)
