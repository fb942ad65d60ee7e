"""The backend table: kind -> factories of the Segmenter, Propagator, Refiner and Inpainter.

Like sam2's ``build_sam``, this is the one place that decides how a backend's models are
made (which class, which weights, which device through `models.device`). The engine asks
`get_backend(kind)` and calls the factories lazily, so a session that only clicks never
builds the tracker. Adding a backend is one `Backend(...)` entry: a model that is both
segmenter and propagator (SAM 2.1) builds it once and keeps it in ``BackendConfig.shared``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .protocols import Inpainter, Propagator, Refiner, Segmenter

SAM2_MODELS = ("tiny", "small", "base_plus", "large")
# B+ by default: the figures give it 76.6 J&F on MOSE (tiny 47 fps but clearly weaker) at 34.8 fps
# on an A100, fast enough to track interactively on a GPU; large costs 40 % of the speed for ~1 point.
DEFAULT_SAM2_MODEL = "base_plus"


@dataclass
class BackendConfig:
    """What every factory may read: device, weights, model size, precision, tracker settings."""

    device: str = "auto"
    weights: str = "official"  # "official" (the registry's checkpoints) or "synthetic"
    weights_dir: str | None = None
    sam_model: str = "vit_b"
    sam2_model: str = DEFAULT_SAM2_MODEL  # SAM 2.1 size (the sam2 backend)
    sam2_image_size: int = 1024  # SAM 2.1 input size: 1024 for the checkpoints; smaller only in tests
    half: bool = False  # reduced precision where `models.device.half_dtype` allows it
    tracker: dict[str, Any] = field(default_factory=dict)  # propagator settings (process_size, memory)
    return_probs: bool = False  # the propagator keeps soft probabilities (refinement uses them)
    shared: dict[str, Any] = field(default_factory=dict)  # models built once, used by several factories

    @property
    def synthetic(self) -> bool:
        """True when the networks get the deterministic synthetic (meaningless) weights."""
        return self.weights == "synthetic"

    def weights_for(self, name: str) -> str | Path:
        """The checkpoint of registry entry `name`, or "synthetic"."""
        if self.synthetic:
            return "synthetic"
        from .weights import resolve

        return resolve(name, cache_dir=self.weights_dir)


@dataclass(frozen=True)
class Backend:
    """One backend kind: its factories and the few facts the engine needs about it."""

    kind: str
    describe: Callable[[BackendConfig], str]  # what runs, in words, for the log and the user
    segmenter: Callable[[BackendConfig], Segmenter]
    propagator: Callable[[BackendConfig], Propagator]
    inpainter: Callable[[BackendConfig], Inpainter]
    refiner: Callable[[BackendConfig, Segmenter], Refiner]
    neural: bool  # runs networks on weights (so weights/half/tracker settings shape its output)
    refine_by_default: bool  # SAM refinement of weak tracked frames is on unless the user says otherwise
    far_keyframe_memory: bool  # a between-keyframes pass also memorises the far keyframe
    # the settings of this backend's own models that shape a tracked mask (part of the span fingerprint)
    model_settings: Callable[[BackendConfig], dict[str, Any]] = lambda cfg: {}


def _prompt_refiner(cfg: BackendConfig, segmenter: Segmenter) -> Refiner:
    from .refiner import PromptRefiner

    return PromptRefiner(segmenter)


def _classic_segmenter(cfg: BackendConfig) -> Segmenter:
    from .classic import ClassicSegmenter

    return ClassicSegmenter()


def _classic_propagator(cfg: BackendConfig) -> Propagator:
    from .classic import ClassicPropagator

    return ClassicPropagator()


def _classic_inpainter(cfg: BackendConfig) -> Inpainter:
    from .classic import ClassicInpainter

    return ClassicInpainter()


def _sam_segmenter(cfg: BackendConfig) -> Segmenter:
    from .sam import SamSegmenter

    return SamSegmenter(cfg.sam_model, weights=cfg.weights_for(f"sam_{cfg.sam_model}"), device=cfg.device)


def _xmem_propagator(cfg: BackendConfig) -> Propagator:
    from .xmem.propagator import XMemPropagator

    return XMemPropagator(cfg.weights_for("xmem"), device=cfg.device, return_probs=cfg.return_probs,
                          fast=cfg.half, **cfg.tracker)


def _e2fgvi_inpainter(cfg: BackendConfig) -> Inpainter:
    from .e2fgvi.inpainter import E2FGVIInpainter

    return E2FGVIInpainter(cfg.weights_for("e2fgvi_hq"), device=cfg.device, precision="fp16" if cfg.half else "fp32")


def _describe_neural(cfg: BackendConfig) -> str:
    label = f"neural (SAM {cfg.sam_model}, XMem, E2FGVI-HQ)"
    if cfg.synthetic:
        label += " with SYNTHETIC weights: output is meaningless, for testing only"
    return label


def check_sam2_model(name: str) -> str:
    """`name` if it is a SAM 2.1 size, else a one-line InputError naming the sizes."""
    if name not in SAM2_MODELS:
        raise InputError(f"SAM 2.1 model must be {', '.join(SAM2_MODELS)}, not {name!r}")
    return name


def _sam2_network(cfg: BackendConfig) -> tuple:
    """The one SAM 2.1 network of this config, built on first use and shared by its segmenter and tracker."""
    check_sam2_model(cfg.sam2_model)
    key = ("sam2", cfg.sam2_model, cfg.sam2_image_size)
    if key not in cfg.shared:
        from .sam2.tracker import build_network

        cfg.shared[key] = build_network(cfg.sam2_model, cfg.weights_for(f"sam2.1_{cfg.sam2_model}"), cfg.device,
                                        cfg.sam2_image_size)
    return cfg.shared[key]


def _sam2_segmenter(cfg: BackendConfig) -> Segmenter:
    from .sam2.tracker import Sam2Segmenter

    return Sam2Segmenter(cfg.sam2_model, half=cfg.half, network=_sam2_network(cfg))


def _sam2_propagator(cfg: BackendConfig) -> Propagator:
    from .sam2.tracker import Sam2Propagator

    return Sam2Propagator(cfg.sam2_model, half=cfg.half, return_probs=cfg.return_probs, network=_sam2_network(cfg))


def _describe_sam2(cfg: BackendConfig) -> str:
    label = f"sam2 (SAM 2.1 {cfg.sam2_model} for clicks and tracking, E2FGVI-HQ)"
    if cfg.synthetic:
        label += " with SYNTHETIC weights: output is meaningless, for testing only"
    return label


def _sam2_settings(cfg: BackendConfig) -> dict[str, Any]:
    return {"sam2_model": cfg.sam2_model, "sam2_image_size": cfg.sam2_image_size}


BACKENDS: dict[str, Backend] = {
    b.kind: b
    for b in (
        Backend(
            "classic", lambda cfg: "classic (weight-free OpenCV: GrabCut, optical flow, flow-guided inpainting)",
            _classic_segmenter, _classic_propagator, _classic_inpainter, _prompt_refiner,
            neural=False, refine_by_default=False, far_keyframe_memory=False,
        ),
        Backend(
            "neural", _describe_neural, _sam_segmenter, _xmem_propagator, _e2fgvi_inpainter, _prompt_refiner,
            neural=True, refine_by_default=True, far_keyframe_memory=True,
        ),
        # SAM 2.1's tracker already decodes every frame with SAM's mask decoder from its memory, so the
        # paper's SAM refinement (step 3, for XMem's coarse masks) is off by default; --refine runs it with
        # SAM 2.1's own image predictor on the shared network.
        Backend(
            "sam2", _describe_sam2, _sam2_segmenter, _sam2_propagator, _e2fgvi_inpainter, _prompt_refiner,
            neural=True, refine_by_default=False, far_keyframe_memory=True, model_settings=_sam2_settings,
        ),
    )
}


def get_backend(kind: str | None) -> Backend:
    """The table entry of `kind` (case-insensitive); InputError naming the known kinds otherwise."""
    key = (kind or "").lower()
    if key not in BACKENDS:
        raise InputError(f"backend must be {', '.join(BACKENDS)}, not {kind!r}")
    return BACKENDS[key]
