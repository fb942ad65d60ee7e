"""Every GPU figure the issues ask for, in one run: `python3 scripts/gpu_bench.py OUT_DIR [--only NAME ...]`.

Meant for a lent GPU machine (see BENCHMARKS.md): it needs only torch, torchvision,
numpy and opencv from the machine, imports the repo as `track_anything` without an
install, and writes one JSON line per benchmark to OUT_DIR/gpu_bench.jsonl plus a
Markdown table (OUT_DIR/gpu_bench.md) ready to paste into BENCHMARKS.md. Each line
names the equivalent `tam bench` command, so every figure keeps its command.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (name, equivalent `tam bench` command, which benchmark, its keyword arguments)
BENCHES = [
    ("xmem_fp32_480p", "tam bench xmem --weights synthetic --size 480x854 --frames 300 --objects 1 --device cuda",
     "xmem", dict(size=(480, 854), frames=300, objects=1, device="cuda")),
    ("xmem_fast_480p", "tam bench xmem --weights synthetic --size 480x854 --frames 300 --objects 1 --device cuda --fast",
     "xmem", dict(size=(480, 854), frames=300, objects=1, device="cuda", fast=True)),
    ("xmem_fast_1080p_3obj", "tam bench xmem --weights synthetic --size 1080x1920 --frames 300 --objects 3 --device cuda --fast",
     "xmem", dict(size=(1080, 1920), frames=300, objects=3, device="cuda", fast=True)),
    ("xmem_fast_2000_frames", "tam bench xmem --weights synthetic --size 480x854 --frames 2000 --objects 1 --device cuda --fast",
     "xmem", dict(size=(480, 854), frames=2000, objects=1, device="cuda", fast=True)),
    ("e2fgvi_fp32_480p", "tam bench e2fgvi --weights synthetic --size 480x864 --frames 100 --device cuda",
     "e2fgvi", dict(size=(480, 864), frames=100, device="cuda")),
    ("e2fgvi_fast_480p", "tam bench e2fgvi --weights synthetic --size 480x864 --frames 100 --device cuda --fast",
     "e2fgvi", dict(size=(480, 864), frames=100, device="cuda", fast=True)),
    ("e2fgvi_fast_1080p", "tam bench e2fgvi --weights synthetic --size 1080x1920 --frames 100 --device cuda --fast",
     "e2fgvi", dict(size=(1080, 1920), frames=100, device="cuda", fast=True)),
    ("sam_vit_h_fast", "tam bench sam --sam-model vit_h --device cuda --fast",
     "sam", dict(model_type="vit_h", device="cuda", fast=True)),
    # SAM 2.1 per model size at 1080p input (the network sees 1024x1024): fp32, then half precision with its
    # deviation from fp32 on the parity fixture (masks, object scores, presence flips)
    *(
        (f"sam2_{size}_{mode}_1080p",
         f"tam bench sam2 --sam2-model {size} --weights synthetic --size 1080x1920 --frames 100 --device cuda"
         + (" --fast" if mode == "fast" else ""),
         "sam2", dict(size=(1080, 1920), frames=100, objects=1, device="cuda", model_size=size,
                      fast=mode == "fast"))
        for size in ("tiny", "small", "base_plus", "large") for mode in ("fp32", "fast")
    ),
]


def _register() -> None:
    spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()


def _bench(kind: str, kwargs: dict) -> dict:
    if kind == "xmem":
        from track_anything.models.xmem.bench import run_bench
    elif kind == "e2fgvi":
        from track_anything.models.e2fgvi.bench import run_bench
    elif kind == "sam2":
        from track_anything.models.sam2.bench import run_bench
    else:
        from track_anything.models.sam import embed_bench as run_bench
    return run_bench(**kwargs)


def _row(rec: dict) -> str:
    res = rec.get("result") or {}
    gib = res.get("peak_mem_bytes", res.get("peak_mem_mb", 0) * 2**20) / 2**30
    if "fps" in res:
        figure = f"{res['fps']:.1f} fps"
        if "fast_vs_fp32_max_abs_probs" in res:
            figure += f", fast vs fp32 max abs {res['fast_vs_fp32_max_abs_probs']:.1e}"
        if "half_vs_fp32_max_abs_mask_logits" in res:
            figure += (f", half vs fp32 on the fixture: mask logits {res['half_vs_fp32_max_abs_mask_logits']:.1e}, "
                       f"object scores {res['half_vs_fp32_max_abs_obj_scores']:.1e}, "
                       f"presence flips {res['half_vs_fp32_presence_flips']}")
    elif "s_per_frame" in res:
        figure = f"{res['s_per_frame']:.3f} s/frame"
    elif "ms_embed" in res:
        figure = f"embed {res['ms_embed']:.0f} ms, click {res.get('ms_predict', 0):.1f} ms"
    else:
        figure = f"FAILED: {rec.get('error', '?')}"
    return f"| {rec['name']} | {figure} | {gib:.2f} GiB | `{rec['command']}` |"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks (all by default) and write the JSON lines and the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names (default: all)")
    ap.add_argument("--smoke", action="store_true",
                    help="check the script itself on the CPU: tiny sizes, 3 frames, no SAM, SAM 2.1 tiny at input 64")
    args = ap.parse_args(argv)
    _register()
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    records = []
    for name, command, kind, kwargs in BENCHES:
        if args.only and name not in args.only:
            continue
        if args.smoke:
            if kind == "sam" or (kind == "sam2" and kwargs["model_size"] != "tiny"):
                continue
            kwargs = {**kwargs, "device": "cpu", "frames": 3, "size": (64, 96)}
            if kind == "sam2":
                kwargs["image_size"] = 64
        t0 = time.perf_counter()
        rec = {"name": name, "command": command, "gpu": device, "torch": torch.__version__}
        try:
            rec["result"] = _bench(kind, kwargs)
        except Exception as exc:  # noqa: BLE001 - one failing benchmark must not hide the others
            rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["traceback"] = traceback.format_exc()
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        records.append(rec)
        print(json.dumps(rec, default=str), flush=True)
        with open(args.out / "gpu_bench.jsonl", "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    table = [f"GPU: {device}, torch {torch.__version__}, synthetic weights", "",
             "| benchmark | figure | peak GPU memory | command |", "|---|---|---|---|"]
    table += [_row(r) for r in records]
    (args.out / "gpu_bench.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0 if all("result" in r for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
