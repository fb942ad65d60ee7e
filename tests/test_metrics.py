"""DAVIS J and F measures and the folder evaluator."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon.errors import InputError
from track_anything.tam_blender_addon.metrics import (
    boundary_tolerance,
    evaluate_dirs,
    f_measure,
    f_measure_prec_rec,
    j_measure,
    seg2bmap,
)


def _blobs(rng: np.random.Generator, h: int, w: int, n: int = 3) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    for _ in range(n):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.ellipse(m, (cx, cy), (int(rng.integers(2, w // 3)), int(rng.integers(2, h // 3))),
                    float(rng.integers(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def _iou_by_counting(p: np.ndarray, g: np.ndarray) -> float:
    """Independent IoU: histogram of the pair codes 2*p + g."""
    counts = np.bincount((2 * p.astype(np.int64) + g.astype(np.int64)).ravel(), minlength=4)
    union = counts[1] + counts[2] + counts[3]
    return 1.0 if union == 0 else counts[3] / union


def test_j_matches_an_independent_count_to_1e6() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, g = _blobs(rng, 48, 64), _blobs(rng, 48, 64)
        assert abs(j_measure(p, g) - _iou_by_counting(p, g)) < 1e-6
    noise_p, noise_g = rng.random((97, 131)) < 0.3, rng.random((97, 131)) < 0.6
    assert abs(j_measure(noise_p, noise_g) - _iou_by_counting(noise_p, noise_g)) < 1e-6


def test_j_empty_cases() -> None:
    empty = np.zeros((8, 8), bool)
    full = np.ones((8, 8), bool)
    assert j_measure(empty, empty) == 1.0
    assert j_measure(full, empty) == 0.0
    assert j_measure(empty, full) == 0.0
    with pytest.raises(InputError, match="differ in shape"):
        j_measure(empty, np.zeros((8, 9), bool))


def test_seg2bmap_marks_the_outline_offset_toward_the_origin() -> None:
    seg = np.zeros((6, 6), bool)
    seg[1:4, 1:4] = True
    expected = {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (2, 0), (3, 0), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)}
    got = {tuple(int(v) for v in rc) for rc in np.argwhere(seg2bmap(seg))}
    assert got == expected
    assert not seg2bmap(np.ones((5, 7), bool)).any()  # a full frame has no boundary


def test_seg2bmap_edges_compare_only_along_the_last_row_and_column() -> None:
    seg = np.zeros((4, 5), bool)
    seg[2:, 3:] = True  # touches the bottom-right corner
    b = seg2bmap(seg)
    assert b[3, 2] and not b[3, 3]  # last row: only the east neighbour counts
    assert b[1, 4] and not b[2, 4] and not b[3, 4]  # last column: only the south neighbour counts
    assert b[1, 2] and b[1, 3] and b[2, 2] and not b[2, 3]


def test_tolerance_is_ceil_of_0008_times_the_diagonal() -> None:
    assert boundary_tolerance((480, 854)) == 8  # DAVIS 480p
    assert boundary_tolerance((48, 64)) == 1
    assert boundary_tolerance((1080, 1920)) == 18
    assert boundary_tolerance((48, 64), bound_th=3) == 3


def _brute_force_f(p: np.ndarray, g: np.ndarray, r: int) -> float:
    """Independent F: a boundary pixel matches if the other boundary has a pixel within distance r."""
    pb, gb = np.argwhere(seg2bmap(p)), np.argwhere(seg2bmap(g))
    if len(pb) == 0 and len(gb) == 0:
        return 1.0
    if len(pb) == 0 or len(gb) == 0:
        return 0.0
    d2 = ((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1)
    precision = (d2.min(axis=1) <= r * r).mean()
    recall = (d2.min(axis=0) <= r * r).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("bound_th", [0.008, 2, 4])
def test_f_matches_a_brute_force_distance_computation(bound_th) -> None:
    rng = np.random.default_rng(1)
    for _ in range(12):
        p, g = _blobs(rng, 40, 56), _blobs(rng, 40, 56)
        r = boundary_tolerance(p.shape, bound_th)
        assert f_measure(p, g, bound_th) == pytest.approx(_brute_force_f(p, g, r), abs=1e-9)


def test_f_davis_cases_identical_shifted_disjoint_and_empty() -> None:
    a = np.zeros((100, 120), bool)
    a[20:60, 30:80] = True
    assert f_measure(a, a) == 1.0
    shifted = np.roll(a, 1, axis=1)  # within ceil(0.008 * 156) = 2 pixels
    assert f_measure(shifted, a) == 1.0
    far = np.roll(a, 30, axis=0)
    f, precision, recall = f_measure_prec_rec(far, a)
    assert 0 < f < 0.5 and 0 < precision < 1 and 0 < recall < 1
    empty = np.zeros_like(a)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(empty, a) == 0.0
    assert f_measure(a, empty) == 0.0


def _write_dir(root: Path, masks: dict[int, list[np.ndarray]], start: int = 0) -> None:
    for oid, frames in masks.items():
        (root / str(oid)).mkdir(parents=True, exist_ok=True)
        for k, m in enumerate(frames):
            assert cv2.imwrite(str(root / str(oid) / f"{start + k:05d}.png"), m.astype(np.uint8) * 255)


def test_evaluate_dirs_gives_per_object_and_mean_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gt = {1: [_blobs(rng, 48, 64) for _ in range(4)], 2: [_blobs(rng, 48, 64) for _ in range(4)]}
    pred = {1: [m.copy() for m in gt[1]], 2: [_blobs(rng, 48, 64) for _ in range(4)]}
    _write_dir(tmp_path / "gt", gt)
    _write_dir(tmp_path / "pred", pred)
    res = evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    assert res["num_objects"] == 2 and set(res["objects"]) == {1, 2}
    assert res["objects"][1]["J"] == 1.0 and res["objects"][1]["F"] == 1.0
    j2 = np.mean([_iou_by_counting(p, g) for p, g in zip(pred[2], gt[2], strict=True)])
    assert abs(res["objects"][2]["J"] - j2) < 1e-6
    assert res["objects"][2]["num_frames"] == 4 and len(res["objects"][2]["F_frames"]) == 4
    assert res["J"] == pytest.approx((1.0 + j2) / 2)
    assert res["mean"]["J&F"] == pytest.approx((res["J"] + res["F"]) / 2)
    json.dumps(res)  # serialisable for `tam eval --json`
    inner = evaluate_dirs(tmp_path / "pred", tmp_path / "gt", exclude_first_last=True)
    assert inner["objects"][2]["num_frames"] == 2


def test_evaluate_dirs_rejects_missing_or_mismatched_frames_and_objects(tmp_path: Path) -> None:
    m = np.zeros((48, 64), bool)
    m[10:20, 10:20] = True
    _write_dir(tmp_path / "gt", {1: [m, m, m], 2: [m, m, m]})
    _write_dir(tmp_path / "pred", {1: [m, m, m], 2: [m, m, m]})
    (tmp_path / "pred" / "2" / "00001.png").unlink()
    with pytest.raises(InputError, match="object 2: the prediction lacks frame 00001"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    _write_dir(tmp_path / "pred", {2: [m, m, m, m]})
    with pytest.raises(InputError, match="has extra frame 00003"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    (tmp_path / "pred" / "2" / "00003.png").unlink()
    _write_dir(tmp_path / "pred", {3: [m, m, m]})
    with pytest.raises(InputError, match=r"object\(s\) 3 not in the ground truth"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    _write_dir(tmp_path / "gt", {3: [m, m, m], 4: [m, m, m]})
    with pytest.raises(InputError, match=r"lacks object\(s\) 4"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    _write_dir(tmp_path / "pred", {4: [m, m, np.zeros((40, 64), bool)]})
    with pytest.raises(InputError, match="object 4 frame 00002: prediction is 64x40, ground truth is 64x48"):
        evaluate_dirs(tmp_path / "pred", tmp_path / "gt")
    with pytest.raises(InputError, match="does not exist"):
        evaluate_dirs(tmp_path / "nothing", tmp_path / "gt")
