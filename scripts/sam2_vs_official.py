"""CPU time of our SAM 2.1 video predictor vs the official one on the same frames and calls, in one run.

Usage: PYTHONPATH=/path/to/official/sam2:/path/to/its/deps \
       .venv/bin/python scripts/sam2_vs_official.py [FIXTURE_DIR] [--repeats 3] [--threads 1]

FIXTURE_DIR defaults to tests/fixtures/sam2 (its config.json names the model config, image size and
calls). Both predictors get the synthetic-sam2-v1 weights and the same preprocessed frames; the
official one is imported from PYTHONPATH (facebookresearch/sam2 with hydra-core, iopath), never from
this repository. Runs alternate (ours, official, ours, …) and the best of `repeats` is reported, so
load from other processes biases both alike. Also prints the max |Δ| between the two outputs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _register() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()


def official_replay(pred, cfg: dict, images: torch.Tensor, frames: np.ndarray) -> tuple[dict, float]:
    """The fixture's calls on the official predictor (state images replaced, feature cache cleared);
    returns the outputs and the seconds the calls took (init_state and its JPEG decoding not counted)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as td:
        for i in range(len(frames)):
            Image.fromarray(frames[i]).save(f"{td}/{i:05d}.jpg")
        state = pred.init_state(td)
    state["images"], state["cached_features"] = images, {}
    out = {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        for k, call in enumerate(cfg["calls"]):
            a = dict(call.get("args", {}))
            if call["op"] == "reset_state":
                pred.reset_state(state)
            elif call["op"] == "add_new_points_or_box":
                f, _, m = pred.add_new_points_or_box(state, a["frame_idx"], a["obj_id"], points=a.get("points"),
                                                     labels=a.get("labels"), box=a.get("box"),
                                                     clear_old_points=a.get("clear_old_points", True))
                out[f"call{k}_frame{f}_masks"] = m.numpy().copy()
            elif call["op"] == "propagate_in_video":
                for f, _, m in pred.propagate_in_video(state, a.get("start_frame_idx"),
                                                       a.get("max_frame_num_to_track"), a.get("reverse", False)):
                    out[f"call{k}_frame{f}_masks"] = m.numpy().copy()
            else:
                raise SystemExit(f"this script replays clicks, boxes, propagation and reset, not {call['op']}")
    return out, time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fixture", nargs="?", type=Path, default=ROOT / "tests" / "fixtures" / "sam2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    _register()
    from sam2.build_sam import build_sam2_video_predictor  # the official package, from PYTHONPATH

    from track_anything.models.sam2 import parity
    from track_anything.models.sam2.network import load_network
    from track_anything.models.synthetic import synthetic_array

    cfg = json.loads((args.fixture / "config.json").read_text())
    frames = np.load(args.fixture / "inputs.npz")["frames"]
    s = int(cfg["image_size"])
    size = parity.size_of_config(cfg)
    official = build_sam2_video_predictor(cfg["model_config"], ckpt_path=None, device="cpu",
                                          hydra_overrides_extra=cfg["hydra_overrides"][:2], apply_postprocessing=True)
    official.load_state_dict({k: torch.from_numpy(np.array(synthetic_array(
        k, tuple(v.shape), str(v.dtype).replace("torch.", ""), "synthetic-sam2-v1"), copy=True))
        for k, v in official.state_dict().items()}, strict=True)
    official.eval()
    ours, _ = load_network("synthetic", size, s, "cpu")
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
    images = (x - torch.tensor(parity.MEAN).view(1, 3, 1, 1)) / torch.tensor(parity.STD).view(1, 3, 1, 1)

    def run_ours() -> tuple[dict, float]:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = parity._replay(ours, cfg, frames, {}, s, record=False)
        return out, time.perf_counter() - t0

    times: dict[str, list[float]] = {"ours": [], "official": []}
    outs = {}
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("official", lambda: official_replay(official, cfg, images, frames))):
            outs[name], seconds = fn()
            times[name].append(seconds)
    keys = [k for k in outs["official"] if k in outs["ours"]]
    diff = max(float(np.abs(outs["ours"][k] - outs["official"][k]).max()) for k in keys)
    best = {k: min(v) for k, v in times.items()}
    print(json.dumps({"fixture": str(args.fixture), "model_size": size, "image_size": s, "threads": args.threads,
                      "seconds_best": best, "seconds_all": times, "ours_over_official": best["ours"] / best["official"],
                      "max_abs_diff_masks": diff, "arrays_compared": len(keys)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
