"""Production E2FGVI-HQ Inpainter: any resolution and length, bounded memory, streamed output.

What it adds to the paper's test script, and why:

* Streaming windows. The official sliding windows (centre every `neighbor_stride`
  frames, local frames +-stride, running pairwise average where windows overlap) are
  run one at a time; a frame is yielded as soon as no later window covers it, so
  results stream in index order and cancelling between windows loses nothing finished.
* Bounded references. test.py takes every `ref_length`-th frame of the WHOLE video as
  a reference, so cost and memory grow with length. Clips up to `chunk_frames` long
  keep that exact rule; longer clips take references only from within
  +-chunk_frames/2 of the window centre (still on the same every-`ref_length` grid),
  so at most about `chunk_frames` frames are held, at working resolution.
* Working resolution. Above `work_size` frames are inpainted downscaled; the filled
  result is upscaled and pasted back only inside the caller's (already dilated) mask,
  optionally feathered inwards, so every pixel outside the mask is the source pixel,
  bit for bit. Source frames are re-read through `get_frame` when they are pasted, so
  full-resolution frames are never accumulated.
* Windows whose local frames have empty masks skip the network: the official
  composite there is the source frame itself, so the result is unchanged.
* fp32 by default; on CUDA attention runs fused (scaled_dot_product_attention) and
  `precision="fp16"|"bf16"` runs the network under autocast.
* Encoder features and flows are computed once per frame / frame pair and reused by
  the 2-3 windows that cover it, and only local frames are decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from ...errors import InputError
from ..device import half_dtype, resolve_device
from .network import InpaintGenerator, build_generator
from .procedure import accumulate, composite, masked_input, neighbor_ids, pred_to_255, ref_ids

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
ENCODE_BATCH = 8  # frames encoded at once (bounds the encoder's full-resolution activations)


def working_shape(h: int, w: int, work_size: tuple[int, int] | None) -> tuple[int, int]:
    """Size to inpaint an (h, w) frame at: unchanged if it fits `work_size`, else scaled to fit.

    `work_size` is (height, width) for landscape frames and is turned for portrait ones.
    """
    if not work_size:
        return h, w
    wh, ww = sorted(work_size) if h <= w else sorted(work_size, reverse=True)
    scale = min(wh / h, ww / w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def feather_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """Paste weight inside `mask`: 1 deeper than `feather` px from its edge, ramping to 1/feather at it, 0 outside."""
    m = mask.astype(np.uint8)
    if feather <= 0:
        return m.astype(np.float32)
    dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    return np.minimum(dist / float(feather), 1.0).astype(np.float32)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (y0, y1, x0, x1) of `mask` plus a 1-px margin (so its edge reads as an edge)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return max(0, rows[0] - 1), min(h, rows[-1] + 2), max(0, cols[0] - 1), min(w, cols[-1] + 2)


def upscale_at(work: np.ndarray, size: tuple[int, int], ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Pixels (ys, xs) of a bilinear resize of `work` to `size` (h, w), computed only there: (N, 3) uint8.

    Pixel-centre mapping with clamped edges, as cv2.resize(INTER_LINEAR) when upscaling.
    """
    wh, ww = work.shape[:2]
    py = np.clip((ys + 0.5) * (wh / size[0]) - 0.5, 0, wh - 1)
    px = np.clip((xs + 0.5) * (ww / size[1]) - 0.5, 0, ww - 1)
    y0 = py.astype(np.intp)
    x0 = px.astype(np.intp)
    y1 = np.minimum(y0 + 1, wh - 1)
    x1 = np.minimum(x0 + 1, ww - 1)
    fy = (py - y0).astype(np.float32)[:, None]
    fx = (px - x0).astype(np.float32)[:, None]
    img = work.astype(np.float32)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def paste_values(src: np.ndarray, mask: np.ndarray, box: tuple[int, int, int, int], values: np.ndarray,
                 feather: int) -> np.ndarray:
    """`src` with `values` ((N, 3), one per mask pixel inside `box`, row-major) pasted, feathered inwards.

    Only mask pixels are written, so everything outside the mask is bit-exact.
    """
    out = src.copy()
    y0, y1, x0, x1 = box
    m = mask[y0:y1, x0:x1]
    dst = out[y0:y1, x0:x1]
    if feather <= 0:
        dst[m] = values
        return out
    a = feather_alpha(m, feather)[m][:, None]
    s = dst[m].astype(np.float32)
    dst[m] = np.clip(np.rint(s + (values.astype(np.float32) - s) * a), 0, 255).astype(np.uint8)
    return out


def paste(src: np.ndarray, filled: np.ndarray, mask: np.ndarray, feather: int) -> np.ndarray:
    """`src` with same-size `filled` pasted inside `mask` (feathered); pixels outside stay bit-exact."""
    box = mask_box(mask)
    if box is None:
        return src.copy()
    y0, y1, x0, x1 = box
    return paste_values(src, mask, box, filled[y0:y1, x0:x1][mask[y0:y1, x0:x1]], feather)


def downscale_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Working-size 0/1 mask: a pixel is a hole if its source footprint touches the mask (+1 px)."""
    h, w = mask.shape
    rs = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.intp)
    cs = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.intp)
    small = np.logical_or.reduceat(np.logical_or.reduceat(mask, rs, axis=0), cs, axis=1).astype(np.uint8)
    # Footprints overlap by a fraction of a pixel and bilinear upscaling reads one pixel
    # further: one more working pixel all round covers both.
    return cv2.dilate(small, np.ones((3, 3), np.uint8)) if small.any() else small


class E2FGVIInpainter:
    """The `Inpainter` backend on E2FGVI-HQ (see models/protocols.py)."""

    name = "e2fgvi-hq"

    def __init__(self, weights: str | Path = "synthetic", device: str = "auto",
                 work_size: tuple[int, int] | None = (480, 864), neighbor_stride: int = 5,
                 ref_length: int = 10, chunk_frames: int = 60, feather: int = 0,
                 precision: str = "fp32", model: InpaintGenerator | None = None) -> None:
        """Load the network; `weights` is a checkpoint path or "synthetic" (deterministic synthetic-v1)."""
        if neighbor_stride < 1 or ref_length < 1:
            raise InputError("neighbor_stride and ref_length must be at least 1")
        if chunk_frames < 2 * neighbor_stride + 1:
            raise InputError(f"chunk_frames must be at least {2 * neighbor_stride + 1} (one window)")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.device = resolve_device(device)
        self.work_size = tuple(work_size) if work_size else None
        self.neighbor_stride = int(neighbor_stride)
        self.ref_length = int(ref_length)
        self.chunk_frames = int(chunk_frames)
        self.feather = int(feather)
        # Half precision only where the device policy allows it (CUDA).
        dtype = half_dtype(self.device, precision != "fp32", prefer_bf16=precision == "bf16")
        self.precision = next(name for name, d in PRECISIONS.items() if d == dtype)
        if model is None:
            model, label = build_generator(str(weights) if isinstance(weights, Path) else weights)
        else:
            label = "given-model"
        self.weights_label = label
        self.synthetic = label.startswith("synthetic")
        self.model = model.to(self.device).eval()
        # Fused attention on CUDA (no T*45 x T*210 logits per window in memory); the
        # explicit, window-chunked reference arithmetic elsewhere.
        self.model.set_attention(use_sdpa=self.device.type == "cuda")
        # Statistics of the last inpaint() call: network calls made (windows with nothing to
        # fill are skipped) and the most working-size frames held at once.
        self.windows_run = 0
        self.max_cached = 0

    # -- planning ---------------------------------------------------------------------
    def plan(self, length: int) -> list[tuple[int, list[int], list[int]]]:
        """(centre, local positions, reference positions) of each window over `length` frames."""
        out = []
        half = self.chunk_frames // 2
        for f in range(0, length, self.neighbor_stride):
            nb = neighbor_ids(f, length, self.neighbor_stride)
            if length <= self.chunk_frames:
                refs = ref_ids(f, nb, length, self.ref_length, -1)
            else:
                refs = [i for i in range(0, length, self.ref_length) if abs(i - f) <= half and i not in nb]
            out.append((f, nb, refs))
        return out

    # -- running ------------------------------------------------------------------------
    def _autocast(self):
        """Autocast context of the configured precision (a no-op for fp32)."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _window_pred(self, ids: list[int], num_local: int, frames: dict[int, tuple[np.ndarray, np.ndarray]],
                     feats: dict[int, tuple[torch.Tensor, torch.Tensor]],
                     flows: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """tanh output (L, 3, Hp, Wp), float32, of one window's local frames.

        Encoder features and quarter-size frames are computed once per frame and the
        flows once per consecutive pair, then reused by every window that holds them
        (the reference recomputes them in each of the 2-3 windows covering a frame).
        """
        nb = ids[:num_local]
        with torch.inference_mode(), self._autocast():
            new = [p for p in ids if p not in feats]
            for s in range(0, len(new), ENCODE_BATCH):
                part = new[s:s + ENCODE_BATCH]
                # extend=True: frames under 30 x 54 px still pad to full 60 x 108 multiples
                # (the reference's single mirror copy would leave them short).
                x = masked_input(np.stack([frames[p][0] for p in part]),
                                 np.stack([frames[p][1] for p in part]), extend=True)[0].to(self.device)
                enc = self.model.encoder(x)
                quarter = self.model.quarter_frames(x)
                for j, p in enumerate(part):
                    feats[p] = (enc[j], quarter[j])
            pairs = [a for a in nb[:-1] if a not in flows]
            if pairs:
                f0, f1 = self.model.pair_flows(torch.stack([feats[a][1] for a in pairs]),
                                               torch.stack([feats[a + 1][1] for a in pairs]))
                for j, a in enumerate(pairs):
                    flows[a] = (f0[j], f1[j])
            enc_feat = torch.stack([feats[p][0] for p in ids])[None]
            if num_local > 1:
                fl = (torch.stack([flows[a][0] for a in nb[:-1]])[None],
                      torch.stack([flows[a][1] for a in nb[:-1]])[None])
            else:
                q = feats[nb[0]][1]
                empty = q.new_zeros(1, 0, 2, q.shape[-2], q.shape[-1])
                fl = (empty, empty)
            pred, _ = self.model(None, num_local, enc_feat=enc_feat, flows=fl, decode_all=False)
        return pred.float()

    def inpaint(
        self,
        get_frame: Callable[[int], np.ndarray],
        get_mask: Callable[[int], np.ndarray],
        indices: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, filled frame) for every index in order, each as soon as it is final."""
        indices = list(indices)
        n = len(indices)
        if n == 0:
            return
        store = _FrameStore(get_frame, get_mask, indices, self.work_size, self.feather)
        acc: dict[int, np.ndarray] = {}
        feats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # pos -> (encoder feature, quarter frame)
        flows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # pos -> flows between pos and pos + 1
        plan = self.plan(n)
        next_out = 0
        self.max_cached = 0
        self.windows_run = 0
        for k, (_f, nb, refs) in enumerate(plan):
            if should_stop is not None and should_stop():
                return
            ids = nb + refs
            for pos in ids:
                store.load(pos)
            self.max_cached = max(self.max_cached, len(store.cache))
            self._fill_window(ids, nb, store, acc, feats, flows)
            # Frames before the next window's first local frame are covered by no later window.
            done_until = plan[k + 1][1][0] if k + 1 < len(plan) else n
            while next_out < done_until:
                pos = next_out
                next_out += 1
                yield indices[pos], store.finish(pos, acc.pop(pos))  # no reference kept while the caller holds it
            # Forget work frames no later window can use: later windows need local frames from
            # the next window's first one on, and references on the ref_length grid (all of it
            # for clips within one chunk, else only from the next centre - chunk_frames/2 on).
            if k + 1 < len(plan):
                nb_start = plan[k + 1][1][0]
                ref_from = 0 if n <= self.chunk_frames else plan[k + 1][0] - self.chunk_frames // 2
                for pos in [p for p in store.cache if p < nb_start
                            and not (p % self.ref_length == 0 and p >= ref_from)]:
                    store.forget(pos)
                    feats.pop(pos, None)
                    flows.pop(pos, None)

    def _fill_window(self, ids: list[int], nb: list[int], store: _FrameStore, acc: dict[int, np.ndarray],
                     feats: dict, flows: dict) -> None:
        """Add one window's composites of its local frames `nb` to their running averages in `acc`."""
        cache = store.cache
        if any(cache[pos][1].any() for pos in nb):
            pred = self._window_pred(ids, len(nb), cache, feats, flows)
            p255 = pred_to_255(pred, store.work_h, store.work_w)
            self.windows_run += 1
            for i, pos in enumerate(nb):
                acc[pos] = accumulate(acc.get(pos), composite(p255[i], cache[pos][0], cache[pos][1]))
            del pred, p255
        else:
            for pos in nb:  # nothing to fill: the official composite is the frame itself
                acc[pos] = accumulate(acc.get(pos), cache[pos][0])


class _FrameStore:
    """The frames and masks of one `inpaint` call: read on demand, kept at working size while
    windows need them, and pasted back at source size when final."""

    def __init__(self, get_frame: Callable[[int], np.ndarray], get_mask: Callable[[int], np.ndarray],
                 indices: list[int], work_size: int, feather: int) -> None:
        first = np.asarray(get_frame(indices[0]))
        if first.ndim != 3 or first.shape[2] != 3 or first.dtype != np.uint8:
            raise InputError(f"frames must be RGB uint8 (H, W, 3), got {first.dtype} {first.shape}")
        self.get_frame, self.get_mask, self.indices, self.feather = get_frame, get_mask, indices, feather
        self.src_h, self.src_w = first.shape[:2]
        self.work_h, self.work_w = working_shape(self.src_h, self.src_w, work_size)
        self.scaled = (self.work_h, self.work_w) != (self.src_h, self.src_w)
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # pos -> (work frame u8, work mask 0/1)
        self.src_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # native size only: pos -> (frame, mask)
        self.pending_first = {0: first}  # read once: it is also position 0's first read

    def read(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """Source-size frame and boolean mask of position `pos`; InputError on a size mismatch."""
        frame = self.pending_first.pop(pos, None)
        if frame is None:
            frame = np.asarray(self.get_frame(self.indices[pos]))
        mask = np.asarray(self.get_mask(self.indices[pos])).astype(bool)
        if frame.shape[:2] != (self.src_h, self.src_w) or mask.shape != (self.src_h, self.src_w):
            raise InputError(f"frame/mask {self.indices[pos]} has size {frame.shape[:2]}/{mask.shape}, "
                             f"expected {(self.src_h, self.src_w)}")
        return frame, mask

    def load(self, pos: int) -> tuple[np.ndarray, np.ndarray]:
        """Working-size frame and 0/1 mask of `pos` (read once, cached until `forget`)."""
        if pos not in self.cache:
            frame, mask = self.read(pos)
            if self.scaled:
                wf = cv2.resize(frame, (self.work_w, self.work_h), interpolation=cv2.INTER_AREA)
                self.cache[pos] = (wf, downscale_mask(mask, (self.work_h, self.work_w)))
            else:
                self.cache[pos] = (frame, mask.astype(np.uint8))
                self.src_cache[pos] = (frame, mask)
        return self.cache[pos]

    def forget(self, pos: int) -> None:
        """Drop `pos`'s cached frames (no later window uses them)."""
        del self.cache[pos]
        self.src_cache.pop(pos, None)

    def finish(self, pos: int, averaged: np.ndarray) -> np.ndarray:
        """The final source-size frame of `pos`: its averaged working-size fill pasted into the mask."""
        work = averaged.astype(np.uint8)  # test.py's final truncation
        if pos in self.src_cache:
            frame, mask = self.src_cache.pop(pos)
        else:  # re-read rather than hold full-size frames between windows
            frame, mask = self.read(pos)
        box = mask_box(mask)
        if box is None:
            return frame.copy()
        ys, xs = np.nonzero(mask[box[0]:box[1], box[2]:box[3]])
        ys += box[0]
        xs += box[2]
        values = upscale_at(work, (self.src_h, self.src_w), ys, xs) if self.scaled else work[ys, xs]
        return paste_values(frame, mask, box, values, self.feather)
