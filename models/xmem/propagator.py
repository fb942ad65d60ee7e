"""XMem as the product's tracker: the `Propagator` of models/protocols.py.

What it adds around the official inference core:

* **Processing resolution.** Frames are resized on the device so that their shorter side
  is ``process_size`` (480 by default, as the official evaluation does; frames already
  smaller are used as they are) before the network sees them. Probabilities are
  upsampled bilinearly back to the source resolution, and the label map is their argmax.
* **Permanent references.** ``add_reference`` stores the frame in a separate permanent
  store that every readout includes and consolidation never touches (the official code
  only protects the first frame of working memory). Passing ``key=`` replaces the
  reference stored earlier under that key (a corrected keyframe).
* **Objects** may be added by a later reference (new ids in its label map) and removed
  with ``remove_object``; ``reset`` forgets everything.
* **Corrections.** ``correct(labels)`` re-encodes the frame last tracked with the given
  label map and replaces what that frame put into memory (or adds it to working memory
  if it was not a memory frame).
* **Confidence** per object and frame = the mean probability of the object over the
  pixels where it wins the argmax (at processing resolution); 0.0 when it has no pixel.
  Cheap, needs no extra network pass, and drops when the tracker hesitates between
  objects or between object and background.
* **Precision.** fp32 by default with TF32 disabled while XMem runs (TF32 changes the
  results by ~1e-2, see tests/fixtures/xmem/README.md). ``fast=True`` runs under CUDA fp16
  autocast, as the official evaluation does; ``fast=None`` (the default) means fp32, so
  results match the parity-tested path unless the user asks for speed.

Per frame, only the frame goes to the device and only the label map (plus K confidence
values, and the probabilities when ``return_probs``) comes back. Memory is bounded by
the working / long-term caps in the config; the permanent store grows by one frame per
reference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...errors import InputError
from ..device import half_dtype, resolve_device
from ..protocols import TrackResult
from .inference import DEFAULT_CONFIG, InferenceCore
from .network import load_network

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def processing_size(h: int, w: int, process_size: int | None) -> tuple[int, int]:
    """(h, w) scaled so the shorter side is `process_size`; unchanged if already smaller or size is None/<=0."""
    if not process_size or process_size <= 0 or min(h, w) <= process_size:
        return h, w
    scale = process_size / min(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


class XMemPropagator:
    """Memory-based mask propagation with XMem (see the module docstring for the behaviour)."""

    name = "xmem"

    def __init__(
        self,
        weights: str | Path = "synthetic",
        device: str | torch.device = "auto",
        process_size: int | None = 480,
        fast: bool | None = None,
        return_probs: bool = False,
        **config: object,
    ):
        unknown = sorted(set(config) - set(DEFAULT_CONFIG))
        if unknown:
            raise InputError(
                f"unknown XMem setting(s): {', '.join(unknown)}; known: {', '.join(DEFAULT_CONFIG)}"
            )
        self.device = resolve_device(device)
        self.network, self.weights_label = load_network(weights, self.device)
        self.synthetic = str(weights) == "synthetic"
        self.process_size = process_size
        self._half = half_dtype(self.device, bool(fast))  # None: fp32
        self.fast = self._half is not None
        self.return_probs = return_probs
        self.config = {**DEFAULT_CONFIG, **config}
        self._mean = torch.tensor(MEAN, device=self.device).view(3, 1, 1)
        self._std = torch.tensor(STD, device=self.device).view(3, 1, 1)
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget everything (all memory, all objects)."""
        self.core = InferenceCore(self.network, self.config)
        self._src_hw: tuple[int, int] | None = None
        self._proc_hw: tuple[int, int] | None = None
        self._lut: tuple | None = None  # (ids, id lookup table, channel numbers) on the device

    @property
    def obj_ids(self) -> list[int]:
        """Object ids known to the tracker, in output channel order."""
        return list(self.core.all_labels)

    def remove_object(self, obj_id: int) -> None:
        """Forget one object (its memory values and hidden state); the others keep tracking."""
        self.core.remove_object(int(obj_id))

    # ------------------------------------------------------------------ protocol
    def add_reference(
        self, frame: np.ndarray, labels: np.ndarray, obj_ids: Sequence[int], key: object = None
    ) -> None:
        """Store `frame` with its known label map as permanent memory (replacing reference `key` if given).

        Objects in `obj_ids` are taken from `labels` (absent = not visible on this frame);
        new ids become new objects. Known objects not in `obj_ids` keep their prediction.
        """
        ids = [int(i) for i in obj_ids]
        if any(not 1 <= i <= 255 for i in ids):
            raise InputError(f"object ids must be 1..255, got {ids}")
        image = self._image(frame)
        self._check_labels(labels)
        for i in ids:
            if i not in self.core.all_labels:
                self.core.all_labels.append(i)
        mask = self._one_hot(labels, valid=ids)
        with self._precision():
            self.core.step(image, mask, valid_labels=ids, permanent=True, ref_key=key)

    def track(self, frame: np.ndarray) -> TrackResult:
        """Predict the label map of `frame` from memory, then memorise it as the config says."""
        if not self.core.has_memory():
            raise InputError("XMem needs a reference frame (add_reference) before it can track")
        image = self._image(frame)
        with self._precision():
            prob = self.core.step(image)
        return self._result(prob)

    def correct(self, labels: np.ndarray) -> None:
        """Replace the last tracked frame's result by `labels` in memory."""
        if self.core.last is None:
            raise InputError("nothing to correct: no frame was tracked since the last reset")
        self._check_labels(labels)
        present = [int(v) for v in np.unique(labels) if v != 0]
        for i in present:
            if i not in self.core.all_labels:
                self.core.all_labels.append(i)
        mask = self._one_hot(labels, valid=self.core.all_labels)
        with self._precision():
            self.core.correct(mask)

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _precision(self) -> Iterator[None]:
        """fp16 autocast in fast mode; otherwise fp32 with TF32 off (restored afterwards)."""
        if self._half is not None:
            with torch.autocast(self.device.type, dtype=self._half), torch.no_grad():
                yield
            return
        if self.device.type != "cuda":
            with torch.no_grad():
                yield
            return
        old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.no_grad():
                yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old

    def _image(self, frame: np.ndarray) -> torch.Tensor:
        """uint8 RGB (H, W, 3) -> normalised float (3, h, w) at processing resolution, on the device."""
        if (
            not isinstance(frame, np.ndarray)
            or frame.ndim != 3
            or frame.shape[2] != 3
            or frame.dtype != np.uint8
        ):
            raise InputError("frames must be uint8 RGB arrays of shape (H, W, 3)")
        h, w = frame.shape[:2]
        if self._src_hw is None:
            self._src_hw = (h, w)
            self._proc_hw = processing_size(h, w, self.process_size)
        elif self._src_hw != (h, w):
            raise InputError(
                f"frame size {w}x{h} differs from this video's {self._src_hw[1]}x{self._src_hw[0]}"
            )
        x = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).float().div_(255)
        if self._proc_hw != (h, w):
            x = F.interpolate(
                x[None], size=self._proc_hw, mode="bilinear", align_corners=False, antialias=True
            )[0]
            x = x.clamp_(0, 1)
        return (x - self._mean) / self._std

    def _check_labels(self, labels: np.ndarray) -> None:
        if not isinstance(labels, np.ndarray) or labels.ndim != 2:
            raise InputError("label maps must be 2-D arrays (H, W)")
        if self._src_hw is not None and labels.shape != self._src_hw:
            raise InputError(f"label map {labels.shape} does not match the frame size {self._src_hw}")

    def _one_hot(self, labels: np.ndarray, valid: Sequence[int]) -> torch.Tensor:
        """(K, h, w) float one-hot over all known objects (rows not in `valid` are zero), area-resized."""
        lab = torch.from_numpy(np.ascontiguousarray(labels.astype(np.uint8, copy=False))).to(self.device)
        ids = torch.tensor([i if i in valid else -1 for i in self.core.all_labels], device=self.device)
        onehot = (lab[None].long() == ids.view(-1, 1, 1)).float()
        if self._proc_hw != tuple(labels.shape):
            onehot = F.interpolate(onehot[None], size=self._proc_hw, mode="area")[0]
        return onehot

    def _result(self, prob: torch.Tensor) -> TrackResult:
        """Probabilities (K+1, h, w) -> TrackResult at source resolution."""
        prob = prob.float()
        ids = self.core.all_labels
        k = len(ids)
        if self._lut is None or self._lut[0] != tuple(ids):
            lut = torch.tensor([0, *ids], dtype=torch.uint8, device=prob.device)
            self._lut = (tuple(ids), lut, torch.arange(1, k + 1, device=prob.device).view(k, 1, 1))
        _, lut, channels = self._lut
        win = prob.argmax(0)
        inside = (win[None] == channels).float()  # (K, h, w): where each object wins
        area = inside.flatten(1).sum(1)
        conf = ((prob[1:] * inside).flatten(1).sum(1) / area.clamp(min=1)).cpu().numpy()
        full = prob
        if self._proc_hw != self._src_hw:
            full = F.interpolate(prob[None], size=self._src_hw, mode="bilinear", align_corners=False)[0]
        labels = lut[full.argmax(0)].cpu().numpy()
        probs = full.cpu().numpy() if self.return_probs else None
        confidence = {int(i): float(c) for i, c in zip(ids, conf, strict=True)}
        return TrackResult(labels=labels, confidence=confidence, probs=probs, obj_ids=list(ids))
