"""E2FGVI-HQ network: checkpoint layout, weight loading, synthetic weights, procedure helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from track_anything.models.e2fgvi.network import (
    CONSTANT_KEYS,
    InpaintGenerator,
    WindowAttention,
    build_generator,
)
from track_anything.models.e2fgvi.procedure import dilate_mask, pad_symmetric, window_plan
from track_anything.models.e2fgvi.spynet import flow_warp
from track_anything.tam_blender_addon.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "e2fgvi"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((FIX / "manifest.json").read_text())


@pytest.fixture(scope="module")
def synthetic_model() -> InpaintGenerator:
    return build_generator("synthetic")[0]


def test_state_dict_has_the_official_keys_shapes_and_order(manifest: dict) -> None:
    sd = InpaintGenerator().state_dict()
    assert [e["key"] for e in manifest["keys"]] == list(sd)
    assert len(sd) == manifest["num_keys"] == 244
    for e in manifest["keys"]:
        assert list(sd[e["key"]].shape) == e["shape"], e["key"]
        assert str(sd[e["key"]].dtype).replace("torch.", "") == e["dtype"], e["key"]
    n_params = sum(p.numel() for p in InpaintGenerator().parameters())
    assert n_params == manifest["num_parameters"]
    assert sum(v.numel() for v in sd.values()) == manifest["num_state_elements"]


def test_synthetic_weights_match_the_manifest_checksums_and_constants(manifest: dict,
                                                                     synthetic_model: InpaintGenerator) -> None:
    sd = synthetic_model.state_dict()
    assert set(manifest["constant_keys"]) == set(CONSTANT_KEYS)
    for e in manifest["keys"]:
        v = sd[e["key"]]
        if e["key"] in manifest["constant_values"]:
            want = np.asarray(manifest["constant_values"][e["key"]]).reshape(v.shape)
            np.testing.assert_allclose(v.numpy(), want, rtol=0, atol=1e-7, err_msg=e["key"])
            continue
        assert float(v.double().sum()) == pytest.approx(e["synthetic_sum"], rel=1e-9, abs=1e-12), e["key"]
        np.testing.assert_array_equal(v.flatten()[:3].numpy(), np.float32(e["synthetic_first"]))


def test_checkpoint_file_loads_strictly_and_wrong_keys_fail_in_one_line(tmp_path,
                                                                       synthetic_model: InpaintGenerator) -> None:
    sd = synthetic_model.state_dict()
    good = tmp_path / "E2FGVI-HQ-CVPR22.pth"
    torch.save(sd, good)
    model, label = build_generator(good)
    assert label == good.name
    assert torch.equal(model.state_dict()["decoder.6.weight"], sd["decoder.6.weight"])

    renamed = dict(sd)
    renamed["transformer.0.attn.qkv_renamed.weight"] = renamed.pop("transformer.0.attn.qkv.weight")
    bad = tmp_path / "bad.pth"
    torch.save(renamed, bad)
    with pytest.raises(WeightsError) as err:
        build_generator(bad)
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "unexpected" in msg

    reshaped = dict(sd)
    reshaped["decoder.6.bias"] = torch.zeros(4)
    with pytest.raises(WeightsError, match="wrong shape"):
        build_generator(reshaped)
    with pytest.raises(WeightsError, match="not found"):
        build_generator(tmp_path / "absent.pth")


def test_masks_are_dilated_like_test_py() -> None:
    with np.load(FIX / "inputs.npz") as d:
        masks, dilated = d["masks"], d["masks_dilated"]
    ours = np.stack([dilate_mask(m, 4) for m in masks])
    np.testing.assert_array_equal(ours, dilated)
    # Cross kernel, 4 iterations = city-block distance <= 4.
    one = np.zeros((15, 15), np.uint8)
    one[7, 7] = 1
    yy, xx = np.mgrid[:15, :15]
    np.testing.assert_array_equal(dilate_mask(one, 4), (abs(yy - 7) + abs(xx - 7) <= 4).astype(np.uint8))


def test_padding_mirrors_with_the_edge_pixel_like_numpy_symmetric() -> None:
    for h, w in ((100, 200), (30, 54), (61, 109)):
        x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
        hp = h + (60 - h % 60) % 60
        wp = w + (108 - w % 108) % 108
        want = np.pad(x.numpy(), ((0, 0), (0, 0), (0, hp - h), (0, wp - w)), mode="symmetric")
        np.testing.assert_array_equal(pad_symmetric(x).numpy(), want)
        np.testing.assert_array_equal(pad_symmetric(x, extend=True).numpy(), want)


def test_padding_beyond_the_frame_size_stays_short_like_test_py_unless_extended() -> None:
    # test.py concatenates one flipped copy and crops: 28 rows need 32 more, get only 28.
    h, w = 28, 52
    x = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)
    mirrored = np.pad(x.numpy(), ((0, 0), (0, 0), (0, h), (0, w)), mode="symmetric")
    np.testing.assert_array_equal(pad_symmetric(x).numpy(), mirrored)
    full = np.pad(x.numpy(), ((0, 0), (0, 0), (0, 60 - h), (0, 108 - w)), mode="symmetric")
    np.testing.assert_array_equal(pad_symmetric(x, extend=True).numpy(), full)
    # Other multiples (config key pad_multiple_hw) follow the same rule.
    assert pad_symmetric(x, (8, 8)).shape[-2:] == (32, 56)


def test_window_plan_matches_the_fixture_table() -> None:
    plan = window_plan(12, 5, 10, -1)
    assert plan == [(0, list(range(0, 6)), [10]), (5, list(range(0, 11)), []), (10, list(range(5, 12)), [0])]


def test_flow_warp_with_integer_flow_shifts_the_map() -> None:
    x = torch.arange(30, dtype=torch.float32).view(1, 1, 5, 6)
    flow = torch.zeros(1, 5, 6, 2)
    flow[..., 0] = 1.0  # sample one pixel to the right
    out = flow_warp(x, flow)
    torch.testing.assert_close(out[..., :5], x[..., 1:])
    assert torch.all(out[..., 5] == 0)


def test_fused_attention_path_agrees_with_the_reference_arithmetic() -> None:
    torch.manual_seed(0)
    attn = WindowAttention()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0, 0.05)
        x = torch.randn(1, 3, 10, 18, 512)
        pooled = torch.randn(1, 2, 2, 3, 512)
        ref = attn(x, pooled)
        attn.max_attn_elements = 1000  # forces one window per chunk
        chunked = attn(x, pooled)
        attn.use_sdpa = True
        fused = attn(x, pooled)
    torch.testing.assert_close(chunked, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-5)


def test_half_precision_autocast_path_runs_and_stays_close(synthetic_model: InpaintGenerator) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 3, 60, 108) * 2 - 1
    with torch.inference_mode():
        ref, _ = synthetic_model(x, 2)
        synthetic_model.set_attention(use_sdpa=True)
        try:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                half, flows = synthetic_model(x, 2, decode_all=False)
        finally:
            synthetic_model.set_attention(use_sdpa=False)
    assert half.shape == (2, 3, 60, 108) and flows[0].shape == (1, 1, 2, 15, 27)
    diff = (half.float() - ref[:2]).abs()
    assert torch.isfinite(half).all() and diff.mean() < 0.1
