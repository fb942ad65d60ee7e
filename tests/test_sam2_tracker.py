"""SAM 2.1 product API: the streaming tracker (frames on demand, bounded state, keyframes, late objects,
both directions, confidence, soft probabilities) and the Propagator / Segmenter adapters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track_anything.models.protocols import Propagator, Segmenter
from track_anything.models.sam2.parity import preprocess
from track_anything.models.sam2.tracker import Sam2Propagator, Sam2Segmenter, Sam2VideoTracker, build_network
from track_anything.models.sam2.video import COND, NON_COND, VideoPredictor
from track_anything.tam_blender_addon.errors import InputError


def _video(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """A textured background with a red disc moving right."""
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 4 - c) for c in range(3)], -1) * 50 + 110
    out = []
    for t in range(n):
        f = bg.copy()
        f[(xx - 12 - 2 * t) ** 2 + (yy - 24) ** 2 < 64] = [220, 50, 40]
        out.append(f.astype(np.uint8))
    return np.stack(out)


@pytest.fixture(scope="module")
def net128():
    torch.set_num_threads(1)
    return build_network("tiny", "synthetic", "cpu", 128)[0]


def test_one_streaming_pass_equals_the_official_semantics_predictor(net128):
    frames = _video(5)
    core = VideoPredictor(net128)
    with torch.inference_mode():
        st = core.init_state(lambda i: preprocess(frames[i], 128), len(frames), 48, 64)
        core.add_new_points_or_box(st, 0, 1, points=[[12, 24]], labels=[1])
        core.add_new_points_or_box(st, 0, 2, box=[40, 5, 60, 20])
        ref = {f: m[:, 0].numpy() for f, _, m in core.propagate_in_video(st)}
    tr = Sam2VideoTracker(net128, lambda i: frames[i], len(frames))
    tr.add_keyframe(0, 1, points=[[12, 24]], labels=[1])
    tr.add_keyframe(0, 2, box=[40, 5, 60, 20])
    got = {r.frame_idx: r.logits for r in tr.propagate()}
    assert sorted(got) == sorted(ref)
    for f in ref:
        np.testing.assert_array_equal(got[f], ref[f], err_msg=f"frame {f}")


def test_frames_are_read_on_demand_and_cached_features_and_outputs_stay_bounded():
    frames = _video(24)
    reads: list[int] = []
    tr = Sam2VideoTracker(build_network("tiny", "synthetic", "cpu", 64)[0], lambda i: (reads.append(i), frames[i])[1], len(frames), feature_cache=2)
    tr.add_keyframe(0, 1, points=[[12, 24]], labels=[1])
    sizes = []
    for r in tr.propagate():
        sizes.append((len(tr.state.features), len(tr.state.objects[1].out[NON_COND])))
        assert r.logits.shape == (1, 48, 64)
    assert max(s[0] for s in sizes) <= 2
    assert max(s[1] for s in sizes) <= tr.keep_window + 1
    assert reads.count(5) == 1 and len(reads) <= len(frames) + 2


def test_objects_added_after_tracking_started_are_tracked_forwards_and_backwards(net128):
    frames = _video(8)
    tr = Sam2VideoTracker(net128, lambda i: frames[i], len(frames))
    tr.add_keyframe(0, 1, points=[[12, 24]], labels=[1])
    assert [r.frame_idx for r in tr.propagate()] == list(range(8))
    late = tr.add_keyframe(5, 2, mask=np.pad(np.ones((8, 8), bool), ((20, 20), (30, 26))))
    assert late.obj_ids == [1, 2] and late.scores[2] == 10.0
    back = list(tr.propagate(5, reverse=True))
    assert [r.frame_idx for r in back] == [5, 4, 3, 2, 1, 0]
    assert all(r.obj_ids == [1, 2] for r in back)
    fwd = list(tr.propagate(5, max_frames=2))
    assert [r.frame_idx for r in fwd] == [5, 6, 7]


def test_a_keyframe_on_a_tracked_frame_is_permanent_conditioning_memory(net128):
    frames = _video(8)
    tr = Sam2VideoTracker(net128, lambda i: frames[i], len(frames))
    tr.add_keyframe(0, 1, points=[[12, 24]], labels=[1])
    list(tr.propagate())
    kf = tr.add_keyframe(3, 1, points=[[18, 24], [50, 40]], labels=[1, 0])
    again = {r.frame_idx: r for r in tr.propagate()}
    assert 3 in tr.state.objects[1].out[COND] and 3 not in tr.state.objects[1].out[NON_COND]
    np.testing.assert_array_equal(again[3].logits, kf.logits)  # re-emitted, never recomputed


def test_confidence_is_in_0_1_and_probabilities_sum_to_one(net128):
    frames = _video(4)
    tr = Sam2VideoTracker(net128, lambda i: frames[i], len(frames))
    tr.add_keyframe(0, 1, points=[[12, 24]], labels=[1])
    tr.add_keyframe(0, 2, mask=np.zeros((48, 64), bool))  # an empty mask: object absent
    for r in tr.propagate():
        assert all(0.0 <= c <= 1.0 for c in r.confidence.values())
        p = r.probs()
        assert p.shape == (3, 48, 64) and np.allclose(p.sum(0), 1.0, atol=1e-5)
        lab = r.labels()
        assert set(np.unique(lab)) <= {0, 1, 2}
        if r.frame_idx == 0:  # the mask-prompt frame keeps the ±10 mask logits, score −10
            assert r.scores[2] == -10.0 and not (lab == 2).any()
        elif r.scores[2] <= 0:  # tracked frames: an absent object is exactly −1024 everywhere
            assert (r.logits[1] == -1024.0).all() and not (lab == 2).any()
            assert r.confidence[2] < 0.5


def test_streaming_tracker_rejects_bad_input_in_one_line(net128):
    frames = _video(3)
    tr = Sam2VideoTracker(net128, lambda i: frames[i], len(frames))
    with pytest.raises(InputError, match="outside the video"):
        tr.add_keyframe(7, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(InputError, match="before tracking"):
        list(tr.propagate())
    with pytest.raises(InputError, match="uint8 RGB"):
        Sam2VideoTracker(net128, lambda i: frames[i].astype(np.float32), 3)


def test_propagator_adapter_follows_the_pipeline_contract():
    frames = _video(6)
    p = Sam2Propagator("tiny", "synthetic", "cpu", image_size=64, return_probs=True)
    assert isinstance(p, Propagator) and p.synthetic
    with pytest.raises(InputError, match="reference"):
        p.track(frames[0])
    lab = np.zeros((48, 64), np.uint8)
    lab[16:32, 4:20] = 3
    p.add_reference(frames[0], lab, [3])
    for f in frames[1:4]:
        res = p.track(f)
        assert res.labels.shape == (48, 64) and res.labels.dtype == np.uint8
        assert res.obj_ids == [3] and set(res.confidence) == {3}
        assert res.probs.shape == (2, 48, 64)
    p.correct(lab)
    assert p.track(frames[4]).labels.shape == (48, 64)
    with pytest.raises(InputError, match="frame size"):
        p.track(frames[5][:40])
    p.reset()
    with pytest.raises(InputError, match="reference"):
        p.track(frames[5])


def test_segmenter_adapter_gives_candidates_for_a_lone_click_and_one_mask_otherwise():
    frames = _video(1)
    s = Sam2Segmenter("tiny", "synthetic", "cpu", image_size=64)
    assert isinstance(s, Segmenter)
    with pytest.raises(InputError, match="set_image"):
        s.predict(points=np.array([[10, 10]]), labels=np.array([1]))
    s.set_image(frames[0], key="clip#0")
    one = s.predict(points=np.array([[12.0, 24.0]]), labels=np.array([1]))
    assert one.mask.shape == (48, 64) and one.mask.dtype == bool and len(one.alternatives) == 2
    assert one.score >= max(one.alternative_scores)
    boxed = s.predict(box=np.array([2, 14, 24, 34]))
    assert boxed.alternatives == [] and boxed.logits.shape == (1, 16, 16)
    again = s.predict(points=np.array([[12.0, 24.0]]), labels=np.array([1]), mask_prompt=one.logits)
    assert again.mask.shape == (48, 64)


@pytest.mark.slow
def test_rss_stays_flat_from_frame_200_to_2000():
    """2,000 frames at image_size 64 (tiny, synthetic): resident memory grows < 10 % after frame 200."""
    torch.set_num_threads(1)
    net = build_network("tiny", "synthetic", "cpu", 64)[0]
    base = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    tr = Sam2VideoTracker(net, lambda i: np.roll(base, i % 64, axis=1), 2000)
    tr.add_keyframe(0, 1, points=[[30, 20]], labels=[1])

    def rss_mib() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * 4096 / 2**20

    marks = {}
    for r in tr.propagate():
        if r.frame_idx in (200, 1999):
            marks[r.frame_idx] = rss_mib()
    print(f"RSS frame 200: {marks[200]:.1f} MiB, frame 1999: {marks[1999]:.1f} MiB")
    assert marks[1999] < 1.10 * marks[200]
