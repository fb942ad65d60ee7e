"""The official E2FGVI test-time procedure (``test.py``): mask dilation, padding, windows, compositing.

The pieces are small functions so the production Inpainter reuses exactly the same
arithmetic; `run_procedure` strings them together on an in-memory clip for parity checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .network import PAD_MULTIPLE


def dilate_mask(mask: np.ndarray, iterations: int = 4, shape: int = cv2.MORPH_CROSS,
                size: tuple[int, int] = (3, 3)) -> np.ndarray:
    """test.py's mask preparation: > 0, then dilate with a 3x3 cross `iterations` times (uint8 0/1).

    `shape`/`size` (OpenCV structuring element, size as width x height) exist for fixtures
    that configure another element; test.py itself always uses the 3x3 cross.
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if iterations <= 0:
        return m
    kernel = cv2.getStructuringElement(shape, size)
    return cv2.dilate(m, kernel, iterations=iterations)


def neighbor_ids(f: int, length: int, neighbor_stride: int) -> list[int]:
    """Local frames of the window centred on `f`: f - stride .. f + stride inclusive, clipped."""
    return list(range(max(0, f - neighbor_stride), min(length, f + neighbor_stride + 1)))


def ref_ids(f: int, neighbors: Sequence[int], length: int, ref_length: int, num_ref: int) -> list[int]:
    """Reference frames as test.py's get_ref_index picks them (num_ref = -1: every ref_length-th frame)."""
    refs: list[int] = []
    if num_ref == -1:
        for i in range(0, length, ref_length):
            if i not in neighbors:
                refs.append(i)
        return refs
    start = max(0, f - ref_length * (num_ref // 2))
    end = min(length, f + ref_length * (num_ref // 2))
    for i in range(start, end + 1, ref_length):
        if i not in neighbors:
            if len(refs) > num_ref:
                break
            refs.append(i)
    return refs


def window_plan(length: int, neighbor_stride: int = 5, ref_length: int = 10,
                num_ref: int = -1) -> list[tuple[int, list[int], list[int]]]:
    """(centre, local neighbours, references) for every window of a clip of `length` frames."""
    plan = []
    for f in range(0, length, neighbor_stride):
        nb = neighbor_ids(f, length, neighbor_stride)
        plan.append((f, nb, ref_ids(f, nb, length, ref_length, num_ref)))
    return plan


def pad_amounts(h: int, w: int, multiple: Sequence[int] = PAD_MULTIPLE) -> tuple[int, int]:
    """Bottom and right padding that makes (h, w) multiples of `multiple` (test.py: 60 x 108)."""
    mh, mw = int(multiple[0]), int(multiple[1])
    return (mh - h % mh) % mh, (mw - w % mw) % mw


def pad_symmetric(x: torch.Tensor, multiple: Sequence[int] = PAD_MULTIPLE, extend: bool = False) -> torch.Tensor:
    """Pad (..., H, W) at the bottom/right by mirroring with the edge (numpy 'symmetric'), H first.

    As test.py does, the tensor is concatenated with its flipped copy once and cropped, so
    a pad larger than the size leaves the result short (2H rows instead of H + pad), exactly
    like the reference. `extend=True` repeats the concatenation instead, which continues the
    mirror pattern to the full padded size (the production path, never short).
    """
    h, w = x.shape[-2:]
    h_pad, w_pad = pad_amounts(h, w, multiple)
    while True:
        x = torch.cat([x, torch.flip(x, [-2])], -2)
        if not extend or x.shape[-2] >= h + h_pad:
            break
    x = x[..., : h + h_pad, :]
    while True:
        x = torch.cat([x, torch.flip(x, [-1])], -1)
        if not extend or x.shape[-1] >= w + w_pad:
            break
    return x[..., : w + w_pad]


def to_model_range(frames_u8: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [-1, 1], as test.py (u8 / 255 * 2 - 1).

    Contiguous NCHW like test.py's to_tensors: a permuted (channels-last) view makes the
    convolutions pick another kernel and sum in another order (~7e-5 on the output).
    """
    t = torch.from_numpy(np.ascontiguousarray(frames_u8)).permute(0, 3, 1, 2).contiguous().float()
    return t.div(255) * 2 - 1


def masked_input(frames_u8: np.ndarray, masks01: np.ndarray, multiple: Sequence[int] = PAD_MULTIPLE,
                 extend: bool = False) -> torch.Tensor:
    """Model input (1, N, 3, Hp, Wp): normalised frames with holes zeroed, padded (see `pad_symmetric`)."""
    imgs = to_model_range(frames_u8)
    m = torch.from_numpy(np.ascontiguousarray(masks01, dtype=np.float32))[:, None]
    return pad_symmetric(imgs * (1 - m), multiple, extend).unsqueeze(0)


def pred_to_255(pred: torch.Tensor, h: int, w: int) -> np.ndarray:
    """tanh output (N, 3, Hp, Wp) -> float32 (N, h, w, 3) = ((pred + 1) / 2) * 255, cropped."""
    p = (pred[:, :, :h, :w].float() + 1) / 2
    return p.cpu().permute(0, 2, 3, 1).numpy() * 255


def composite(pred255: np.ndarray, frame_u8: np.ndarray, mask01: np.ndarray) -> np.ndarray:
    """test.py's compositing: truncated prediction inside the mask, the original outside (uint8)."""
    m = mask01.astype(np.uint8)[..., None]
    return pred255.astype(np.uint8) * m + frame_u8 * (1 - m)


def accumulate(stored: np.ndarray | None, img: np.ndarray) -> np.ndarray:
    """test.py's overlap rule: first value kept, later ones averaged pairwise (float32)."""
    if stored is None:
        return img
    return stored.astype(np.float32) * 0.5 + img.astype(np.float32) * 0.5


@dataclass
class WindowResult:
    """One window of the procedure: its frames and its pre-truncation predictions."""

    f: int
    neighbor_ids: list[int]
    ref_ids: list[int]
    pred255: np.ndarray  # float32 (L, H, W, 3), local frames only


@dataclass
class ProcedureResult:
    """Everything the full procedure produced."""

    windows: list[WindowResult] = field(default_factory=list)
    comp_float: np.ndarray | None = None  # float32 (T, H, W, 3) before the final cast
    comp_u8: np.ndarray | None = None  # uint8 (T, H, W, 3)


ModelFn = Callable[[torch.Tensor, int], torch.Tensor]


def run_procedure(model_fn: ModelFn, frames: np.ndarray, masks_dilated: np.ndarray,
                  neighbor_stride: int = 5, ref_length: int = 10, num_ref: int = -1,
                  device: torch.device | str = "cpu", pad_multiple: Sequence[int] = PAD_MULTIPLE,
                  on_input: Callable[[int, torch.Tensor], None] | None = None) -> ProcedureResult:
    """Run test.py's sliding windows over an in-memory clip (frames uint8 (T,H,W,3), masks 0/1).

    `model_fn(masked_frames, num_local)` returns the tanh images (B*T, 3, Hp, Wp);
    `on_input(k, masked_frames)` sees each window's model input.
    """
    t_len, h, w = frames.shape[:3]
    masks = (np.asarray(masks_dilated) > 0).astype(np.uint8)
    result = ProcedureResult()
    comp: list[np.ndarray | None] = [None] * t_len
    for k, (f, nb, refs) in enumerate(window_plan(t_len, neighbor_stride, ref_length, num_ref)):
        ids = nb + refs
        x = masked_input(frames[ids], masks[ids], pad_multiple).to(device)
        if on_input is not None:
            on_input(k, x)
        with torch.no_grad():
            pred = model_fn(x, len(nb))
        p255 = pred_to_255(pred[: len(nb)], h, w)
        result.windows.append(WindowResult(f, nb, refs, p255))
        for i, idx in enumerate(nb):
            comp[idx] = accumulate(comp[idx], composite(p255[i], frames[idx], masks[idx]))
    result.comp_float = np.stack([c.astype(np.float32) for c in comp])
    result.comp_u8 = np.stack([c.astype(np.uint8) for c in comp])
    return result
