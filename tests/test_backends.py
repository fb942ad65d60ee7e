"""The backend table: every kind builds protocol-typed parts; the engine dispatches through it alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from track_anything.errors import InputError
from track_anything.models import backends
from track_anything.models.protocols import Inpainter, Propagator, Refiner, Segmenter, TrackResult


def test_every_kind_names_four_factories_and_unknown_kinds_are_refused() -> None:
    assert set(backends.BACKENDS) >= {"classic", "neural"}
    for kind, spec in backends.BACKENDS.items():
        assert spec.kind == kind and backends.get_backend(kind.upper()) is spec
        for part in (spec.segmenter, spec.propagator, spec.inpainter, spec.refiner, spec.describe):
            assert callable(part)
    with pytest.raises(InputError, match="backend must be classic, neural, sam2"):
        backends.get_backend("xmem")


def test_classic_factories_build_objects_of_the_protocol_types() -> None:
    spec, cfg = backends.get_backend("classic"), backends.BackendConfig()
    seg = spec.segmenter(cfg)
    assert isinstance(seg, Segmenter)
    assert isinstance(spec.propagator(cfg), Propagator)
    assert isinstance(spec.inpainter(cfg), Inpainter)
    assert isinstance(spec.refiner(cfg, seg), Refiner)
    assert "weight-free" in spec.describe(cfg)


def test_neural_factories_hand_the_config_to_the_real_constructors(monkeypatch) -> None:
    """Device, weights, precision and tracker settings reach SAM, XMem and E2FGVI from one config."""
    from track_anything.models import sam
    from track_anything.models.e2fgvi import inpainter
    from track_anything.models.xmem import propagator

    seen = {}

    def record(name):
        def build(*args, **kwargs):
            seen[name] = (args, kwargs)
            return name
        return build

    monkeypatch.setattr(sam, "SamSegmenter", record("sam"))
    monkeypatch.setattr(propagator, "XMemPropagator", record("xmem"))
    monkeypatch.setattr(inpainter, "E2FGVIInpainter", record("e2fgvi"))
    spec = backends.get_backend("neural")
    cfg = backends.BackendConfig(device="cpu", weights="synthetic", sam_model="vit_l", half=True,
                                 tracker={"mem_every": 3}, return_probs=True)
    assert (spec.segmenter(cfg), spec.propagator(cfg), spec.inpainter(cfg)) == ("sam", "xmem", "e2fgvi")
    assert seen["sam"] == (("vit_l",), {"weights": "synthetic", "device": "cpu"})
    assert seen["xmem"] == (("synthetic",), {"device": "cpu", "return_probs": True, "fast": True, "mem_every": 3})
    assert seen["e2fgvi"] == (("synthetic",), {"device": "cpu", "precision": "fp16"})
    assert "SYNTHETIC" in spec.describe(cfg) and "vit_l" in spec.describe(cfg)


def test_official_weights_missing_is_a_clear_weights_error(tmp_path) -> None:
    from track_anything.errors import WeightsError

    cfg = backends.BackendConfig(weights="official", weights_dir=str(tmp_path))
    with pytest.raises(WeightsError, match="not found"):
        cfg.weights_for("xmem")
    assert backends.BackendConfig(weights="synthetic").weights_for("xmem") == "synthetic"


def test_a_new_table_entry_is_all_the_engine_needs(tmp_path, monkeypatch) -> None:
    from track_anything.tam_blender_addon.pipeline import Engine
    from track_anything.tam_blender_addon.session import Session, SourceInfo

    made = []

    def segmenter(cfg):
        made.append("segmenter")
        return backends.BACKENDS["classic"].segmenter(cfg)

    extra = dataclasses.replace(backends.BACKENDS["classic"], kind="classic_copy", segmenter=segmenter,
                                describe=lambda cfg: "a copy of classic")
    monkeypatch.setitem(backends.BACKENDS, "classic_copy", extra)
    info = SourceInfo("x.mp4", "video", 32, 24, 25.0, 4)
    with Session.create(tmp_path / "s", info, backend="classic_copy") as s:
        eng = Engine(s)
        assert eng.backend == "classic_copy" and eng.backend_label() == "a copy of classic"
        assert isinstance(eng.segmenter, Segmenter) and made == ["segmenter"]
        assert eng.segmenter is eng.segmenter and made == ["segmenter"]  # built once


def test_track_result_carries_soft_probabilities_per_object() -> None:
    labels = np.array([[0, 1], [2, 2]], np.uint8)
    probs = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.7, 0.2)])
    res = TrackResult(labels, {1: 0.9, 2: 0.4}, probs, [1, 2])
    assert res.prob(1)[0, 0] == pytest.approx(0.7) and res.prob(2)[0, 0] == pytest.approx(0.2)
    assert res.prob(3) is None
    stored = TrackResult(labels, {1: 0.9})
    assert stored.prob(1) is None and stored.obj_ids == []


def test_prompt_refiner_keeps_answers_that_agree_with_the_coarse_mask() -> None:
    from track_anything.models.classic import ClassicSegmenter
    from track_anything.models.refiner import PromptRefiner, masks_consistent

    h, w = 120, 160
    yy, xx = np.mgrid[:h, :w]
    disk = (yy - 60) ** 2 + (xx - 80) ** 2 < 30**2
    frame = np.random.default_rng(0).integers(0, 60, (h, w, 3)).astype(np.uint8)
    frame[disk] = (220, 60, 40)
    coarse = np.zeros((h, w), np.uint8)  # the tracker drifted 3 px and shrank
    coarse[(yy - 63) ** 2 + (xx - 83) ** 2 < 28**2] = 1
    refiner = PromptRefiner(ClassicSegmenter())
    out = refiner.refine(frame, TrackResult(coarse, {1: 0.3}), [1])
    assert list(out) == [1]
    refined = np.asarray(out[1].mask, bool)
    iou = (refined & disk).sum() / (refined | disk).sum()
    assert iou > 0.95 > (coarse.astype(bool) & disk).sum() / (coarse.astype(bool) | disk).sum()
    # an answer that is not the same object (IoU with the coarse mask < 0.5) is thrown away
    assert masks_consistent(coarse, refined) and not masks_consistent(coarse, ~refined)


def test_sam2_segmenter_and_propagator_share_one_network_built_once() -> None:
    """The sam2 entry builds SAM 2.1 once per config: clicks and tracking run on the same model."""
    spec = backends.get_backend("sam2")
    cfg = backends.BackendConfig(device="cpu", weights="synthetic", sam2_model="tiny", sam2_image_size=64,
                                 return_probs=True)
    seg, prop = spec.segmenter(cfg), spec.propagator(cfg)
    assert isinstance(seg, Segmenter) and isinstance(prop, Propagator)
    assert seg.net is prop.net and len(cfg.shared) == 1
    assert isinstance(spec.refiner(cfg, seg), Refiner) and isinstance(spec.inpainter(cfg), Inpainter)
    assert not spec.refine_by_default and spec.neural
    assert "SYNTHETIC" in spec.describe(cfg) and "tiny" in spec.describe(cfg)
    assert spec.model_settings(cfg) == {"sam2_model": "tiny", "sam2_image_size": 64}


def test_unknown_sam2_model_is_refused_in_one_line() -> None:
    cfg = backends.BackendConfig(device="cpu", weights="synthetic", sam2_model="huge")
    with pytest.raises(InputError, match="SAM 2.1 model must be tiny, small, base_plus, large"):
        backends.get_backend("sam2").segmenter(cfg)
