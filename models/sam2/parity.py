"""Replay a SAM 2.1 parity fixture's call sequence on our predictor and return the arrays its README names.

Reads only ``inputs.npz`` (frames) and ``config.json`` (image_size, synthetic formula, model config, calls)
from the fixture folder; never the expected outputs. Every op of the official video predictor that the
fixtures use is replayed generically: add_new_points_or_box, add_new_mask, propagate_in_video (start frame,
max frames, reverse) and reset_state. Float32 on the CPU with one thread, as the fixtures were made.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from .network import MEAN, NO_OBJ_SCORE, STD, SYNTHETIC_FORMULA, load_network
from .video import COND, NON_COND, VideoPredictor

CONFIG_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}


def preprocess(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (3, S, S): /255, bilinear resize (no antialias), ImageNet normalisation."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(3, 1, 1)
    return (x[0] - mean) / std


def size_of_config(cfg: dict) -> str:
    """The model size a fixture's config names (its `model_size`, or the official yaml file name)."""
    if cfg.get("model_size"):
        return str(cfg["model_size"])
    stem = Path(str(cfg.get("model_config", "sam2.1_hiera_t.yaml"))).stem  # sam2.1_hiera_t
    tag = stem.rsplit("_", 1)[-1]
    if tag not in CONFIG_SIZES:
        raise InputError(f"unknown SAM 2.1 model config {cfg.get('model_config')!r}")
    return CONFIG_SIZES[tag]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy().astype(np.float32)


class _FirstTaps:
    """Keeps the first tensor seen under each tap name."""

    def __init__(self) -> None:
        self.seen: dict[str, np.ndarray] = {}

    def __call__(self, name: str, t: torch.Tensor) -> None:
        if name not in self.seen:
            self.seen[name] = _np(t)


def _scores(pred: VideoPredictor, state, frame_idx: int, is_cond: bool | None) -> np.ndarray:
    """Each object's object-score logit on a frame, read from the state as the fixtures did."""
    key = None if is_cond is None else COND if is_cond else NON_COND
    vals = []
    for obj in state.objects.values():
        out = pred.frame_output(obj, frame_idx, key)
        vals.append(float(out["object_score_logits"].reshape(-1)[0]) if out is not None else NO_OBJ_SCORE)
    return np.asarray(vals, np.float32)


def run(fixture_dir: Path | str, device: str = "cpu", threads: int | None = 1,
        half: bool = False) -> dict[str, np.ndarray]:
    """Drive the fixture's calls through our predictor; return masks, scores, ids, frames and intermediates.
    `half` runs under the product's half precision (bf16/fp16 autocast on CUDA, `models.device.half_dtype`) (to measure the product's half path against fp32)."""
    fixture_dir = Path(fixture_dir)
    cfg = json.loads((fixture_dir / "config.json").read_text())
    formula = cfg.get("formula", SYNTHETIC_FORMULA)
    if formula != SYNTHETIC_FORMULA:
        raise InputError(f"fixture uses weights formula {formula!r}; only {SYNTHETIC_FORMULA} is known")
    if int(cfg.get("fill_hole_area", 0)) > 0 and cfg.get("hole_filling_effective", False):
        raise InputError("fixture expects hole filling, which the official CPU code does not apply")
    image_size = int(cfg["image_size"])
    with np.load(fixture_dir / "inputs.npz") as data:
        frames = data["frames"]
        masks_in = {k: data[k] for k in data.files if k != "frames"}
    if threads:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        net, _ = load_network(
            "synthetic", size_of_config(cfg), image_size, device,
            dynamic_multimask=bool(cfg.get("dynamic_multimask_via_stability", True)),
            stability_delta=float(cfg.get("dynamic_multimask_stability_delta", 0.05)),
            stability_thresh=float(cfg.get("dynamic_multimask_stability_thresh", 0.98)))
        if half:
            from .tracker import precision

            with precision(torch.device(device), True):
                return _replay(net, cfg, frames, masks_in, image_size)
        if torch.device(device).type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.inference_mode():
            return _replay(net, cfg, frames, masks_in, image_size)
    finally:
        if threads:
            torch.set_num_threads(old_threads)


def _mask_arg(args: dict, masks_in: dict[str, np.ndarray], k: int) -> np.ndarray:
    """A mask prompt: inline in the call's args, or an array of inputs.npz named by an arg value, by the call
    index (a key containing `call{k}`), or the only extra array there is."""
    m = args.get("mask")
    if m is not None and not isinstance(m, str):
        return np.asarray(m)
    for value in ([m] if m is not None else []) + [v for v in args.values() if isinstance(v, str)]:
        if value in masks_in:
            return masks_in[value]
    named = [key for key in masks_in if re.search(rf"call_?{k}(?!\d)", key)]
    if len(named) == 1:
        return masks_in[named[0]]
    if len(masks_in) == 1:
        return next(iter(masks_in.values()))
    raise InputError(f"add_new_mask call {k}: cannot tell which array of inputs.npz is its mask")


def _replay(net, cfg: dict, frames: np.ndarray, masks_in: dict, image_size: int,
            record: bool = True) -> dict[str, np.ndarray]:
    """The calls' outputs; with `record`, also the intermediates (first occurrences) and scores."""
    taps = _FirstTaps()
    pred = VideoPredictor(net, tap=taps if record else None)
    h, w = int(frames.shape[1]), int(frames.shape[2])
    dev = next(net.parameters()).device
    state = pred.init_state(lambda i: preprocess(frames[i], image_size).to(dev), len(frames), h, w)
    out: dict[str, np.ndarray] = {}
    for k, call in enumerate(cfg["calls"]):
        op, args = call["op"], dict(call.get("args", {}))
        if op == "reset_state":
            pred.reset_state(state)
            continue
        if op == "add_new_points_or_box":
            f, _ids, masks = pred.add_new_points_or_box(
                state, int(args["frame_idx"]), int(args["obj_id"]), points=args.get("points"),
                labels=args.get("labels"), clear_old_points=bool(args.get("clear_old_points", True)),
                normalize_coords=bool(args.get("normalize_coords", True)), box=args.get("box"))
            results = [(f, masks)]
        elif op == "add_new_mask":
            f, _ids, masks = pred.add_new_mask(state, int(args["frame_idx"]), int(args["obj_id"]),
                                              _mask_arg(args, masks_in, k))
            results = [(f, masks)]
        elif op == "propagate_in_video":
            results = []
            for f, _ids, masks in pred.propagate_in_video(
                    state, args.get("start_frame_idx"), args.get("max_frame_num_to_track"),
                    bool(args.get("reverse", False))):
                results.append((f, masks))
        else:
            raise InputError(f"unknown call {op!r} in the fixture")
        is_add = op != "propagate_in_video"
        if not record:
            out.update({f"call{k}_frame{f}_masks": _np(m) for f, m in results})
            continue
        for f, masks in results:
            out[f"call{k}_frame{f}_masks"] = _np(masks)
            if is_add:
                obj = state.objects[int(args["obj_id"])]
                is_cond = f in obj.temp[COND]
                out[f"call{k}_frame{f}_obj_scores"] = _scores(pred, state, f, is_cond)
        if not is_add:
            for f, _ in results:
                out[f"call{k}_frame{f}_obj_scores"] = _scores(pred, state, f, None)
        out[f"call{k}_obj_ids"] = np.asarray(state.obj_ids, np.int32)
        out[f"call{k}_frames"] = np.asarray([f for f, _ in results], np.int32)
    if not record:
        return out
    f0 = _FirstTaps()  # frame 0's encoder outputs, whichever frame the calls touched first
    probe = VideoPredictor(net, tap=f0)
    probe.features(probe.init_state(lambda i: preprocess(frames[i], image_size), len(frames), h, w), 0)
    seen = {**taps.seen, **{k: v for k, v in f0.seen.items() if "fpn" in k or "pos_enc" in k}}
    for i in range(3):
        out[f"f0_backbone_fpn{i}"] = seen[f"backbone_fpn{i}"]
        out[f"f0_vision_pos_enc{i}"] = seen[f"vision_pos_enc{i}"]
    out["f0_backbone_fpn0_after_conv_s0"] = seen["backbone_fpn0_after_conv_s0"]
    out["f0_backbone_fpn1_after_conv_s1"] = seen["backbone_fpn1_after_conv_s1"]
    for name in ("low_res_multimasks", "low_res_masks", "ious", "obj_ptr", "object_score_logits"):
        if f"click_{name}" in seen:
            out[f"first_click_{name}"] = seen[f"click_{name}"]
    for name in ("maskmem_features", "maskmem_pos_enc", "memattn_out"):
        if name in seen:
            out[f"first_{name}"] = seen[name]
    return out
