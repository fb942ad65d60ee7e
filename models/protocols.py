"""The small backend contracts the pipeline drives: segment, propagate, refine, inpaint.

Every backend (classic/OpenCV, SAM, XMem, E2FGVI-HQ) implements one of these, and
`models.backends` builds them from one table, so the pipeline never knows which network
it runs. Conventions shared by all of them:

* frames are RGB ``uint8`` arrays of shape (H, W, 3) at SOURCE resolution;
* masks are ``bool`` (H, W); label maps are ``uint8`` (H, W) with 0 = background and
  object ids 1..255;
* coordinates are pixels, origin top-left, x to the right, y down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class SegmentResult:
    """One segmentation answer: the chosen mask plus the alternatives it beat."""

    mask: np.ndarray  # bool (H, W): the best-scoring mask
    score: float  # the backend's own quality estimate of `mask`, 0..1
    alternatives: list[np.ndarray] = field(default_factory=list)  # other candidate masks
    alternative_scores: list[float] = field(default_factory=list)
    logits: np.ndarray | None = None  # low-res logits, reusable as a mask prompt (SAM)


@runtime_checkable
class Segmenter(Protocol):
    """Clicks / box / coarse mask on one frame -> one object's mask."""

    name: str
    synthetic: bool  # True when the weights are the deterministic synthetic ones

    def set_image(self, frame: np.ndarray, key: str | None = None) -> None:
        """Prepare `frame` (embed it); `key` lets a backend cache per source+frame."""

    def predict(
        self,
        points: np.ndarray | None = None,  # float (N, 2) x, y
        labels: np.ndarray | None = None,  # int (N,) 1 = positive, 0 = negative
        box: np.ndarray | None = None,  # float (4,) x0, y0, x1, y1
        mask_prompt: np.ndarray | None = None,  # bool (H, W) coarse mask or SAM logits
    ) -> SegmentResult:
        """Segment the object the prompts describe on the frame given to set_image."""


@dataclass
class TrackResult:
    """The tracker's answer for one frame: hard labels, soft probabilities (if kept), confidence.

    A stored mask becomes one with ``TrackResult(rec.labels, rec.confidence)`` (no probs).
    """

    labels: np.ndarray  # uint8 (H, W) object ids, 0 = background
    confidence: dict[int, float]  # per object id, 0..1 (1 = sure)
    probs: np.ndarray | None = None  # float32 (K+1, H, W) [bg, objs in obj_ids order]
    obj_ids: list[int] = field(default_factory=list)

    def prob(self, obj: int) -> np.ndarray | None:
        """Soft probability map (H, W) of object `obj`, or None when the tracker kept none."""
        if self.probs is None or obj not in self.obj_ids:
            return None
        return self.probs[self.obj_ids.index(obj) + 1]


@runtime_checkable
class Propagator(Protocol):
    """Memory-based mask propagation; direction is just the order frames are fed in.

    The pipeline calls ``reset``, then ``add_reference`` for a keyframe (permanent
    memory), then ``track`` for each following frame (forwards or backwards).
    ``correct`` replaces the mask of the frame last tracked (e.g. after SAM refinement)
    so that memory holds the corrected mask.
    """

    name: str
    synthetic: bool

    def reset(self) -> None:
        """Forget everything (all memory, all objects)."""

    def add_reference(self, frame: np.ndarray, labels: np.ndarray, obj_ids: Sequence[int]) -> None:
        """Store `frame` with its known label map as permanent memory."""

    def track(self, frame: np.ndarray) -> TrackResult:
        """Predict the label map of `frame` from memory, then memorise as configured."""

    def correct(self, labels: np.ndarray) -> None:
        """Replace the last tracked frame's result by `labels` in memory."""


@runtime_checkable
class Refiner(Protocol):
    """Tracker's coarse masks -> better masks (SAM on derived prompts), only where they agree."""

    name: str
    synthetic: bool

    def refine(self, frame: np.ndarray, track: TrackResult, objects: Sequence[int],
               key: str | None = None) -> dict[int, SegmentResult]:
        """Refined masks of `objects` on `frame`; objects whose answer was rejected are left out."""


@runtime_checkable
class Inpainter(Protocol):
    """Frames + hole masks -> frames with the holes filled, streamed in index order."""

    name: str
    synthetic: bool

    def inpaint(
        self,
        get_frame: Callable[[int], np.ndarray],
        get_mask: Callable[[int], np.ndarray],  # bool (H, W), already dilated
        indices: Sequence[int],
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, filled RGB frame) for every index, in order.

        Pixels outside the mask must be returned unchanged (bit-exact). The backend
        may read frames outside `indices` as references. It checks `should_stop`
        between units of work and returns early when it says True.
        """
