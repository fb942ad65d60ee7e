"""SAM 2.1 as the product's tracker and click segmenter.

* `Sam2VideoTracker` — a streaming video predictor on top of `VideoPredictor`: frames come from a
  callable ``get_frame(i) -> uint8 (H, W, 3)`` (no frame list in memory; image features cached for a
  few frames only), keyframes at any frame are permanent conditioning memory, objects can be added after
  tracking started, propagation runs forwards or backwards from any frame, and each yielded frame carries
  soft probabilities and a per-object confidence = sigmoid(object score) × predicted IoU of the chosen
  mask. Per-frame outputs (memory features, pointers, masks) are kept only within ``keep_window`` frames
  of the frame being tracked (16 = the object-pointer window, so one pass equals the official result),
  so memory stays flat in video length; conditioning (keyframe) outputs are kept for good.
* `Sam2Propagator` — the `Propagator` contract (reset / add_reference / track / correct) the pipeline
  drives, frames fed in order; references become keyframes, `correct` replaces the last frame's memory.
* `Sam2Segmenter` — the `Segmenter` contract with the SAM 2.1 image predictor's rules (clicks, box,
  mask prompt; multimask for a single click).

fp32 by default (the parity-tested path); ``half=True`` autocasts to what `models.device.half_dtype` picks
(bf16, or fp16 where the GPU lacks bf16, on CUDA only; MPS and the CPU stay fp32, the one device policy).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import Cancelled, InputError
from ..device import half_dtype, resolve_device
from ..protocols import SegmentResult, TrackResult
from .network import MEAN, NO_OBJ_SCORE, STD, Sam2, load_network
from .video import COND, NON_COND, VideoPredictor, VideoState

UNBOUNDED_FRAMES = 1 << 30  # frame count used when the length of a stream is not known


def check_frame(frame: np.ndarray) -> np.ndarray:
    """InputError unless `frame` is a uint8 RGB (H, W, 3) array."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError("frames must be uint8 RGB arrays of shape (H, W, 3)")
    return frame


def to_model_input(frame: np.ndarray, image_size: int, device: torch.device, antialias: bool = False) -> torch.Tensor:
    """uint8 RGB (H, W, 3) -> normalised float32 (3, S, S) on `device`.

    Bilinear resize as the video predictor; `antialias` as the image predictor (clicks).
    """
    x = torch.from_numpy(np.ascontiguousarray(check_frame(frame))).to(device).permute(2, 0, 1).float() / 255.0
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                      antialias=antialias)[0]
    mean = torch.tensor(MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(STD, device=device).view(3, 1, 1)
    return (x - mean) / std


def build_network(size: str = "tiny", weights: str | Path = "synthetic", device: str | torch.device = "auto",
                  image_size: int = 1024) -> tuple[Sam2, str, torch.device]:
    """(network, weights label, device) for a size and a checkpoint path or 'synthetic' (device: models.device)."""
    dev = resolve_device(device)
    net, label = load_network(weights, size, image_size, dev)
    return net, label, dev


@contextlib.contextmanager
def precision(device: torch.device, half: bool) -> Iterator[None]:
    """inference_mode, plus autocast to `models.device.half_dtype(device, half, prefer_bf16=True)` when it
    names a dtype (bf16 on CUDA where supported, else fp16); fp32 everywhere else (MPS and CPU included)."""
    dtype = half_dtype(device, half, prefer_bf16=True)
    with torch.inference_mode():
        if dtype is None:
            yield
        else:
            with torch.autocast(device.type, dtype=dtype):
                yield


@dataclass
class FrameResult:
    """One tracked frame at source resolution."""

    frame_idx: int
    obj_ids: list[int]
    logits: np.ndarray  # float32 (K, H, W); −1024 where an object is judged absent
    scores: dict[int, float]  # object-score logit per object (> 0 = present)
    confidence: dict[int, float]  # 0..1 per object: sigmoid(score) × predicted IoU

    def labels(self) -> np.ndarray:
        """uint8 (H, W) label map: the object with the highest positive logit, else 0."""
        if not self.obj_ids:
            raise InputError("no objects")
        best = self.logits.argmax(0)
        lut = np.asarray(self.obj_ids, np.uint8)
        return np.where(self.logits.max(0) > 0, lut[best], 0).astype(np.uint8)

    def probs(self) -> np.ndarray:
        """float32 (K+1, H, W) soft probabilities [background, objects…] summing to 1 per pixel."""
        p = 1.0 / (1.0 + np.exp(-np.clip(self.logits, -60, 60)))
        bg = np.prod(1.0 - p, axis=0, keepdims=True)
        full = np.concatenate([bg, p], 0)
        return (full / np.maximum(full.sum(0, keepdims=True), 1e-12)).astype(np.float32)


def confidence_of(out: dict) -> float:
    """sigmoid(object score) × the predicted IoU of the mask the output chose."""
    score = float(out["object_score_logits"].reshape(-1)[0])
    iou = float(out["iou"].max()) if out.get("iou") is not None else 1.0
    return float(torch.sigmoid(torch.tensor(score))) * min(max(iou, 0.0), 1.0)


class Sam2VideoTracker:
    """Streaming SAM 2.1 video tracking with keyframes, late objects and bounded memory (module docstring)."""

    def __init__(self, net: Sam2, get_frame: Callable[[int], np.ndarray], num_frames: int,
                 feature_cache: int = 2, keep_window: int = 16, half: bool = False):
        self.net = net
        self.device = next(net.parameters()).device
        self.half = half
        self.keep_window = max(int(keep_window), net.max_obj_ptrs)
        self.core = VideoPredictor(net, corrections_as_cond=True)
        first = check_frame(get_frame(0))
        self._get_frame = get_frame
        h, w = first.shape[:2]
        self.state: VideoState = self.core.init_state(self._image, num_frames, h, w, feature_cache)

    def _image(self, i: int) -> torch.Tensor:
        frame = check_frame(self._get_frame(i))
        if frame.shape[:2] != (self.state.video_height, self.state.video_width):
            raise InputError(f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, the video is "
                             f"{self.state.video_width}x{self.state.video_height}")
        return to_model_input(frame, self.net.image_size, self.device)

    @property
    def obj_ids(self) -> list[int]:
        return self.state.obj_ids

    def add_keyframe(self, frame_idx: int, obj_id: int, points: np.ndarray | None = None,
                     labels: np.ndarray | None = None, box: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> FrameResult:
        """Clicks/box or a mask for one object on any frame, kept as permanent conditioning memory."""
        with precision(self.device, self.half):
            if mask is not None:
                if points is not None or box is not None:
                    raise InputError("give either a mask or clicks/box for a keyframe, not both")
                self.core.add_new_mask(self.state, frame_idx, obj_id, np.asarray(mask, bool), cond=True)
            else:
                self.core.add_new_points_or_box(self.state, frame_idx, obj_id, points, labels, box=box, cond=True)
            return self._result(frame_idx, prefer_temp=True)

    def propagate(self, start: int | None = None, max_frames: int | None = None, reverse: bool = False,
                  should_stop: Callable[[], bool] | None = None) -> Iterator[FrameResult]:
        """Track every object from `start` (default: first keyframe) forwards or backwards, frame by frame."""
        core, state = self.core, self.state
        with precision(self.device, self.half):
            core._preflight(state)
            order = core.processing_order(state, start, max_frames, reverse)
        for frame_idx in order:
            if should_stop is not None and should_stop():
                raise Cancelled("tracking cancelled")
            with precision(self.device, self.half):
                for obj in state.objects.values():
                    core.track_frame(state, obj, frame_idx, reverse)
                result = self._result(frame_idx)
                self._evict(frame_idx)
            yield result

    def _result(self, frame_idx: int, prefer_temp: bool = False) -> FrameResult:
        ids, outs = [], []
        for obj_id, obj in self.state.objects.items():
            out = self.core.frame_output(obj, frame_idx, COND if prefer_temp else None)
            ids.append(obj_id)
            outs.append(out)
        g = self.net.image_size // 4
        low = torch.stack([
            (o["pred_masks"][0].float() if o is not None else torch.full((1, g, g), NO_OBJ_SCORE, device=self.device))
            for o in outs])
        logits = self.core.to_video_res(self.state, low)[:, 0].float().cpu().numpy()
        scores = {i: (float(o["object_score_logits"].reshape(-1)[0]) if o is not None else NO_OBJ_SCORE)
                  for i, o in zip(ids, outs, strict=True)}
        conf = {i: (confidence_of(o) if o is not None else 0.0) for i, o in zip(ids, outs, strict=True)}
        return FrameResult(frame_idx, ids, logits, scores, conf)

    def _evict(self, frame_idx: int) -> None:
        """Drop non-conditioning outputs farther than keep_window frames from the current one."""
        for obj in self.state.objects.values():
            far = [t for t in obj.out[NON_COND] if abs(t - frame_idx) > self.keep_window]
            for t in far:
                del obj.out[NON_COND][t]
            if len(obj.tracked) > 4 * self.keep_window:
                for t in [t for t in obj.tracked if abs(t - frame_idx) > self.keep_window and t not in obj.out[COND]]:
                    del obj.tracked[t]


def _frame_digest(frame: np.ndarray) -> str:
    """Content key of a frame (shape + pixels), to recognise a reference frame fed again."""
    h = hashlib.blake2b(np.ascontiguousarray(frame).tobytes(), digest_size=16)
    h.update(str(frame.shape).encode())
    return h.hexdigest()


class Sam2Propagator:
    """SAM 2.1 behind the `Propagator` contract: frames are fed in order, references are keyframes.

    `network` = a `build_network` result shared with a `Sam2Segmenter` (one model in memory).
    """

    name = "sam2"

    def __init__(self, size: str = "tiny", weights: str | Path = "synthetic", device: str = "auto",
                 half: bool = False, image_size: int = 1024, return_probs: bool = False,
                 network: tuple[Sam2, str, torch.device] | None = None):
        self.net, self.weights_label, self.device = network or build_network(size, weights, device, image_size)
        self.synthetic = str(weights) == "synthetic"
        self.half, self.return_probs = bool(half), bool(return_probs)
        # image features of the last reference frames, by content: every pass of the pipeline starts with
        # reset() + its keyframe(s), so a keyframe is encoded once, not once per pass (bounded: 2 frames)
        self._ref_features: OrderedDict[str, object] = OrderedDict()
        self.reset()

    def reset(self) -> None:
        """Forget everything (all memory, all objects)."""
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._next = 0
        self._last: int | None = None
        self._hw: tuple[int, int] | None = None
        self.tracker: Sam2VideoTracker | None = None

    def _push(self, frame: np.ndarray) -> int:
        check_frame(frame)
        if self._hw is None:
            self._hw = frame.shape[:2]
        elif frame.shape[:2] != self._hw:
            raise InputError(f"frame size {frame.shape[1]}x{frame.shape[0]} differs from this video's "
                             f"{self._hw[1]}x{self._hw[0]}")
        t = self._next
        self._next += 1
        self._frames[t] = frame
        while len(self._frames) > 4:
            self._frames.popitem(last=False)
        if self.tracker is None:
            self.tracker = Sam2VideoTracker(self.net, self._frames.__getitem__, UNBOUNDED_FRAMES, half=self.half)
        return t

    def _check_labels(self, labels: np.ndarray) -> None:
        if not isinstance(labels, np.ndarray) or labels.ndim != 2 or labels.shape != self._hw:
            raise InputError(f"label maps must be 2-D arrays of the frame size {self._hw}")

    def add_reference(self, frame: np.ndarray, labels: np.ndarray, obj_ids: Sequence[int]) -> None:
        """Store `frame` with its label map as permanent (conditioning) memory; new ids become objects."""
        ids = [int(i) for i in obj_ids]
        if any(not 1 <= i <= 255 for i in ids):
            raise InputError(f"object ids must be 1..255, got {ids}")
        t = self._push(frame)
        self._check_labels(labels)
        digest = _frame_digest(frame)
        feats = self.tracker.state.features
        if digest in self._ref_features and t not in feats:
            feats[t] = self._ref_features[digest]  # the video predictor finds them and skips the encoder
        for i in ids:
            self.tracker.add_keyframe(t, i, mask=labels == i)
        if t in feats:
            self._ref_features[digest] = feats[t]
            self._ref_features.move_to_end(digest)
            while len(self._ref_features) > 2:
                self._ref_features.popitem(last=False)
        self._last = t

    def track(self, frame: np.ndarray) -> TrackResult:
        """Predict the label map of `frame` from memory (the next frame in feed order)."""
        if self.tracker is None or not self.tracker.obj_ids:
            raise InputError("SAM 2.1 needs a reference frame (add_reference) before it can track")
        t = self._push(frame)
        res = next(self.tracker.propagate(start=t, max_frames=0))
        self._last = t
        return TrackResult(labels=res.labels(), confidence=res.confidence,
                           probs=res.probs() if self.return_probs else None, obj_ids=list(res.obj_ids))

    def correct(self, labels: np.ndarray) -> None:
        """Replace the last tracked frame's result by `labels` in memory (not a keyframe)."""
        if self.tracker is None or self._last is None:
            raise InputError("nothing to correct: no frame was tracked since the last reset")
        self._check_labels(labels)
        core, state = self.tracker.core, self.tracker.state
        with precision(self.device, self.half):
            for i in [int(v) for v in np.unique(labels) if v != 0 and int(v) not in state.objects]:
                core.add_new_mask(state, self._last, i, labels == i, cond=True)  # a new object needs a keyframe
            for i in list(state.objects):
                obj = state.objects[i]
                if self._last in obj.out[COND] or self._last in obj.temp[COND]:
                    continue
                core.add_new_mask(state, self._last, i, labels == i, cond=False)
            core._preflight(state)


class Sam2Segmenter:
    """SAM 2.1's image predictor behind the `Segmenter` contract (clicks, box, mask prompt); `network` as
    for `Sam2Propagator`."""

    def __init__(self, size: str = "tiny", weights: str | Path = "synthetic", device: str = "auto",
                 half: bool = False, image_size: int = 1024, cache: int = 4,
                 network: tuple[Sam2, str, torch.device] | None = None):
        self.net, self.weights_label, self.device = network or build_network(size, weights, device, image_size)
        self.name = f"sam2_{size}"
        self.synthetic = str(weights) == "synthetic"
        self.half = bool(half)
        self._cache: OrderedDict[str, tuple] = OrderedDict()
        self._cache_size = max(1, int(cache))
        self._current: tuple | None = None

    def set_image(self, frame: np.ndarray, key: str | None = None) -> None:
        """Embed `frame` (features + no-memory embedding, as the official image predictor); cached by key."""
        check_frame(frame)
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            self._current = self._cache[key]
            return
        with precision(self.device, self.half):
            x = to_model_input(frame, self.net.image_size, self.device, antialias=True)
            feats = self.net.encode_image(x[None])
            embed = self.net.no_memory_features(feats)
            high = self.net.high_res_features(feats)
        self._current = (embed, high, frame.shape[:2])
        if key is not None:
            self._cache[key] = self._current
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def predict(self, points: np.ndarray | None = None, labels: np.ndarray | None = None,
                box: np.ndarray | None = None, mask_prompt: np.ndarray | None = None) -> SegmentResult:
        """Best mask for the prompts (3 candidates for a lone click, else 1) at source resolution."""
        if self._current is None:
            raise InputError("set_image must be called before predict")
        embed, high, (h, w) = self._current
        s = self.net.image_size
        coords = lab = None
        if points is not None:
            pts = np.asarray(points, np.float32).reshape(-1, 2)
            lab_np = np.asarray(labels if labels is not None else np.ones(len(pts)), np.int32).reshape(-1)
            if len(lab_np) != len(pts):
                raise InputError(f"{len(pts)} points but {len(lab_np)} labels")
            coords, lab = pts, lab_np
        if box is not None:
            b = np.asarray(box, np.float32).reshape(2, 2)
            coords = b if coords is None else np.concatenate([b, coords])
            lab = np.array([2, 3], np.int32) if lab is None else np.concatenate([[2, 3], lab]).astype(np.int32)
        n_pts = 0 if coords is None else len(coords) - (2 if box is not None else 0)
        multimask = n_pts == 1 and box is None and mask_prompt is None
        with precision(self.device, self.half):
            pt = lab_t = None
            if coords is not None:
                pt = torch.from_numpy(coords).to(self.device)[None] / torch.tensor([w, h], device=self.device) * s
                lab_t = torch.from_numpy(lab).to(self.device)[None]
            dense_in = self._mask_input(mask_prompt, h, w)
            sparse, dense = self.net.sam_prompt_encoder(pt, lab_t, dense_in)
            masks, ious, _, _ = self.net.sam_mask_decoder(embed, self.net.sam_prompt_encoder.dense_pe(), sparse,
                                                           dense, multimask, high)
            low = torch.clamp(masks.float(), -32.0, 32.0)
            full = F.interpolate(masks.float(), size=(h, w), mode="bilinear", align_corners=False)[0]
        ious_np = ious.float()[0].cpu().numpy()
        order = np.argsort(-ious_np)
        full_np = (full > 0).cpu().numpy()
        best = int(order[0])
        return SegmentResult(mask=full_np[best], score=float(ious_np[best]),
                             alternatives=[full_np[i] for i in order[1:]],
                             alternative_scores=[float(ious_np[i]) for i in order[1:]],
                             logits=low[0, best: best + 1].cpu().numpy())

    def _mask_input(self, mask_prompt: np.ndarray | None, h: int, w: int) -> torch.Tensor | None:
        """A bool (H, W) mask -> ±10 logits at the prompt size; (1, 4g, 4g) float logits are used as given."""
        if mask_prompt is None:
            return None
        m = np.asarray(mask_prompt)
        size = self.net.sam_prompt_encoder.mask_input_size
        if m.dtype != bool and m.ndim == 3 and m.shape[1:] == size:
            return torch.from_numpy(m.astype(np.float32)).to(self.device)[None]
        if m.ndim != 2 or m.shape != (h, w):
            raise InputError(f"mask prompt must be bool (H, W) = {(h, w)} or SAM 2 logits (1, {size[0]}, {size[1]})")
        t = torch.from_numpy(m.astype(np.float32)).to(self.device)[None, None]
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
        return t * 20.0 - 10.0
