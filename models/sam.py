"""SAM segmenter: the official `segment_anything` package behind the `Segmenter` protocol.

What this adds around the official `SamPredictor`:

* weights from the checkpoint registry (loaded with ``weights_only=True``) or the
  deterministic synthetic formula (``weights="synthetic"``, labelled ``synthetic=True``);
* a bounded LRU cache of image embeddings keyed by (frame key, model type, weights id), so
  that going back to a frame already embedded costs nothing and a click answers in ms;
* the prompt rule of the SAM authors, made explicit (see `use_multimask`);
* coarse boolean masks accepted as a mask prompt (converted to the 256x256 logit prompt SAM
  expects), and small islands / holes removed from the answer;
* on CUDA, a fast path for the image encoder: bf16 autocast and fused attention
  (``scaled_dot_product_attention`` with the decomposed relative-position bias as the
  additive mask) installed on THIS model's attention blocks only, never globally.
"""

from __future__ import annotations

import hashlib
import time
import types
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, WeightsError
from .device import half_dtype, resolve_device
from .protocols import SegmentResult

MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
SYNTHETIC_FORMULA = "synthetic-v1"
IMAGE_SIZE = 1024  # SAM's encoder input (long side), fixed by the architecture
LOWRES = 256  # side of SAM's low-resolution mask logits / mask prompt
LOGIT_MAGNITUDE = 10.0  # a coarse mask becomes +-this many logits, like a confident SAM answer
DEFAULT_CACHE = 16


# ----------------------------------------------------------------------------- small helpers


def use_multimask(points: np.ndarray | None, box: np.ndarray | None, mask_prompt: np.ndarray | None) -> bool:
    """The prompt rule: ask SAM for 3 candidates only for a single click and nothing else.

    A lone click is ambiguous (part, object, group), so SAM's three candidate masks are
    requested and the one with the best predicted IoU is returned, the other two as
    alternatives. Several clicks, a box, or a mask prompt disambiguate; for those the SAM
    authors advise ``multimask_output=False`` (one mask), which gives better results.
    """
    n_points = 0 if points is None else int(np.asarray(points).reshape(-1, 2).shape[0])
    return n_points == 1 and box is None and mask_prompt is None


def clean_mask(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Remove islands and fill holes smaller than `min_area` pixels (OpenCV components).

    Islands use 8-connectivity, holes 4-connectivity (background regions not touching the
    border). If every island is small the largest one is kept, so an object is never erased.
    """
    import cv2

    m = np.asarray(mask, bool)
    if min_area <= 0 or not m.any():
        return m.copy()
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= min_area
    if not keep.any():
        keep[1 + int(np.argmax(areas))] = True
    out = keep[lab]
    n, lab, stats, _ = cv2.connectedComponentsWithStats((~out).astype(np.uint8), connectivity=4)
    h, w = out.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    inside = (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    fill = inside & (area < min_area)
    fill[0] = False  # label 0 is the object itself
    return out | fill[lab]


def mask_to_prompt_logits(mask: np.ndarray, input_size: tuple[int, int], magnitude: float = LOGIT_MAGNITUDE) -> np.ndarray:
    """A coarse mask at image size -> the (1, 256, 256) logit prompt SAM's prompt encoder takes.

    SAM's mask prompt lives in the padded 1024x1024 input frame at 1/4 resolution: the mask is
    resized to the encoder's input size (long side 1024), padded at the bottom/right like the
    image, then area-averaged to 256x256. The covered fraction p becomes (2p - 1) * magnitude
    logits: +magnitude inside, -magnitude outside and in the padding, graded along edges.
    """
    import cv2

    m = np.asarray(mask, np.float32)
    if m.ndim != 2:
        raise InputError(f"mask prompt must be 2-D (H, W), got shape {m.shape}")
    ih, iw = int(input_size[0]), int(input_size[1])
    resized = cv2.resize(m, (iw, ih), interpolation=cv2.INTER_AREA if m.shape[0] > ih else cv2.INTER_LINEAR)
    padded = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    padded[:ih, :iw] = np.clip(resized, 0.0, 1.0)
    low = cv2.resize(padded, (LOWRES, LOWRES), interpolation=cv2.INTER_AREA)
    return ((2.0 * low - 1.0) * magnitude)[None].astype(np.float32)


# ----------------------------------------------------------------------------- fused attention


def _rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size: tuple[int, int], k_size: tuple[int, int]):
    """The decomposed relative-position term SAM adds to its attention logits, as a tensor."""
    import torch
    from segment_anything.modeling.image_encoder import get_rel_pos

    qh, qw = q_size
    kh, kw = k_size
    rh = get_rel_pos(qh, kh, rel_pos_h)
    rw = get_rel_pos(qw, kw, rel_pos_w)
    b, _, dim = q.shape
    rq = q.reshape(b, qh, qw, dim)
    bias_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
    bias_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
    return (bias_h[:, :, :, :, None] + bias_w[:, :, :, None, :]).reshape(b, qh * qw, kh * kw)


def _fused_attention_forward(self, x):
    """Drop-in forward for segment_anything's ViT `Attention`: same maths, one SDPA call.

    softmax(q k^T * scale + B) v with B the decomposed rel-pos bias, passed to
    scaled_dot_product_attention as its additive mask, so CUDA picks a fused kernel.
    """
    import torch.nn.functional as F

    b, h, w, _ = x.shape
    heads = self.num_heads
    qkv = self.qkv(x).reshape(b, h * w, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # (B, heads, N, C)
    bias = None
    if self.use_rel_pos:
        c = q.shape[-1]
        bias = _rel_pos_bias(q.reshape(b * heads, h * w, c), self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        bias = bias.reshape(b, heads, h * w, h * w).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
    out = out.view(b, heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


def enable_fused_attention(encoder) -> int:
    """Give each `Attention` block of this encoder the fused forward; returns how many.

    Only these module instances change (an instance attribute shadows the class method);
    the segment_anything classes and every other model are left as they are.
    """
    from segment_anything.modeling.image_encoder import Attention

    n = 0
    for mod in encoder.modules():
        if isinstance(mod, Attention):
            mod.forward = types.MethodType(_fused_attention_forward, mod)
            n += 1
    return n


def disable_fused_attention(encoder) -> int:
    """Undo `enable_fused_attention` on this encoder; returns how many blocks were restored."""
    from segment_anything.modeling.image_encoder import Attention

    n = 0
    for mod in encoder.modules():
        if isinstance(mod, Attention) and "forward" in mod.__dict__:
            del mod.forward
            n += 1
    return n


# ----------------------------------------------------------------------------- segmenter


class EmbeddingCache:
    """A bounded least-recently-used map: key -> embedding; the oldest entry goes first."""

    def __init__(self, maxsize: int = DEFAULT_CACHE) -> None:
        self.maxsize = max(1, int(maxsize))
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        """The entry for `key` (now the most recently used), or None."""
        entry = self._d.get(key)
        if entry is not None:
            self._d.move_to_end(key)
        return entry

    def put(self, key, entry) -> None:
        """Store `entry`, evicting the least recently used beyond `maxsize`."""
        self._d[key] = entry
        self._d.move_to_end(key)
        while len(self._d) > self.maxsize:
            self._d.popitem(last=False)

    def keys(self) -> list:
        """Keys, least recently used first."""
        return list(self._d)

    def clear(self) -> None:
        """Drop every entry."""
        self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


@dataclass
class _Embedding:
    features: object  # torch.Tensor (1, 256, 64, 64) float32 on the model's device
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamSegmenter:
    """Segmenter over the official SAM (ViT-B/L/H): clicks, box, mask prompt -> one mask.

    `weights` is "official" (the registry checkpoint for `model_type`, from `weights_dir`),
    "synthetic" (deterministic formula, meaningless output), a registry name, or a path to an
    official checkpoint file. `fast` (default: on for CUDA) enables bf16 autocast and fused
    attention in the image encoder. `min_area` (pixels; default ~0.01% of the frame, at least
    16) is the island/hole clean-up threshold, 0 to disable.
    """

    def __init__(
        self,
        model_type: str = "vit_b",
        weights: str | Path = "official",
        *,
        device: str = "auto",
        fast: bool | None = None,
        cache_size: int = DEFAULT_CACHE,
        weights_dir: str | Path | None = None,
        min_area: int | None = None,
    ) -> None:
        if model_type not in MODEL_TYPES:
            raise InputError(f"unknown SAM model {model_type!r}; choose one of {', '.join(MODEL_TYPES)}")
        self.model_type = model_type
        self.name = f"sam_{model_type}"
        self.device = resolve_device(device)
        self.cache_size = max(1, int(cache_size))
        self.min_area = min_area
        self.synthetic = str(weights) == "synthetic"
        self.model, self.weights_id = self._build(weights, weights_dir)
        from segment_anything import SamPredictor

        self.predictor = SamPredictor(self.model)
        self.fast = False
        self._low_precision = True  # autocast allowed on the fast path until it overflows
        self.set_fast(self.device.type == "cuda" if fast is None else bool(fast))
        self._cache = EmbeddingCache(self.cache_size)
        self._current: tuple | None = None
        self.embed_count = 0  # how many times the image encoder ran
        self.cache_hits = 0
        self.last_embed_ms = 0.0

    # ------------------------------------------------------------------ building
    def _build(self, weights: str | Path, weights_dir: str | Path | None):
        import torch
        from segment_anything import sam_model_registry

        from .checkpoint import check_state_dict, load_state_dict_file
        from .synthetic import synthetic_state_dict
        from .weights import CHECKPOINTS, SAM_NAMES, resolve

        text = str(weights)
        state = None
        if self.synthetic:
            weights_id = SYNTHETIC_FORMULA
        else:
            if text == "official":
                file = resolve(SAM_NAMES[self.model_type], weights_dir)
            elif text in CHECKPOINTS:
                file = resolve(text, weights_dir)
            else:
                file = Path(text).expanduser()
            state = load_state_dict_file(file, what=f"SAM {self.model_type} checkpoint")
            st = file.stat()
            weights_id = f"{file.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        model = sam_model_registry[self.model_type](checkpoint=None)
        if state is None:
            state = synthetic_state_dict(model.state_dict(), SYNTHETIC_FORMULA)
        else:
            check_state_dict(model.state_dict(), state, f"SAM {self.model_type} checkpoint {Path(text).name}")
        with torch.no_grad():
            model.load_state_dict(state)
        model.eval().to(self.device)
        return model, weights_id

    def set_fast(self, fast: bool) -> None:
        """Switch the encoder fast path (fused attention; bf16 autocast on CUDA) on or off."""
        enc = self.model.image_encoder
        if fast and not self.fast:
            enable_fused_attention(enc)
        elif not fast and self.fast:
            disable_fused_attention(enc)
        self.fast = bool(fast)

    def _autocast(self):
        import contextlib

        import torch

        dtype = half_dtype(self.device, self.fast and self._low_precision, prefer_bf16=True)
        if dtype is not None:
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ embedding
    def clear_cache(self) -> None:
        """Forget every cached embedding (e.g. when the source changes under the same keys)."""
        self._cache.clear()
        self._current = None
        self.predictor.reset_image()

    @property
    def cached_keys(self) -> list[tuple]:
        """Cache keys, least recently used first."""
        return self._cache.keys()

    def set_image(self, frame: np.ndarray, key: str | None = None) -> None:
        """Embed `frame` (RGB uint8 HxWx3) or restore its cached embedding.

        `key` should name source + frame (e.g. "clip.mp4#120"); without one the frame's bytes
        are hashed to find it in the cache.
        """
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"frame must be RGB uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if key is None:
            key = "sha:" + hashlib.blake2b(np.ascontiguousarray(frame).data, digest_size=16).hexdigest()
        ck = (str(key), self.model_type, self.weights_id)
        hit = self._cache.get(ck)
        if hit is not None and hit.original_size == tuple(frame.shape[:2]):
            self._restore(hit)
            self._current = ck
            self.cache_hits += 1
            return
        import torch

        t0 = time.perf_counter()
        feats = self._embed(frame)
        if not bool(torch.isfinite(feats).all()) and self._low_precision:
            # reduced precision overflowed on this frame: redo it, and stay, in float32
            self._low_precision = False
            feats = self._embed(frame)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.last_embed_ms = (time.perf_counter() - t0) * 1000.0
        if not bool(torch.isfinite(feats).all()):
            self.predictor.reset_image()
            raise WeightsError(f"SAM {self.model_type} produced a non-finite image embedding (weights {self.weights_id})")
        entry = _Embedding(feats, tuple(int(v) for v in self.predictor.original_size),
                           tuple(int(v) for v in self.predictor.input_size))
        self._cache.put(ck, entry)
        self._restore(entry)
        self._current = ck

    def _embed(self, frame: np.ndarray):
        """Run the official preprocessing + image encoder; the float32 embedding."""
        import torch

        with torch.inference_mode(), self._autocast():
            self.predictor.set_image(frame, image_format="RGB")
        self.embed_count += 1
        return self.predictor.features.float()

    def _restore(self, e: _Embedding) -> None:
        p = self.predictor
        p.reset_image()
        p.features = e.features
        p.original_size = e.original_size
        p.input_size = e.input_size
        p.is_image_set = True

    # ------------------------------------------------------------------ prompts
    def _mask_input(self, mask_prompt: np.ndarray) -> np.ndarray:
        """SAM's (1, 256, 256) mask input from previous logits or from a mask at frame size."""
        arr = np.asarray(mask_prompt)
        size = tuple(self.predictor.original_size)
        is_float = np.issubdtype(arr.dtype, np.floating)
        if is_float and (arr.shape == (1, LOWRES, LOWRES) or (arr.shape == (LOWRES, LOWRES) and arr.shape != size)):
            return arr.reshape(1, LOWRES, LOWRES).astype(np.float32)
        if arr.shape == size:
            frac = np.clip(arr, 0.0, 1.0) if is_float else (arr != 0)
            return mask_to_prompt_logits(frac, self.predictor.input_size)
        raise InputError(
            f"mask prompt must be SAM logits (1, {LOWRES}, {LOWRES}) or a mask of the frame's size {size}, "
            f"got {arr.dtype} {arr.shape}"
        )

    def predict(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_prompt: np.ndarray | None = None,
        multimask: bool | None = None,
    ) -> SegmentResult:
        """Segment the prompted object on the frame last given to `set_image`.

        points: (N, 2) x, y pixels; labels: (N,) 1 positive / 0 negative; box: x0, y0, x1, y1;
        mask_prompt: previous SAM logits (1, 256, 256) or a coarse mask (H, W). `multimask`
        overrides the rule in `use_multimask`. Returns the best mask (cleaned), its predicted
        IoU clipped to 0..1, the other candidates, and low-res logits for the next round.
        """
        if self._current is None or not self.predictor.is_image_set:
            raise InputError("no frame embedded: call set_image before predict")
        pts = lab = None
        if points is not None:
            pts = np.asarray(points, np.float32).reshape(-1, 2)
            if labels is None:
                raise InputError("points need labels (1 = positive, 0 = negative)")
            lab = np.asarray(labels).reshape(-1).astype(np.int32)
            if lab.shape[0] != pts.shape[0]:
                raise InputError(f"{pts.shape[0]} points but {lab.shape[0]} labels")
            if not np.isin(lab, (0, 1)).all():
                raise InputError("point labels must be 1 (positive) or 0 (negative)")
            if pts.shape[0] == 0:
                pts = lab = None
        bx = None
        if box is not None:
            b = np.asarray(box, np.float32).reshape(-1)
            if b.shape[0] != 4:
                raise InputError(f"box must be x0, y0, x1, y1, got {b.tolist()}")
            bx = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])], np.float32)
        mask_in = None if mask_prompt is None else self._mask_input(mask_prompt)
        if pts is None and bx is None and mask_in is None:
            raise InputError("nothing to segment: give at least a click, a box or a mask prompt")
        multi = use_multimask(pts, bx, mask_in) if multimask is None else bool(multimask)
        masks, scores, low = self.predictor.predict(
            point_coords=pts, point_labels=lab, box=bx, mask_input=mask_in, multimask_output=multi
        )
        order = np.argsort(-scores, kind="stable")
        h, w = self.predictor.original_size
        min_area = self.min_area if self.min_area is not None else max(16, (h * w) // 10000)
        cleaned = [clean_mask(masks[i], min_area) for i in order]
        best = int(order[0])
        return SegmentResult(
            mask=cleaned[0],
            score=float(np.clip(scores[best], 0.0, 1.0)),
            alternatives=cleaned[1:],
            alternative_scores=[float(np.clip(scores[i], 0.0, 1.0)) for i in order[1:]],
            logits=low[best][None].astype(np.float32),
        )


# ----------------------------------------------------------------------------- benchmark


def embed_bench(
    model_type: str = "vit_b",
    device: str = "auto",
    fast: bool | None = None,
    *,
    weights: str = "synthetic",
    size: tuple[int, int] = (720, 1280),
    repeats: int | None = None,
    predicts: int = 20,
    weights_dir: str | None = None,
) -> dict:
    """Time one image embedding and one click on a (H, W) frame: dict with ms_embed, ms_predict.

    Also reports the cached set_image time (the LRU path) and, on CUDA, peak memory. Synthetic
    weights by default: the timings are those of the real network, the masks are meaningless.
    """
    import torch

    seg = SamSegmenter(model_type, weights, device=device, fast=fast, weights_dir=weights_dir)
    dev = seg.device
    n = repeats if repeats is not None else (5 if dev.type == "cuda" else 1)
    h, w = size
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    seg.set_image(frame, key="warm-up")  # first call pays for kernel selection / allocation
    embeds = []
    for i in range(n):
        seg.set_image(frame, key=f"bench-{i}")
        embeds.append(seg.last_embed_ms)
    t0 = time.perf_counter()
    seg.set_image(frame, key="bench-0")
    ms_cached = (time.perf_counter() - t0) * 1000.0
    click = np.array([[w / 2, h / 2]], np.float32)
    one = np.array([1], np.int32)
    seg.predict(click, one)
    preds = []
    for _ in range(max(1, predicts)):
        sync()
        t0 = time.perf_counter()
        seg.predict(click, one)
        sync()
        preds.append((time.perf_counter() - t0) * 1000.0)
    out = {
        "model": f"sam_{model_type}",
        "device": str(dev),
        "fast": seg.fast,
        "synthetic": seg.synthetic,
        "size": [h, w],
        "repeats": n,
        "ms_embed": float(np.median(embeds)),
        "ms_predict": float(np.median(preds)),
        "ms_set_image_cached": ms_cached,
        "torch": torch.__version__,
    }
    if dev.type == "cuda":
        out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        out["gpu"] = torch.cuda.get_device_name(dev)
    else:
        out["threads"] = torch.get_num_threads()
    return out
