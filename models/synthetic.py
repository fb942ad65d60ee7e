"""Deterministic synthetic checkpoints (formulas `synthetic-v1`, `synthetic-v2`, `synthetic-sam2-v1`).

No pretrained checkpoint can be downloaded in our CI, so parity with the official
XMem / E2FGVI-HQ code is proven on weights made by a published formula (see
tests/fixtures/*/README.md). The same weights let benchmarks and the neural code path
run anywhere; everything produced with them is labelled synthetic.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

FORMULAS = ("synthetic-v1", "synthetic-v2", "synthetic-sam2-v1")

# synthetic-sam2-v1 (tests/fixtures/sam2/README.md section 2): per-key gains and constants that keep the
# SAM 2.1 tracker non-degenerate (objects differ, vanish and reappear) yet not chaotic.
SAM2_GAIN = {
    "memory_encoder.mask_downsampler.encoder.12.weight": 2.0,
    "sam_mask_decoder.pred_obj_score_head.layers.2.weight": 10.0,
}
SAM2_CONST = {"sam_mask_decoder.pred_obj_score_head.layers.2.bias": -0.6}


def synthetic_array(key: str, shape: tuple[int, ...], dtype: str | np.dtype, formula: str) -> np.ndarray:
    """The tensor that `formula` gives state-dict entry `key` of this shape and dtype."""
    if formula not in FORMULAS:
        raise ValueError(f"unknown synthetic formula {formula!r}; known: {', '.join(FORMULAS)}")
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return np.zeros(shape, dtype)
    phase = (zlib.crc32(key.encode("utf-8")) % 100003) / 100003 * 2 * np.pi
    i = np.arange(n, dtype=np.int64)
    if formula == "synthetic-sam2-v1":
        v = np.sin(0.7 * i + phase + 2 * np.pi * ((i * i) % 1009) / 1009)
        if key in SAM2_CONST:
            out = np.full(n, SAM2_CONST[key], dtype=np.float64)
        elif key.endswith("positional_encoding_gaussian_matrix"):
            out = 3.0 * v
        elif len(shape) >= 2:
            out = 1.5 * SAM2_GAIN.get(key, 1.0) * v / np.sqrt(n / shape[0])
        elif key.endswith("bias"):
            out = 0.1 * v
        else:
            out = 1.0 + 0.1 * v
        return out.reshape(shape).astype(np.float32)
    if formula == "synthetic-v2":
        v = np.sin(0.7 * i + phase + 2 * np.pi * ((i * i) % 1009) / 1009)
        scale = 1.75
    else:
        v = np.sin(0.7 * i + phase)
        scale = 1.0
    if key.endswith("running_var"):
        out = 1.0 + 0.5 * np.abs(v)
    elif key.endswith("running_mean"):
        out = 0.1 * v
    elif len(shape) >= 2:
        out = scale * v / np.sqrt(n / shape[0])
    elif key.endswith("bias"):
        out = 0.1 * v
    else:
        out = 1.0 + 0.1 * v
    return out.reshape(shape).astype(np.float32)


def synthetic_state_dict(
    template: Mapping[str, object], formula: str, keep: frozenset[str] | set[str] = frozenset()
) -> dict:
    """A torch state dict shaped like `template` (a module's state_dict()) filled by `formula`.

    Keys in `keep` hold construction constants (index buffers, normalisation constants)
    and are copied from the template unchanged.
    """
    import torch

    out = {}
    for key, tensor in template.items():
        if key in keep:
            out[key] = tensor.detach().clone()
            continue
        dtype = str(tensor.dtype).replace("torch.", "")
        arr = synthetic_array(key, tuple(tensor.shape), dtype, formula)
        out[key] = torch.from_numpy(np.array(arr, order="C", copy=True))  # keeps 0-d entries 0-d
    return out
