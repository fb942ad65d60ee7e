"""Alpha-matte errors (SAD, MSE, Grad, Conn, dtSSD) and `tam eval` on soft 16-bit ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon import metrics as M
from track_anything.tam_blender_addon.cli import main


def _soft_disc(h=48, w=64, r=14.3, cx=30.0, cy=24.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0.0, 1.0)


def test_sad_and_mse_follow_their_definitions():
    g = np.zeros((10, 10))
    p = g.copy()
    p[:2, :5] = 0.5  # 10 pixels off by 0.5
    assert M.sad(p, g) == pytest.approx(10 * 0.5 / 1000)
    assert M.mse(p, g) == pytest.approx(10 * 0.25 / 100)


def test_perfect_prediction_has_zero_error_everywhere():
    g = _soft_disc()
    assert M.alpha_errors(g, g) == {"SAD": 0.0, "MSE": 0.0, "Grad": 0.0, "Conn": 0.0}
    assert M.dtssd(g, g, g, g) == 0.0


def test_gradient_kernel_is_the_reference_gaussgradient_one():
    k = M._gauss_derivative_kernel(1.4)
    assert k.shape == (9, 9)  # halfsize = ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = ceil(3.62) = 4
    assert np.sum(k * k) == pytest.approx(1.0)
    assert np.allclose(k, -k[:, ::-1]) and np.allclose(k, k[::-1, :])  # odd in x, even in y


def test_gradient_error_punishes_a_hard_edge_against_a_soft_one_and_is_symmetric():
    soft = np.tile(np.clip((np.arange(64) - 26) / 12.0, 0, 1), (32, 1))
    hard = (soft >= 0.5).astype(np.float64)
    assert M.gradient_error(hard, soft) > 0.01
    assert M.gradient_error(hard, soft) == pytest.approx(M.gradient_error(soft, hard))


def test_connectivity_error_charges_a_detached_island_its_area():
    g = _soft_disc()
    p = g.copy()
    p[2:6, 55:60] = 1.0  # a 20-pixel island of full alpha, far from the object
    assert M.connectivity_error(g, g) == 0.0
    assert M.connectivity_error(p, g) == pytest.approx(20 / 1000, rel=1e-6)


def test_dtssd_is_zero_for_matching_motion_and_grows_with_flicker():
    a0, a1 = _soft_disc(cx=30), _soft_disc(cx=32)
    assert M.dtssd(a1, a0, a1, a0) == 0.0
    flicker = a1.copy()
    flicker[a1 > 0] = np.clip(flicker[a1 > 0] + 0.1, 0, 1)
    expect = np.sqrt(np.mean(((flicker - a0) - (a1 - a0)) ** 2)) * 100
    assert M.dtssd(flicker, a0, a1, a0) == pytest.approx(expect)


def _write(root, oid, i, img):
    d = root / str(oid)
    d.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(d / f"{i:05d}.png"), img)


def test_eval_reports_alpha_errors_beside_j_and_f_when_the_ground_truth_is_16_bit(tmp_path, capsys):
    gt_dir, pred_dir, bin_dir = tmp_path / "gt", tmp_path / "pred", tmp_path / "bin"
    gts = [_soft_disc(cx=20 + 3 * i) for i in range(3)]
    for i, g in enumerate(gts):
        _write(gt_dir, 1, i, np.round(g * 65535).astype(np.uint16))
        _write(pred_dir, 1, i, np.round(g * 65535).astype(np.uint16))
        _write(bin_dir, 1, i, np.where(g > 0.5, 255, 0).astype(np.uint8))
    exact = M.evaluate_dirs(pred_dir, gt_dir)
    assert exact["soft"] and exact["J"] == 1.0
    assert exact["MSE"] < 1e-9 and exact["dtSSD"] < 1e-3
    hard = M.evaluate_dirs(bin_dir, gt_dir)
    want = np.mean([np.mean(((g > 0.5) - g) ** 2) for g in gts])
    assert hard["J"] == 1.0 and hard["objects"][1]["MSE"] == pytest.approx(want, rel=1e-4)
    assert hard["SAD"] > exact["SAD"] and hard["Grad"] > exact["Grad"]
    assert main(["eval", str(bin_dir), str(gt_dir)]) == 0
    out = capsys.readouterr().out
    assert "SAD" in out and "dtSSD" in out and "mean" in out
    # binary ground truth: J and F only, as before
    assert "MSE" not in M.evaluate_dirs(bin_dir, bin_dir)
