"""SAM segmenter over the official segment_anything package (CPU, synthetic weights).

One full ViT-B image embedding runs in this file (module fixture, ~20 s on 2 cores); every
prompt test reuses it through the embedding cache. The fused-attention path is checked
against the official one on a single Attention block and on a small ViT encoder.
"""

from __future__ import annotations

import time
from functools import partial

import numpy as np
import pytest
import torch

from track_anything.models.protocols import Segmenter
from track_anything.models.sam import (
    LOGIT_MAGNITUDE,
    EmbeddingCache,
    SamSegmenter,
    clean_mask,
    disable_fused_attention,
    enable_fused_attention,
    mask_to_prompt_logits,
    resolve_device,
    use_multimask,
)
from track_anything.models.synthetic import synthetic_state_dict
from track_anything.tam_blender_addon.errors import InputError, WeightsError


def _frame(h: int = 240, w: int = 320) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 60)], -1).astype(np.uint8)
    disc = (xx - w * 0.6) ** 2 + (yy - h * 0.5) ** 2 < (h * 0.2) ** 2
    img[disc] = (230, 40, 40)
    return img


@pytest.fixture(scope="module")
def seg():
    s = SamSegmenter("vit_b", "synthetic", device="cpu", cache_size=4)
    s.set_image(_frame(), key="clip#0")
    return s


CLICK = np.array([[192.0, 120.0]], np.float32)


@pytest.mark.slow
def test_synthetic_vit_b_embeds_and_answers_finite(seg):
    assert isinstance(seg, Segmenter)
    assert seg.synthetic and seg.weights_id == "synthetic-v1" and seg.name == "sam_vit_b"
    assert seg.embed_count == 1
    feats = seg.predictor.features
    assert tuple(feats.shape) == (1, 256, 64, 64) and bool(torch.isfinite(feats).all())
    res = seg.predict(CLICK, np.array([1]))
    assert res.mask.dtype == bool and res.mask.shape == (240, 320)
    assert len(res.alternatives) == 2 and len(res.alternative_scores) == 2
    assert all(a.shape == (240, 320) and a.dtype == bool for a in res.alternatives)
    assert 0.0 <= res.score <= 1.0
    assert res.score >= max(res.alternative_scores)
    assert res.logits.shape == (1, 256, 256) and np.isfinite(res.logits).all()


@pytest.mark.slow
def test_cached_key_restores_embedding_without_running_encoder(seg):
    first = seg.predict(CLICK, np.array([1]))
    t0 = time.perf_counter()
    seg.set_image(_frame(), key="clip#0")
    assert time.perf_counter() - t0 < 0.5
    assert seg.embed_count == 1 and seg.cache_hits >= 1
    again = seg.predict(CLICK, np.array([1]))
    assert np.array_equal(first.mask, again.mask) and first.score == again.score
    assert seg.cached_keys == [("clip#0", "vit_b", "synthetic-v1")]


@pytest.mark.slow
def test_prompt_rule_single_click_multimask_otherwise_single(seg):
    seg.set_image(_frame(), key="clip#0")
    two = seg.predict(np.array([[192, 120], [40, 40]], np.float32), np.array([1, 0]))
    assert two.alternatives == []
    boxed = seg.predict(box=np.array([130, 70, 260, 170]))
    assert boxed.alternatives == []
    forced = seg.predict(box=np.array([260, 170, 130, 70]), multimask=True)  # corners in any order
    assert len(forced.alternatives) == 2
    one = seg.predict(CLICK, np.array([1]), multimask=False)
    assert one.alternatives == []


@pytest.mark.slow
def test_mask_prompt_accepts_previous_logits_and_coarse_mask(seg):
    seg.set_image(_frame(), key="clip#0")
    first = seg.predict(CLICK, np.array([1]))
    refined = seg.predict(CLICK, np.array([1]), mask_prompt=first.logits)
    assert refined.alternatives == [] and refined.mask.shape == (240, 320)
    coarse = np.zeros((240, 320), bool)
    coarse[80:160, 140:240] = True
    from_mask = seg.predict(CLICK, np.array([1]), mask_prompt=coarse)
    assert from_mask.mask.shape == (240, 320) and np.isfinite(from_mask.logits).all()
    only_mask = seg.predict(mask_prompt=coarse)
    assert only_mask.mask.shape == (240, 320)
    with pytest.raises(InputError, match="mask prompt"):
        seg.predict(CLICK, np.array([1]), mask_prompt=np.zeros((10, 10), bool))


@pytest.mark.slow
def test_bad_inputs_are_one_line_input_errors(seg):
    seg.set_image(_frame(), key="clip#0")
    with pytest.raises(InputError, match="nothing to segment"):
        seg.predict()
    with pytest.raises(InputError, match="labels"):
        seg.predict(CLICK, np.array([1, 0]))
    with pytest.raises(InputError, match="labels"):
        seg.predict(CLICK, None)
    with pytest.raises(InputError, match="1 .positive. or 0"):
        seg.predict(CLICK, np.array([2]))
    with pytest.raises(InputError, match="box"):
        seg.predict(box=np.array([1, 2, 3]))
    with pytest.raises(InputError, match="RGB uint8"):
        seg.set_image(np.zeros((10, 10), np.uint8))


@pytest.mark.slow
def test_fast_switch_installs_on_this_instance_only(seg):
    from segment_anything.modeling.image_encoder import Attention

    official_forward = Attention.forward
    blocks = [m for m in seg.model.image_encoder.modules() if isinstance(m, Attention)]
    assert len(blocks) == 12 and not seg.fast
    seg.set_fast(True)
    try:
        assert all("forward" in b.__dict__ for b in blocks)
        assert Attention.forward is official_forward
    finally:
        seg.set_fast(False)
    assert not any("forward" in b.__dict__ for b in blocks)


def test_fused_attention_block_equals_official_within_1e4():
    from segment_anything.modeling.image_encoder import Attention, Block

    torch.manual_seed(0)
    att = Attention(64, num_heads=4, use_rel_pos=True, input_size=(7, 7)).eval()
    att.load_state_dict(synthetic_state_dict(att.state_dict(), "synthetic-v1"))  # non-zero rel-pos tables
    x = torch.randn(3, 7, 7, 64)
    with torch.no_grad():
        ref = att(x)
        assert enable_fused_attention(att) == 1
        fused = att(x)
    assert (ref - fused).abs().max().item() < 1e-4
    # a windowed block with padding (10x10 tokens, 4x4 windows) and a global one
    for window, size in ((4, (4, 4)), (0, (10, 10))):
        blk = Block(48, num_heads=3, use_rel_pos=True, window_size=window, input_size=size).eval()
        blk.load_state_dict(synthetic_state_dict(blk.state_dict(), "synthetic-v1"))
        xb = torch.randn(2, 10, 10, 48)
        with torch.no_grad():
            ref = blk(xb)
            enable_fused_attention(blk)
            fused = blk(xb)
        assert (ref - fused).abs().max().item() < 1e-4


def test_fused_encoder_equals_official_and_can_be_switched_off():
    from segment_anything.modeling import ImageEncoderViT

    enc = ImageEncoderViT(
        img_size=128, patch_size=16, embed_dim=96, depth=3, num_heads=4, use_rel_pos=True, window_size=3,
        global_attn_indexes=(2,), out_chans=32, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    enc.load_state_dict(synthetic_state_dict(enc.state_dict(), "synthetic-v1"))
    enc = enc.double()
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = enc(x)
        assert enable_fused_attention(enc) == 3
        fused = enc(x)
        assert disable_fused_attention(enc) == 3
        back = enc(x)
    assert (ref - fused).abs().max().item() < 1e-9  # same maths, exactly (float64)
    assert torch.equal(ref, back)


def test_use_multimask_rule():
    one = np.array([[1.0, 2.0]])
    assert use_multimask(one, None, None)
    assert not use_multimask(np.array([[1.0, 2.0], [3.0, 4.0]]), None, None)
    assert not use_multimask(one, np.array([0, 0, 5, 5]), None)
    assert not use_multimask(one, None, np.zeros((1, 256, 256)))
    assert not use_multimask(None, np.array([0, 0, 5, 5]), None)


def test_mask_to_prompt_logits_follows_sam_resize_and_padding():
    # a 512x1024 frame is embedded as 512x1024 (long side 1024) padded to 1024x1024,
    # so the 256x256 prompt holds the frame in its top 128 rows
    mask = np.zeros((512, 1024), bool)
    mask[:, :512] = True  # left half
    logits = mask_to_prompt_logits(mask, (512, 1024))
    assert logits.shape == (1, 256, 256) and logits.dtype == np.float32
    assert np.allclose(logits[0, :128, :128], LOGIT_MAGNITUDE)
    assert np.allclose(logits[0, :128, 128:], -LOGIT_MAGNITUDE)
    assert np.allclose(logits[0, 128:, :], -LOGIT_MAGNITUDE)  # padding is background
    # a small frame is upscaled: 100x50 -> 1024x512
    small = np.ones((100, 50), bool)
    lg = mask_to_prompt_logits(small, (1024, 512))
    assert np.allclose(lg[0, :, :128], LOGIT_MAGNITUDE) and np.allclose(lg[0, :, 128:], -LOGIT_MAGNITUDE)


def test_clean_mask_removes_small_islands_and_fills_small_holes():
    m = np.zeros((60, 80), bool)
    m[10:50, 10:50] = True
    m[20:22, 20:22] = False  # 4-pixel hole: filled
    m[25:40, 25:40] = False  # 225-pixel hole: kept
    m[5:7, 70:72] = True  # 4-pixel island: removed
    m[0:3, 0:3] = False
    out = clean_mask(m, min_area=20)
    assert out[20:22, 20:22].all()
    assert not out[25:40, 25:40].any()
    assert not out[5:7, 70:72].any()
    assert out[10:50, 10:20].all()
    edge = np.zeros((20, 20), bool)
    edge[0:5, 0:5] = True
    edge[1, 1] = False  # hole-like but enclosed: filled; border background untouched
    assert clean_mask(edge, 10)[1, 1] and not clean_mask(edge, 10)[10:, 10:].any()
    tiny = np.zeros((20, 20), bool)
    tiny[3:5, 3:5] = True
    tiny[10, 10] = True
    kept = clean_mask(tiny, 50)  # everything is small: the largest island survives
    assert kept[3:5, 3:5].all() and not kept[10, 10]
    assert not clean_mask(np.zeros((5, 5), bool), 10).any()


def test_embedding_cache_evicts_least_recently_used():
    cache = EmbeddingCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert cache.keys() == ["a", "c"] and cache.get("b") is None and len(cache) == 2
    cache.clear()
    assert len(cache) == 0


def test_official_weights_missing_names_download_command(tmp_path):
    with pytest.raises(WeightsError) as info:
        SamSegmenter("vit_l", "official", device="cpu", weights_dir=tmp_path)
    msg = str(info.value)
    assert "sam_vit_l_0b3195.pth" in msg and f"tam weights download sam_vit_l --dir {tmp_path}" in msg


def test_checkpoint_that_does_not_fit_is_rejected(tmp_path):
    bad = tmp_path / "not_sam.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3)}}, bad)
    with pytest.raises(WeightsError, match="does not fit"):
        SamSegmenter("vit_b", bad, device="cpu")


def test_unknown_model_and_device_are_input_errors():
    with pytest.raises(InputError, match="vit_b, vit_l, vit_h"):
        SamSegmenter("vit_x", "synthetic")
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    with pytest.raises(InputError):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda")
