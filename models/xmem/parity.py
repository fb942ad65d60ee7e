"""Run our XMem the way the golden fixtures drove the official code, and return the same arrays.

Reads only ``inputs.npz`` (frames, first_mask) and ``config.json`` (synthetic formula,
inference config) from a fixture folder; never the expected outputs. The driving follows
tests/fixtures/xmem/README.md section 4: labels of the first mask become objects 1..K,
frame 0 is ``step(image, one_hot, valid_labels=[1..K])``, later frames ``step(image)``
(with ``end=True`` on the last frame only when the config's ``end_flag`` says so, as the
official eval.py does); everything in float32 on the CPU (or CUDA with TF32 off).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .inference import InferenceCore
from .network import (
    SYNTHETIC_FORMULA,
    network_from_state_dict,
    synthetic_for_template,
    synthetic_weights,
    template_state_dict,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalise(frame: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> float32 (3, H, W), divided by 255 and normalised with the ImageNet statistics."""
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1).float() / 255
    mean = torch.tensor(MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(STD, device=device).view(3, 1, 1)
    return (x - mean) / std


def one_hot(labels: np.ndarray, values: list[int], device: str | torch.device = "cpu") -> torch.Tensor:
    """Label image -> float32 (K, H, W), one channel per value in `values`."""
    lab = torch.from_numpy(np.ascontiguousarray(labels)).to(device)
    return torch.stack([(lab == v) for v in values]).float()


def _np(t: torch.Tensor | None) -> np.ndarray:
    return np.zeros((0,), np.float32) if t is None else t.detach().float().cpu().numpy().astype(np.float32)


def run(fixture_dir: Path | str, device: str = "cpu", fast: bool = False) -> dict[str, np.ndarray]:
    """Drive the fixture's frames through our InferenceCore; return probs, memory sizes and intermediates.

    ``fast=True`` runs under fp16 autocast on `device`, as the tracker's fast mode does,
    so its deviation from the fp32 path can be measured (see `fast_deviation`).
    """
    fixture_dir = Path(fixture_dir)
    cfg = json.loads((fixture_dir / "config.json").read_text())
    icfg = dict(cfg["inference_config"])
    formula = cfg.get("formula", "synthetic-v2")
    end_last = "end=True" in str(cfg.get("end_flag", ""))
    with np.load(fixture_dir / "inputs.npz") as data:
        frames = data["frames"]
        first_mask = data["first_mask"]

    dims = {k: int(icfg.get(k, d)) for k, d in (("key_dim", 64), ("value_dim", 512), ("hidden_dim", 64))}
    single = bool(icfg.get("single_object", False))
    if formula == SYNTHETIC_FORMULA:
        sd = synthetic_weights(**dims, single_object=single)  # cached between runs in one process
    else:
        sd = synthetic_for_template(template_state_dict(**dims, single_object=single), formula)
    net = network_from_state_dict(sd, "synthetic XMem weights", single_object=single).to(device)

    if fast:
        with torch.autocast(torch.device(device).type, dtype=torch.float16), torch.no_grad():
            return _drive(net, icfg, frames, first_mask, device, end_last)
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            return _drive(net, icfg, frames, first_mask, device, end_last)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def fast_deviation(fixture_dir: Path | str, device: str = "cuda") -> float:
    """max |probs| difference between the fp16-autocast fast path and fp32 on a fixture (the fast-mode parity check)."""
    exact = run(fixture_dir, device)["probs"]
    quick = run(fixture_dir, device, fast=True)["probs"]
    if not np.isfinite(quick).all():
        return float("inf")
    return float(np.abs(quick - exact).max())


def _drive(
    net, icfg: dict, frames: np.ndarray, first_mask: np.ndarray, device: str, end_last: bool = False
) -> dict[str, np.ndarray]:
    core = InferenceCore(net, icfg)
    values = [int(v) for v in np.unique(first_mask) if v != 0]
    labels = list(range(1, len(values) + 1))  # remapped to 1..K like Track-Anything's mask mapper
    core.set_all_labels(labels)

    probs, work, long, is_mem = [], [], [], []
    out: dict[str, np.ndarray] = {}
    for t in range(frames.shape[0]):
        image = normalise(frames[t], device)
        cap: dict | None = {} if t < 2 else None
        if t == 0:
            prob = core.step(
                image, one_hot(first_mask, values, device), valid_labels=labels, end=False, capture=cap
            )
        else:
            end = end_last and t == frames.shape[0] - 1
            prob = core.step(image, None, None, end=end, capture=cap)
        probs.append(prob.float().cpu().numpy())
        mem = core.memory
        work.append(mem.work_mem.size)
        long.append(mem.long_mem.size if core.enable_long_term else 0)
        is_mem.append(bool(core.last is not None and core.last.added_memory))
        if t == 0:
            out.update(
                f0_image_padded=_np(cap["image_padded"]),
                f0_key=_np(cap["key"]),
                f0_selection=_np(cap["selection"]),
                f0_shrinkage=_np(cap["shrinkage"]),
                f0_f16=_np(cap["f16"]),
                f0_f8=_np(cap["f8"]),
                f0_f4=_np(cap["f4"]),
                f0_value_mask_in=_np(cap.get("value_mask_in")),
                f0_hidden_in=_np(cap.get("val_hidden_in")),
                f0_value=_np(cap.get("value")),
                f0_hidden_out=_np(cap.get("hidden_after")),
            )
        elif t == 1:
            dec_out = cap.get("dec_hidden_out")
            out.update(
                f1_key=_np(cap["key"]),
                f1_selection=_np(cap["selection"]),
                f1_similarity=_np(cap.get("similarity")),
                f1_affinity=_np(cap.get("affinity")),
                f1_memory_readout=_np(cap.get("memory_readout")),
                f1_hidden_in=_np(cap.get("dec_hidden_in")),
                f1_decoder_logits=_np(cap.get("decoder_logits")),
                f1_decoder_prob=_np(cap.get("decoder_prob")),
                f1_agg_logits=_np(cap.get("agg_logits")),
                f1_agg_prob=_np(cap.get("agg_prob")),
                f1_hidden_out=_np(dec_out if dec_out is not None else cap.get("hidden_after")),
            )
    out["probs"] = np.stack(probs).astype(np.float32)
    out["work_mem_size_after"] = np.asarray(work, np.int32)
    out["long_mem_size_after"] = np.asarray(long, np.int32)
    out["is_mem_frame"] = np.asarray(is_mem, bool)
    return out
