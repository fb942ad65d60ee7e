"""E2FGVI test-time procedure against test.py's rules on cases the golden fixture does not cover.

Small sizes where test.py's padding comes out short, num_ref >= 0 reference picking,
the parity runner's mask preparation, and a literal transcription of test.py's window
loop compared bit for bit with `run_procedure` on the same network.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from track_anything.models.e2fgvi import parity
from track_anything.models.e2fgvi.network import build_generator
from track_anything.models.e2fgvi.procedure import dilate_mask, masked_input, run_procedure, window_plan


def _clip(t: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Textured frames with two moving ellipses as masks (before dilation)."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.stack([
        np.stack([127 + 120 * np.sin(xx / (3 + c) + 0.7 * i + yy / 5) for c in range(3)], -1) for i in range(t)
    ]).astype(np.uint8)
    masks = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        for o in range(2):
            cy, cx = h * (0.3 + 0.4 * o), (w * 0.2 + 2 * i + o * w * 0.3) % w
            masks[i][((yy - cy) / (h * 0.15)) ** 2 + ((xx - cx) / (w * 0.1)) ** 2 <= 1] = 1
    return frames, masks


def _test_py_loop(model, frames: np.ndarray, dilated: np.ndarray, stride: int,
                  ref_length: int) -> tuple[list[np.ndarray], np.ndarray]:
    """test.py's main loop (num_ref = -1) written out on 5-D tensors (its layout, its op order)."""
    t_len, h, w = frames.shape[:3]
    imgs = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous().float().div(255)[None] * 2 - 1
    masks = torch.from_numpy(dilated * 255)[:, None].contiguous().float().div(255)[None]
    comp: list[np.ndarray | None] = [None] * t_len
    preds = []
    for f in range(0, t_len, stride):
        nb = list(range(max(0, f - stride), min(t_len, f + stride + 1)))
        refs = [i for i in range(0, t_len, ref_length) if i not in nb]
        x = imgs[:1, nb + refs] * (1 - masks[:1, nb + refs])
        h_pad, w_pad = (60 - h % 60) % 60, (108 - w % 108) % 108
        x = torch.cat([x, torch.flip(x, [3])], 3)[:, :, :, :h + h_pad, :]
        x = torch.cat([x, torch.flip(x, [4])], 4)[:, :, :, :, :w + w_pad]
        with torch.no_grad():
            pred = model(x, len(nb))[0]
        pred = ((pred[:, :, :h, :w] + 1) / 2).permute(0, 2, 3, 1).numpy() * 255
        preds.append(pred[: len(nb)])
        for i, idx in enumerate(nb):
            m = dilated[idx][..., None]
            img = pred[i].astype(np.uint8) * m + frames[idx] * (1 - m)
            comp[idx] = img if comp[idx] is None else comp[idx].astype(np.float32) * 0.5 + img.astype(np.float32) * 0.5
    return preds, np.stack([c.astype(np.float32) for c in comp])


def test_small_frames_get_test_py_short_padding_and_match_its_loop_bit_for_bit() -> None:
    # 28 x 52 needs 32 x 56 more; test.py's single mirrored copy gives 56 x 104, which the
    # network accepts (token map 5 x 9). The parity procedure must reproduce that exactly.
    model = build_generator("synthetic")[0]
    frames, masks = _clip(3, 28, 52)
    dilated = np.stack([dilate_mask(m, 4) for m in masks])
    seen: list[tuple[int, ...]] = []
    # Stride 1, ref_length 2: windows [0, 1]+[2], [0, 1, 2], [1, 2]+[0]; frame 1 is averaged twice.
    res = run_procedure(lambda x, n: model(x, n)[0], frames, dilated, 1, 2, -1,
                        on_input=lambda k, x: seen.append(tuple(x.shape)))
    assert [(w.neighbor_ids, w.ref_ids) for w in res.windows] == [([0, 1], [2]), ([0, 1, 2], []), ([1, 2], [0])]
    assert seen == [(1, 3, 3, 56, 104)] * 3
    preds, comp = _test_py_loop(model, frames, dilated, 1, 2)
    for win, pred in zip(res.windows, preds, strict=True):
        np.testing.assert_array_equal(win.pred255, pred)
    np.testing.assert_array_equal(res.comp_float, comp)


def test_sizes_test_py_cannot_run_fail_in_the_network_too() -> None:
    model = build_generator("synthetic")[0]
    frames, masks = _clip(2, 20, 52)  # 20 rows -> 40 padded -> 4 token rows: not a 5-row window
    with pytest.raises(ValueError, match="window"), torch.no_grad():
        model(masked_input(frames, masks), 2)
    frames, masks = _clip(2, 25, 52)  # 50 rows: quarter-size flow 12 rows, features 13
    with pytest.raises(ValueError, match="flow size"), torch.no_grad():
        model(masked_input(frames, masks), 2)


def test_reference_frames_with_num_ref_follow_get_ref_index() -> None:
    # num_ref = 2, ref_length 3: candidates f-3, f, f+3 (inclusive end), non-neighbours kept.
    plan = {f: (nb, refs) for f, nb, refs in window_plan(20, 2, 3, 2)}
    assert plan[16] == (list(range(14, 19)), [13, 19])
    assert plan[0] == ([0, 1, 2], [3])
    # num_ref 0 and 1: num_ref // 2 == 0, the only candidate is f itself, a neighbour.
    assert all(refs == [] for _, _, refs in window_plan(20, 2, 3, 1))
    assert all(refs == [] for _, _, refs in window_plan(9, 2, 2, 0))
    # num_ref = 4, ref_length 2 around f = 10: 6, 8, 10, 12, 14 minus neighbours 8..12.
    assert {f: refs for f, _, refs in window_plan(30, 2, 2, 4)}[10] == [6, 14]
    # The end index is min(length, ...) inclusive: test.py can pick frame `length` itself
    # and then fails indexing it; the plan keeps that id so the procedure fails the same way.
    assert {f: refs for f, _, refs in window_plan(13, 2, 3, 2)}[10] == [7, 13]
    # num_ref = -1: every ref_length-th frame that is not a neighbour.
    assert [refs for _, _, refs in window_plan(23, 5, 10, -1)] == [[10, 20], [20], [0, 20], [0], [0, 10]]


def test_parity_runner_prepares_masks_like_read_mask(tmp_path: Path) -> None:
    # A mask of another size is resized with PIL nearest to the frame size, then
    # thresholded and dilated with the configured iterations.
    small = np.zeros((2, 10, 20), np.uint8)
    small[:, 3:5, 7:9] = 1
    config = {"mask_dilation": {"kernel": "3x3 cross", "iterations": 2}}
    got = parity.fixture_masks({"masks": small}, config, (40, 20))
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    want = [cv2.dilate((np.array(Image.fromarray(m).resize((40, 20), Image.NEAREST)) > 0).astype(np.uint8),
                       kernel, iterations=2) for m in small]
    np.testing.assert_array_equal(got, np.stack(want))
    assert got.shape == (2, 20, 40)
    assert parity.parse_kernel("3x3 cross") == (cv2.MORPH_CROSS, (3, 3))
    assert parity.parse_kernel("5x3 rect") == (cv2.MORPH_RECT, (3, 5))  # rows x cols -> (width, height)
    with pytest.raises(ValueError, match="kernel"):
        parity.fixture_masks({"masks": small}, {"mask_dilation": {"kernel": "5x5 blob"}}, (20, 10))
    (tmp_path / "config.json").write_text(json.dumps({"model": "e2fgvi", "weights": "synthetic-v1"}))
    np.savez(tmp_path / "inputs.npz", frames=np.zeros((1, 10, 20, 3), np.uint8), masks=small[:1])
    with pytest.raises(ValueError, match="e2fgvi_hq"):
        parity.run(tmp_path)
