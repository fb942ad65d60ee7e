"""The Track Anything engine: clicks -> keyframe masks -> tracking -> refinement -> removal.

`Engine` drives the backends of models/ over one session. Long jobs are generators that
yield a `Progress` after each frame written to the session, so progress, cancelling
between frames and "nothing lost on a crash" hold end to end.

Keyframe tracking. Every frame holding user prompts is a keyframe; its mask is permanent
memory. The range is cut into spans at the keyframes:
  * before the first keyframe: one backward pass; after the last: one forward pass;
  * between two keyframes: a forward pass from the left one and a backward pass from
    the right one, fused per object: each pass scores ``confidence x proximity`` where
    proximity = 1 - distance to its keyframe / span length, and the higher score wins.
    So the nearer keyframe wins unless the tracker itself reports it lost the object;
    a pixel blend of two differently drifted masks would give ghost edges instead.
Each pass starts from the keyframe masks that bound its span (and only those), so a
span's result depends on its two keyframes alone: a correction at frame t recomputes
just the spans on either side of t. Finished spans are recorded in the job log with a
hash of their keyframes; a span whose keyframes did not change is skipped, and a pass
interrupted by a crash or cancel resumes from its last written frame.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write
from ..models.backends import DEFAULT_SAM2_MODEL, Backend, BackendConfig, check_sam2_model, get_backend
from ..models.protocols import Inpainter, Propagator, Refiner, Segmenter, TrackResult
from .errors import Cancelled, InputError, TamError
from .progress import Progress, RateMeter
from .session import Box, Click, MaskPrompt, MaskRecord, Session

__all__ = ["Engine", "Progress", "Span", "plan_spans"]

StopFn = Callable[[], bool] | None
LEDGER_EVERY = 256  # the span ledger is compacted at least every this many logged frames
REFINE_BELOW = 0.6  # confidence under which SAM refines the tracker's mask
DOUBTFUL_BELOW = 0.5  # confidence under which a frame is flagged for the user


@dataclass(frozen=True)
class Span:
    """One tracking pass: from keyframe `key` through `frames` (in tracking order)."""

    key: int  # the keyframe the pass starts from
    other: int | None  # the keyframe at the far end (between-spans), else None
    first: int  # first tracked frame
    last: int  # last tracked frame (inclusive); tracking order runs first -> last
    fuse: bool = False  # second pass of a pair: fuse with what the first pass stored

    @property
    def step(self) -> int:
        return 1 if self.last >= self.first else -1

    @property
    def frames(self) -> range:
        return range(self.first, self.last + self.step, self.step)

    @property
    def name(self) -> str:
        arrow = "->" if self.step > 0 else "<-"
        return f"{self.key}{arrow}[{min(self.first, self.last)}..{max(self.first, self.last)}]"


def plan_spans(keyframes: list[int], start: int, end: int, direction: str = "both") -> list[Span]:
    """The passes needed to cover [start, end] from `keyframes` in the given direction."""
    if direction not in ("forward", "backward", "both"):
        raise InputError(f"direction must be forward, backward or both, not {direction!r}")
    keys = sorted(k for k in set(keyframes) if start <= k <= end)
    if not keys:
        raise InputError(f"no keyframe (frame with clicks or a box) inside the range {start}:{end}")
    fwd = direction in ("forward", "both")
    bwd = direction in ("backward", "both")
    spans: list[Span] = []
    if bwd and keys[0] > start:
        spans.append(Span(keys[0], None, keys[0] - 1, start))
    for a, b in zip(keys, keys[1:], strict=False):
        if b - a < 2:
            continue
        both = fwd and bwd
        if fwd:
            spans.append(Span(a, b if both else None, a + 1, b - 1))
        if bwd:
            spans.append(Span(b, a if both else None, b - 1, a + 1, fuse=both))
    if fwd and keys[-1] < end:
        spans.append(Span(keys[-1], None, keys[-1] + 1, end))
    return spans


def _apply_span_event(state: dict[str, str | int], ev: dict) -> None:
    """Fold one job-log event into the per-span state (see Engine._span_state)."""
    kind = ev.get("event")
    sig = ev.get("sig")
    if kind == "span_done":
        state[sig] = "done"
    elif kind == "track_frame" and state.get(sig) != "done":
        state[sig] = int(ev["frame"])
    elif kind == "span_invalid":
        state.pop(sig, None)


def _labels_hash(rec: MaskRecord) -> str:
    h = hashlib.sha1(np.ascontiguousarray(rec.labels).tobytes())
    h.update(np.asarray(sorted(rec.obj_ids), np.int32).tobytes())
    return h.hexdigest()[:16]


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    if px <= 0:
        return mask.astype(bool)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k) > 0


class Engine:
    """One session's engine: owns the frame source and the backends, built lazily from the table."""

    def __init__(
        self,
        session: Session,
        backend: str | None = None,
        *,
        device: str = "auto",
        weights: str = "official",
        sam_model: str = "vit_b",
        refine: bool | None = None,
        weights_dir: str | None = None,
        half: bool | None = None,
        sam2_model: str | None = None,
        sam2_image_size: int = 1024,
    ) -> None:
        self.session = session
        self.spec: Backend = get_backend(backend or session.backend or "classic")
        self.backend = self.spec.kind
        self.device = device
        self.weights = weights
        self.sam_model = sam_model
        self.weights_dir = weights_dir
        self.refine_enabled = self.spec.refine_by_default if refine is None else bool(refine)
        self.refine_below = REFINE_BELOW
        # fp16 tracking and removal on the GPU (no effect on the CPU): the session's setting
        # (Blender's "Half Precision" preference) unless the caller says otherwise
        self.half = bool((session.settings or {}).get("half_precision", False)) if half is None else bool(half)
        # SAM 2.1 size: the caller's, else the session's (Blender's preference at creation), else B+
        self.sam2_model = check_sam2_model(sam2_model or (session.settings or {}).get("sam2_model")
                                           or DEFAULT_SAM2_MODEL)
        self.sam2_image_size = int(sam2_image_size)  # 1024 = the checkpoints'; smaller only in tests
        self._source = None

    # ----------------------------------------------------------------- resources
    @property
    def source(self):
        """The session's frame source, opened on first use."""
        if self._source is None:
            from .frames import open_from_info

            self._source = open_from_info(self.session.source)
        return self._source

    def close(self) -> None:
        """Release the frame source (backends are dropped with the engine)."""
        if self._source is not None:
            self._source.close()
            self._source = None

    # The backends, each built from the table on first use (so clicking never builds the tracker).
    @cached_property
    def config(self) -> BackendConfig:
        """What the backend factories are built from."""
        return BackendConfig(
            device=self.device, weights=self.weights, weights_dir=self.weights_dir, sam_model=self.sam_model,
            sam2_model=self.sam2_model, sam2_image_size=self.sam2_image_size, half=self.half, tracker=self._xmem_settings() if self.spec.neural else {},
            return_probs=self.refine_enabled,
        )

    @property
    def synthetic(self) -> bool:
        """True when the neural backends run on the synthetic (meaningless) weights."""
        return self.spec.neural and self.weights == "synthetic"

    def backend_label(self) -> str:
        """Which backend runs, in words, for logs and the user."""
        return self.spec.describe(self.config)

    @cached_property
    def segmenter(self) -> Segmenter:
        """The backend's click segmenter."""
        return self.spec.segmenter(self.config)

    @cached_property
    def propagator(self) -> Propagator:
        """The backend's tracker."""
        return self.spec.propagator(self.config)

    @cached_property
    def refiner(self) -> Refiner:
        """The backend's refiner over its segmenter."""
        return self.spec.refiner(self.config, self.segmenter)

    def _xmem_settings(self) -> dict:
        """Tracker settings the user chose (Blender preferences, stored with the session)."""
        st = self.session.settings or {}
        out: dict = {}
        if "max_resolution" in st:
            out["process_size"] = int(st["max_resolution"]) or None
        if "mem_every" in st:
            out["mem_every"] = max(1, int(st["mem_every"]))
        if "max_memory_frames" in st:
            hi = max(2, int(st["max_memory_frames"]))
            out["max_mid_term_frames"] = hi
            out["min_mid_term_frames"] = min(5, hi - 1)
        return out

    @cached_property
    def inpainter(self) -> Inpainter:
        """The backend's object remover."""
        return self.spec.inpainter(self.config)

    def _check_frame(self, frame: int) -> None:
        n = self.session.source.num_frames
        if not 0 <= frame < n:
            raise InputError(f"frame {frame} is outside the source (frames 0..{n - 1})")

    def _frame_key(self, frame: int) -> str:
        return f"{self.session.source.path}#{frame}"

    # ----------------------------------------------------------------- segment
    def embed(self, frame: int) -> None:
        """Compute (and cache) the segmenter's embedding of `frame` before the first click."""
        self._check_frame(frame)
        self.segmenter.set_image(self.source.get(frame), key=self._frame_key(frame))

    def segment(self, frame: int, obj: int | None = None) -> MaskRecord:
        """Segment the objects prompted on `frame` (or just `obj`); store it as a keyframe."""
        self._check_frame(frame)
        prompts = self.session.prompts(frame=frame)
        objs = sorted({p.obj for p in prompts} if obj is None else {obj})
        if not objs or (obj is not None and not any(p.obj == obj for p in prompts)):
            raise InputError(f"no clicks or box on frame {frame}" + (f" for object {obj}" if obj else ""))
        image = self.source.get(frame)
        h, w = image.shape[:2]
        if any(not isinstance(p, MaskPrompt) for p in prompts if p.obj in objs):
            self.segmenter.set_image(image, key=self._frame_key(frame))
        masks: dict[int, np.ndarray] = {}
        scores: dict[int, float] = {}
        for o in objs:
            mine = [p for p in prompts if p.obj == o]
            given = [i for i, p in enumerate(mine) if isinstance(p, MaskPrompt)]
            shape = None
            if given:  # an edited shape is the keyframe; clicks given after it refine it
                shape = mine[given[-1]].mask(w, h)
                mine = mine[given[-1] + 1:]
            pts = [p for p in mine if isinstance(p, Click)]
            boxes = [p for p in mine if isinstance(p, Box)]
            if shape is not None and not pts and not boxes:
                masks[o], scores[o] = shape, 1.0
                continue
            if not pts and not boxes:
                continue
            points = np.array([[p.x, p.y] for p in pts], np.float32) if pts else None
            labels = np.array([1 if p.positive else 0 for p in pts], np.int32) if pts else None
            box = np.array([boxes[-1].x0, boxes[-1].y0, boxes[-1].x1, boxes[-1].y1], np.float32) if boxes else None
            res = self.segmenter.predict(points=points, labels=labels, box=box, mask_prompt=shape)
            masks[o] = np.asarray(res.mask, bool)
            scores[o] = float(res.score)
        old = self.session.read_mask(frame)
        labels_map = np.zeros((h, w), np.uint8)
        conf: dict[int, float] = {}
        if old is not None:  # objects not prompted here keep what they had on this frame
            for o in old.obj_ids:
                if o not in masks and o in {ob.id for ob in self.session.objects}:
                    labels_map[old.labels == o] = o
                    conf[o] = old.confidence.get(o, 1.0)
        # Overlaps between freshly segmented objects go to the smaller mask: the object in
        # front is usually the one cut out of the other's silhouette.
        for o in sorted(masks, key=lambda k: -int(masks[k].sum())):
            labels_map[masks[o]] = o
            conf[o] = scores[o]
        self.session.write_mask(frame, labels_map, conf, kind="keyframe")
        self._matte(frame, image, labels_map)
        self.session.log("segment", frame=frame, objects=objs, backend=self.segmenter.name,
                         areas={str(o): int((labels_map == o).sum()) for o in objs})
        return self.session.read_mask(frame)

    def _keyframe_record(self, frame: int) -> MaskRecord:
        rec = self.session.read_mask(frame)
        if rec is None or rec.kind != "keyframe":
            rec = self.segment(frame)
        return rec

    # ----------------------------------------------------------------- track
    def track(
        self,
        start: int | None = None,
        end: int | None = None,
        direction: str = "both",
        should_stop: StopFn = None,
    ) -> Iterator[Progress]:
        """Track every object over [start, end] from the keyframes; stream masks to the session."""
        n = self.session.source.num_frames
        start = 0 if start is None else int(start)
        end = n - 1 if end is None else int(end)
        if not (0 <= start <= end < n):
            raise InputError(f"range {start}:{end} is outside the source (frames 0..{n - 1})")
        if not self.session.objects:
            raise InputError("the session has no objects: add a click or a box first")
        keyframes = [k for k in self.session.keyframes() if start <= k <= end]
        spans = plan_spans(keyframes, start, end, direction)
        keyrecs = {k: self._keyframe_record(k) for k in keyframes}
        keyhash = {k: _labels_hash(r) for k, r in keyrecs.items()}
        state = self._span_state()
        fingerprint = self._tracker_fingerprint()
        todo: list[tuple[Span, str, int | None]] = []
        skipped: list[str] = []
        for sp in spans:
            sig = self._span_signature(sp, keyhash, fingerprint)
            done_to = state.get(sig)
            if done_to == "done":
                skipped.append(sp.name)
            else:
                todo.append((sp, sig, done_to))
        total = sum(len(sp.frames) for sp, _, _ in todo)
        meter = RateMeter(total)
        job = f"track-{int(time.time() * 1000)}"
        self.session.log("track_start", job=job, start=start, end=end, direction=direction,
                         backend=self.backend_label(), keyframes=keyframes,
                         spans=[sp.name for sp, _, _ in todo],
                         skipped=skipped)
        counts = {"frames": 0, "refine_tried": 0, "refined": 0, "doubtful": 0}
        for sp, sig, resume_from in todo:
            self.session.log("span_start", job=job, span=sp.name, sig=sig, resume_from=resume_from)
            yield from self._run_span(sp, sig, keyrecs, resume_from, meter, counts, should_stop, job)
            self.session.log("span_done", job=job, span=sp.name, sig=sig)
        self.session.log("track_done", job=job, **counts)
        self._span_state(compact=True)

    def _matte(self, frame: int, image: np.ndarray, labels: np.ndarray) -> None:
        """Matte stage: the frame's soft alpha at source resolution, stored beside its mask."""
        if getattr(self, "_matter", None) is None:
            from .matte import SessionMatter

            self._matter = SessionMatter(self.session)
        self._matter(frame, image, labels)

    def _tracker_fingerprint(self) -> str:
        """Hash of everything besides the keyframes that shapes a tracked mask.

        Part of each span's signature, so changing the weights, processing size, memory
        settings or refinement re-tracks finished spans instead of keeping stale masks.
        """
        cfg: dict = {"refine": self.refine_enabled}
        if self.refine_enabled:
            cfg["refine_below"] = self.refine_below
        if self.spec.neural:
            cfg.update(self._xmem_settings(), weights="synthetic" if self.synthetic else "official", half=self.half)
            if self.refine_enabled:
                cfg["sam"] = self.sam_model
            cfg.update(self.spec.model_settings(self.config))
        text = json.dumps(cfg, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def _span_signature(self, sp: Span, keyhash: dict[int, str], fingerprint: str) -> str:
        other = keyhash.get(sp.other) if sp.other is not None else "-"
        return (f"{self.backend}|{fingerprint}|{sp.key}:{keyhash[sp.key]}"
                f"|{sp.other}:{other}|{sp.first}|{sp.last}")

    def _span_state(self, compact: bool = False) -> dict[str, str | int]:
        """Per span signature: "done", or the last frame written by an unfinished pass.

        Read from the session's ledger plus the log written since it; the ledger is
        rewritten when that tail grows past LEDGER_EVERY lines (or when `compact`), so
        resuming costs at most that many lines however long the log has grown.
        """
        ledger = self.session.read_ledger()
        spans = ledger.get("spans")
        state: dict[str, str | int] = dict(spans) if isinstance(spans, dict) else {}
        events, end = self.session.log_tail(int(ledger.get("log_offset", 0)) if isinstance(spans, dict) else 0)
        for ev in events:
            _apply_span_event(state, ev)
        if (compact or len(events) >= LEDGER_EVERY) and self.session.writable:
            self.session.write_ledger(end, spans=state)
        return state

    def _start_pass(self, sp: Span, keyrecs: dict[int, MaskRecord], resume_from: int | None) -> list[int]:
        """Reset the tracker to the span's keyframe memory; the frames left to track.

        After a crash or cancel the pass restarts after the last frame written: its stored
        mask becomes the reference it continues from (the frame in flight is redone).
        """
        prop = self.propagator
        prop.reset()
        if sp.other is not None and self.spec.far_keyframe_memory:
            far = keyrecs[sp.other]
            prop.add_reference(self.source.get(sp.other), far.labels, far.obj_ids)
        key = keyrecs[sp.key]
        prop.add_reference(self.source.get(sp.key), key.labels, key.obj_ids)
        frames = list(sp.frames)
        if resume_from is not None and resume_from in frames:
            last = self.session.read_mask(resume_from)
            if last is not None:
                prop.add_reference(self.source.get(resume_from), last.labels, last.obj_ids)
                frames = frames[frames.index(resume_from) + 1:]
        return frames

    def track_step(self, f: int, image: np.ndarray, counts: dict) -> tuple[np.ndarray, dict[int, float], str]:
        """One frame of a pass: the tracker's labels and confidence, refined where weak, and the mask kind.

        Stores no mask (the caller fuses and persists), so it also serves a live preview.
        """
        prop = self.propagator
        res = prop.track(image)
        labels = np.asarray(res.labels, np.uint8)
        conf = {int(k): float(v) for k, v in res.confidence.items()}
        if not self.refine_enabled:
            return labels, conf, "tracked"
        labels, conf, n_ref = self._refine(f, image, TrackResult(labels, conf, res.probs, list(res.obj_ids)), counts)
        if not n_ref:
            return labels, conf, "tracked"
        prop.correct(labels)
        counts["refined"] += n_ref
        return labels, conf, "refined"

    def _run_span(self, sp: Span, sig: str, keyrecs: dict[int, MaskRecord], resume_from: int | None,
                  meter: RateMeter, counts: dict, should_stop: StopFn, job: str) -> Iterator[Progress]:
        frames = self._start_pass(sp, keyrecs, resume_from)
        meter.total -= len(sp.frames) - len(frames)
        span_len = abs(sp.other - sp.key) if sp.other is not None else 0
        for f in frames:
            if should_stop is not None and should_stop():
                self.session.log("track_cancelled", job=job, span=sp.name, frame=f)
                raise Cancelled(f"tracking cancelled at frame {f}; finished frames are kept")
            image = self.source.get(f)
            labels, conf, kind = self.track_step(f, image, counts)
            if sp.fuse:
                labels, conf = self._fuse(f, sp, span_len, labels, conf)
            self.session.write_mask(f, labels, conf, kind=kind)
            self._matte(f, image, labels)
            low = [o for o, c in conf.items() if c < DOUBTFUL_BELOW and (labels == o).any()]
            if low:
                counts["doubtful"] += 1
            self.session.log("track_frame", job=job, sig=sig, frame=f, doubtful=low)
            counts["frames"] += 1
            if counts["frames"] % LEDGER_EVERY == 0:
                self._span_state(compact=True)
            yield meter.progress("track", frame=f, message=sp.name)

    def _fuse(self, f: int, sp: Span, span_len: int, labels: np.ndarray, conf: dict[int, float]):
        """Per object, keep this pass's mask or the one stored by the opposite pass."""
        other = self.session.read_mask(f)
        if other is None or other.kind == "keyframe":
            return labels, conf
        d_here = abs(f - sp.key)
        prox_here = 1.0 - d_here / max(span_len, 1)
        prox_there = 1.0 - prox_here
        out = np.zeros_like(labels)
        out_conf: dict[int, float] = {}
        objs = sorted(set(conf) | set(other.obj_ids))
        scores = {}
        for o in objs:
            s_here = conf.get(o, 0.0) * prox_here
            s_there = other.confidence.get(o, 0.0) * prox_there
            scores[o] = (s_here >= s_there, max(s_here, s_there))
        # paint lower-scoring objects first so the more certain object wins overlaps
        for o in sorted(objs, key=lambda k: scores[k][1]):
            here = scores[o][0]
            m = (labels == o) if here else (other.labels == o)
            out[m] = o
            out_conf[o] = conf.get(o, 0.0) if here else other.confidence.get(o, 0.0)
        return out, out_conf

    def _refine(self, f: int, image: np.ndarray, res: TrackResult, counts: dict):
        """Paper step 3: SAM on the tracker's coarse mask where confidence drops.

        Returns the new labels and confidences and how many objects were refined;
        `counts` gains the tries (refine_tried) for the job log.
        """
        labels, conf = res.labels, res.confidence
        weak = [o for o, c in conf.items() if c < self.refine_below and (labels == o).sum() >= 16]
        if not weak:
            return labels, conf, 0
        accepted = self.refiner.refine(image, res, weak, key=self._frame_key(f))
        out = labels.copy()
        new_conf = dict(conf)
        for o, r in accepted.items():
            refined = np.asarray(r.mask, bool)
            out[(out == o) & ~refined] = 0
            out[refined & ((out == 0) | (out == o))] = o
            new_conf[o] = max(conf[o], float(r.score) * 0.5 + conf[o] * 0.5)
        counts["refine_tried"] += len(weak)
        self.session.log("refine", frame=f, objects=weak, accepted=len(accepted))
        return out, new_conf, len(accepted)

    def refine(self, frames: list[int] | None = None, should_stop: StopFn = None) -> Iterator[Progress]:
        """Run SAM refinement on stored tracked masks (default: the doubtful frames)."""
        if frames is None:
            frames = sorted({f for f, _, _ in self.doubtful_frames(self.refine_below)})
        meter = RateMeter(len(frames))
        counts = {"refine_tried": 0, "refined": 0}
        for f in frames:
            if should_stop is not None and should_stop():
                raise Cancelled(f"refinement cancelled at frame {f}; refined frames are kept")
            rec = self.session.read_mask(f)
            if rec is None or rec.kind == "keyframe":
                yield meter.progress("refine", frame=f)
                continue
            image = self.source.get(f)
            labels, conf, n = self._refine(f, image, TrackResult(rec.labels, dict(rec.confidence)), counts)
            if n:
                counts["refined"] += n
                self.session.write_mask(f, labels, conf, kind="refined")
                self._matte(f, image, labels)
            yield meter.progress("refine", frame=f)
        self.session.log("refine_done", frames=len(frames), **counts)

    def doubtful_frames(self, threshold: float = DOUBTFUL_BELOW) -> list[tuple[int, int, float]]:
        """(frame, object, confidence) of frames where an object's confidence stays low."""
        return self.session.doubtful_frames(threshold)

    # ----------------------------------------------------------------- outputs
    def export(self, fmt: str, out: str, frames: list[int] | None = None, hard: bool = False,
               should_stop: StopFn = None) -> Iterator[Progress]:
        """Write mattes as png / labels / exr / alpha / rgba / prores (see export.py); one Progress per frame."""
        from .export import export_masks

        frames = list(range(self.session.source.num_frames)) if frames is None else frames
        meter = RateMeter(len(frames))
        source = self.source if fmt in ("rgba", "prores") else None
        writer = export_masks(self.session, fmt, out, frames=frames, hard=hard, source=source)
        try:
            for f in writer:
                yield meter.progress("export", frame=f)
                if should_stop is not None and should_stop() and meter.done < meter.total:
                    raise Cancelled(f"export cancelled after frame {f}; finished frames are kept")
        finally:
            writer.close()

    def shapes(self, out: str, should_stop: StopFn = None, **options: Any) -> Iterator[Progress]:
        """Write the Mask-shapes file of every object (one step); its summary is the return value.

        `options` go to `matte_shapes.write_shapes` as they are.
        """
        if should_stop is not None and should_stop():
            raise Cancelled("shapes cancelled before it started; nothing was written")
        try:
            from .matte_shapes import write_shapes
        except ImportError as exc:
            raise TamError(f"shapes: the mask-shape writer is not available in this build ({exc})") from None
        summary = write_shapes(self.session, out, **options)
        yield RateMeter(1).progress("shapes", message=str(out))
        return summary

    def inpaint(
        self,
        objects: list[int],
        out: str,
        dilate: int = 8,
        feather: int = 0,
        should_stop: StopFn = None,
        frames: list[int] | None = None,
    ) -> Iterator[Progress]:
        """Remove `objects`: inpaint their dilated masks; write an image folder or an mp4.

        Finished frames go to `out` (a folder) or to a folder next to the mp4, so a
        re-run after a crash or cancel continues where it stopped; the mp4 is encoded
        once every frame exists.
        """
        if not objects:
            raise InputError("no objects to remove")
        for o in objects:
            self.session.get_object(o)
        n = self.session.source.num_frames
        frames = list(range(n)) if frames is None else list(frames)
        out_path = Path(out)
        to_video = out_path.suffix.lower() in (".mp4", ".mov", ".mkv")
        frame_dir = out_path.with_name(out_path.stem + "_frames") if to_video else out_path
        frame_dir.mkdir(parents=True, exist_ok=True)

        def frame_file(i: int) -> Path:
            return frame_dir / f"{i:05d}.png"

        self._reuse_only_matching(frame_dir, objects, dilate, feather, frames)
        todo = [i for i in frames if not frame_file(i).exists()]
        ids = np.array(objects, np.uint8)

        def get_mask(i: int) -> np.ndarray:
            rec = self.session.read_mask(i)
            if rec is None:
                return np.zeros((self.session.source.height, self.session.source.width), bool)
            return _dilate(np.isin(rec.labels, ids), dilate)

        meter = RateMeter(len(frames))
        meter.done = len(frames) - len(todo)
        self.session.log("inpaint_start", objects=objects, out=str(out), dilate=dilate, feather=feather,
                         backend=self.backend_label(), todo=len(todo), already=meter.done)
        if todo:
            gen = self.inpainter.inpaint(self.source.get, get_mask, todo, should_stop=should_stop)
            for i, filled in gen:
                if feather > 0:
                    filled = _feather(self.source.get(i), filled, get_mask(i), feather)
                _write_png_atomic(frame_file(i), filled)
                yield meter.progress("inpaint", frame=i)
            missing = [i for i in todo if not frame_file(i).exists()]
            if missing:
                self.session.log("inpaint_cancelled", missing=len(missing))
                raise Cancelled(f"inpainting stopped with {len(missing)} frames left; finished frames are kept")
        if to_video:
            _encode_mp4(frame_dir, frames, out_path, self.session.source.fps)
        self.session.log("inpaint_done", out=str(out), frames=len(frames))

    def _reuse_only_matching(self, frame_dir: Path, objects: list[int], dilate: int, feather: int,
                             frames: list[int]) -> None:
        """Keep finished frames for a resumed removal only if nothing they depend on changed.

        The key covers the job's settings and every stored mask (count, sizes, newest
        write): re-tracking or correcting invalidates the earlier frames, a crash does not.
        """
        key = hashlib.sha1(json.dumps([
            sorted(objects), dilate, feather, self.backend, self.weights, self.spec.neural and self.half,
            frames[0], frames[-1], len(frames), *self.session.masks_stamp(),
        ]).encode()).hexdigest()
        stamp = frame_dir / ".tam_inpaint_key"
        if not stamp.is_file() or stamp.read_text().strip() != key:
            for old in frame_dir.glob("[0-9][0-9][0-9][0-9][0-9].png"):
                old.unlink()
            stamp.write_text(key)


def _feather(orig: np.ndarray, filled: np.ndarray, mask: np.ndarray, px: int) -> np.ndarray:
    """Soften the seam inside the mask; pixels outside the mask stay the original ones."""
    import cv2

    m = mask.astype(np.float32)
    k = 2 * px + 1
    a = cv2.GaussianBlur(m, (k, k), px / 2.0) * m
    a = np.clip((a - 0.5) * 2.0, 0.0, 1.0)[..., None] if px else m[..., None]
    a[~mask] = 0.0
    mixed = orig.astype(np.float32) * (1 - a) + filled.astype(np.float32) * a
    out = np.rint(mixed).astype(np.uint8)
    out[~mask] = orig[~mask]
    return out


def _write_png_atomic(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write(path, buf.tobytes(), sync_dir=False)


def _encode_mp4(frame_dir: Path, frames: list[int], out: Path, fps: float) -> None:
    import cv2
    import imageio_ffmpeg

    first = cv2.imread(str(frame_dir / f"{frames[0]:05d}.png"))
    h, w = first.shape[:2]
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (w, h), fps=fps or 25.0, codec="libx264", quality=None,
        output_params=["-crf", "16", "-preset", "medium"], macro_block_size=1,
    )
    writer.send(None)
    for i in frames:
        bgr = cv2.imread(str(frame_dir / f"{i:05d}.png"))
        writer.send(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    writer.close()
    os.replace(tmp, out)
