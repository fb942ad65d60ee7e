"""Classic GrabCut segmenter: boxes, clicks and coarse masks on synthetic frames with exact ground truth."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from track_anything.models.classic import ClassicInpainter, ClassicPropagator, ClassicSegmenter
from track_anything.models.protocols import Inpainter, Propagator, Segmenter
from track_anything.tam_blender_addon.synth import make_clip


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_classic_backends_implement_the_protocols_and_say_they_are_not_neural():
    seg, prop, inp = ClassicSegmenter(), ClassicPropagator(), ClassicInpainter()
    assert isinstance(seg, Segmenter) and isinstance(prop, Propagator) and isinstance(inp, Inpainter)
    assert (seg.name, prop.name, inp.name) == ("classic-grabcut", "classic-flow", "classic-inpaint")
    assert not (seg.synthetic or prop.synthetic or inp.synthetic)


@pytest.mark.parametrize("preset,seed,frame", [("small_object_pan", 0, 0), ("small_object_pan", 2, 0),
                                                ("small_object_pan", 4, 30), ("demo", 1, 10)])
def test_box_prompt_segments_the_object_with_iou_above_0_9(preset, seed, frame):
    clip = make_clip(preset, seed=seed)
    f, labels = clip.render(frame)
    seg = ClassicSegmenter()
    seg.set_image(f)
    for oid in clip.obj_ids:
        res = seg.predict(box=clip.box(frame, oid))
        assert res.mask.dtype == bool and res.mask.shape == labels.shape
        assert _iou(res.mask, labels == oid) > 0.9
        assert 0.0 <= res.score <= 1.0 and len(res.alternatives) == len(res.alternative_scores)


def test_positive_and_negative_clicks_segment_the_object():
    clip = make_clip("demo", seed=0)
    f, labels = clip.render(0)
    seg = ClassicSegmenter()
    seg.set_image(f)
    for oid in clip.obj_ids:
        ys, xs = np.nonzero(cv2.erode((labels == oid).astype(np.uint8), np.ones((9, 9), np.uint8)))
        k = len(xs) // 2
        bx = clip.box(0, oid)
        neg = (min(bx[2] + 8, f.shape[1] - 1), min(bx[3] + 8, f.shape[0] - 1))
        res = seg.predict(points=np.array([[xs[k], ys[k]], neg], np.float32), labels=np.array([1, 0]))
        assert res.mask[ys[k], xs[k]] and not res.mask[int(neg[1]), int(neg[0])]
        assert _iou(res.mask, labels == oid) > 0.8


def test_coarse_mask_prompt_is_refined_to_the_object():
    clip = make_clip("small_object_pan", seed=1)
    f, labels = clip.render(20)
    gt = labels == 1
    coarse = cv2.dilate(gt.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    seg = ClassicSegmenter()
    seg.set_image(f)
    res = seg.predict(mask_prompt=coarse)
    assert _iou(coarse, gt) < 0.7 and _iou(res.mask, gt) > 0.9
    logits = np.where(coarse, 5.0, -5.0).astype(np.float32)[::2, ::2]  # low-res logits are resized
    assert _iou(seg.predict(mask_prompt=logits).mask, gt) > 0.85


def test_no_prompt_gives_an_empty_mask_and_predict_needs_an_image():
    seg = ClassicSegmenter()
    with pytest.raises(RuntimeError):
        seg.predict(box=np.array([0, 0, 5, 5]))
    seg.set_image(np.zeros((20, 30, 3), np.uint8))
    res = seg.predict()
    assert not res.mask.any() and res.score == 0.0


def test_prompts_off_the_frame_give_an_empty_mask_instead_of_crashing():
    clip = make_clip("demo", seed=0)
    seg = ClassicSegmenter()
    seg.set_image(clip.get(0))
    assert not seg.predict(box=np.array([400, 300, 500, 400.0])).mask.any()
    assert not seg.predict(box=np.array([10, 10, 10, 10.0])).mask.any()
    assert not seg.predict(points=np.array([[-5.0, -5.0]]), labels=np.array([1])).mask.any()
    assert not seg.predict(points=np.array([[100.0, 100.0]]), labels=np.array([0])).mask.any()


def test_box_on_a_striped_ball_on_a_pale_wall_keeps_the_white_stripes_that_look_like_the_wall():
    # GrabCut alone drops the white caps of this ball (J 0.86): the tight box says where the object ends
    clip = make_clip("striped_ball", seed=2)
    f, labels = clip.render(32)
    seg = ClassicSegmenter()
    seg.set_image(f)
    assert _iou(seg.predict(box=clip.box(32, 1)).mask, labels == 1) > 0.95


def test_click_on_one_coloured_stripe_of_a_striped_ball_gets_the_whole_ball():
    # before: only the stripes of the clicked colour (J 0.41)
    clip = make_clip("striped_ball", seed=1)
    f, labels = clip.render(32)
    ball = labels == 1
    depth = cv2.distanceTransform(ball.astype(np.uint8), cv2.DIST_L2, 5)
    ys, xs = np.nonzero(ball & (f.min(axis=2) < 150) & (depth > 8))
    seg = ClassicSegmenter()
    seg.set_image(f)
    res = seg.predict(points=np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32), labels=np.array([1]))
    assert _iou(res.mask, ball) > 0.8


def test_box_on_a_compressed_striped_ball_bridges_the_coloured_stripes_grabcut_returns_apart():
    # after lossy coding GrabCut keeps only the coloured stripes, in separate pieces (J 0.86): one object
    clip = make_clip("striped_ball", seed=4)
    f, labels = clip.render(32)
    ok, buf = cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    seg = ClassicSegmenter()
    seg.set_image(np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]))
    assert _iou(seg.predict(box=clip.box(32, 1)).mask, labels == 1) > 0.93
