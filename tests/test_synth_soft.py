"""Soft ground truth of synthetic clips: exact sub-pixel coverage, motion blur, strands, 16-bit GT files."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip


def _spec(**kw) -> ClipSpec:
    objs = [
        ObjectSpec(1, (40, 30), [(0, 40, 40, 1.0), (5, 70, 44, 1.1)], shape="blob", hue=0.3, strands=kw.pop("strands", 0)),
        ObjectSpec(2, (24, 24), [(0, 100, 40, 1.0), (5, 50, 40, 1.0)], shape="rect", hue=0.7, depth=1),
    ]
    base = {"width": 128, "height": 80, "num_frames": 6, "seed": 2, "objects": objs, "supersample": 4}
    base.update(kw)
    return ClipSpec(**base)


def test_soft_alpha_is_one_inside_zero_outside_fractional_only_at_the_outline_and_labels_are_alpha_over_half():
    spec = _spec(objects=[_spec().objects[0]])
    frame, labels, alphas = make_clip(spec).render_soft(0)
    a = alphas[1]
    body = cv2.erode((a > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    far = ~cv2.dilate((a > 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert np.all(a[body] == 1.0) and np.all(a[far] == 0.0)
    frac = (a > 0) & (a < 1)
    assert frac.sum() > 50 and not np.any(frac & (body | far))
    assert np.array_equal(labels == 1, a > 0.5)
    assert frame.dtype == np.uint8 and frame.shape == (80, 128, 3)


def test_near_object_takes_its_samples_from_the_far_one_and_alphas_never_sum_above_one():
    spec = _spec()
    clip = make_clip(spec)
    only_near = make_clip(dataclasses.replace(spec, objects=[spec.objects[1]]))
    for i in (0, 3):  # 3: the near square crosses the far blob
        al = clip.alphas(i)
        assert np.all(al[1] + al[2] <= 1.0 + 1e-6)
        assert np.allclose(al[2], only_near.alphas(i)[2])
    alone = make_clip(dataclasses.replace(spec, objects=[spec.objects[0]])).alphas(3)[1]
    assert clip.alphas(3)[1].sum() < alone.sum() - 50  # the far object lost what the near one covers


def test_motion_blur_spreads_the_edge_but_keeps_the_covered_area():
    sharp = make_clip(_spec()).alphas(3)[2]
    blurred = make_clip(_spec(shutter=1.0, motion_samples=8)).alphas(3)[2]
    frac = lambda a: int(((a > 0.01) & (a < 0.99)).sum())  # noqa: E731
    assert frac(blurred) > 2 * frac(sharp)
    assert abs(blurred.sum() - sharp.sum()) < 0.02 * sharp.sum()


def test_strands_add_thin_soft_parts_outside_the_body():
    plain = make_clip(_spec()).alphas(0)[1]
    hairy = make_clip(_spec(strands=6)).alphas(0)[1]
    extra = (hairy > 0) & (plain == 0)
    assert extra.sum() > 30
    assert np.median(hairy[extra]) < 0.9  # about a pixel wide: mostly partial coverage


def test_motion_blur_and_strands_need_supersampling():
    with pytest.raises(ValueError, match="supersample"):
        make_clip(_spec(supersample=0, shutter=0.5))
    with pytest.raises(ValueError, match="supersample"):
        make_clip(_spec(supersample=0, strands=3))


def test_write_clip_writes_16_bit_true_coverage_beside_the_binary_gt(tmp_path):
    clip = make_clip(_spec(num_frames=2, shutter=0.5, strands=4))
    paths = write_clip(clip, tmp_path, video=False, images=True)
    for i in range(2):
        frame, labels, alphas = clip.render_soft(i)
        for oid in (1, 2):
            a16 = cv2.imread(str(paths["gt_alpha"] / str(oid) / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
            assert a16.dtype == np.uint16
            assert np.abs(a16 / 65535.0 - alphas[oid]).max() < 1e-4
            gt = cv2.imread(str(paths["gt"] / str(oid) / f"{i:05d}.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(gt == 255, alphas[oid] > 0.5)
        png = cv2.cvtColor(cv2.imread(str(paths["frames"] / f"{i:05d}.png")), cv2.COLOR_BGR2RGB)
        assert np.array_equal(png, frame)
