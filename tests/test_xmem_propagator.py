"""XMemPropagator: the tracker API the pipeline drives (synthetic weights, tiny frames, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track_anything.models.protocols import Propagator
from track_anything.models.xmem.bench import MovingTexture, add_bench_args, bench_from_args, run_bench
from track_anything.models.xmem.propagator import XMemPropagator, processing_size
from track_anything.tam_blender_addon.errors import InputError

SIZE = (64, 96)
CONSOLIDATING = dict(
    mem_every=1, max_mid_term_frames=3, min_mid_term_frames=2, num_prototypes=4, max_long_term_elements=12
)


@pytest.fixture(scope="module")
def video() -> MovingTexture:
    return MovingTexture(SIZE, objects=2, seed=5)


@pytest.fixture(scope="module")
def prop() -> XMemPropagator:
    # process at 48 px on the short side: 64x96 -> 48x72 -> padded 48x80, a 3x5 memory grid (HW = 15)
    return XMemPropagator("synthetic", device="cpu", process_size=48, return_probs=True, **CONSOLIDATING)


def test_is_a_propagator_with_synthetic_label(prop):
    assert isinstance(prop, Propagator)
    assert prop.name == "xmem" and prop.synthetic is True
    assert "synthetic" in prop.weights_label
    assert prop.fast is False  # CPU: always fp32


def test_processing_size_scales_the_short_side_only_down():
    assert processing_size(1080, 1920, 480) == (480, 853)
    assert processing_size(1920, 1080, 480) == (853, 480)
    assert processing_size(360, 640, 480) == (360, 640)
    assert processing_size(1080, 1920, None) == (1080, 1920)


def test_track_returns_source_resolution_labels_probs_and_confidence(prop, video):
    prop.reset()
    prop.add_reference(video.frame(0), video.labels(0), [1, 2])
    res = prop.track(video.frame(1))
    assert res.labels.shape == SIZE and res.labels.dtype == np.uint8
    assert set(np.unique(res.labels)) <= {0, 1, 2}
    assert res.obj_ids == [1, 2]
    assert res.probs.shape == (3, *SIZE) and res.probs.dtype == np.float32
    np.testing.assert_allclose(res.probs.sum(0), 1, atol=1e-5)
    np.testing.assert_array_equal(res.labels, np.array([0, 1, 2], np.uint8)[res.probs.argmax(0)])
    assert set(res.confidence) == {1, 2}
    for obj, c in res.confidence.items():
        assert 0.0 <= c <= 1.0
        if not (res.labels == obj).any():
            assert c == 0.0


def test_references_stay_in_permanent_memory_through_consolidation(prop, video):
    prop.reset()
    prop.add_reference(video.frame(0), video.labels(0), [1, 2])
    mem = prop.core.memory
    hw = mem.HW
    ref_key = mem.perm_mem.k.clone()
    assert hw == 15 and mem.perm_mem.size == hw and mem.work_mem.size == 0
    for t in range(1, 7):
        res = prop.track(video.frame(t))
        assert np.isfinite(res.probs).all()
        assert mem.work_mem.size <= 3 * hw
        assert mem.long_mem.size <= 12
    assert mem.long_mem.size > 0  # consolidation happened
    assert torch.equal(mem.perm_mem.k, ref_key)  # and never touched the reference


def test_reference_with_same_key_replaces_the_old_one(prop, video):
    prop.reset()
    prop.add_reference(video.frame(0), video.labels(0), [1, 2], key=0)
    prop.add_reference(video.frame(4), video.labels(4), [1, 2], key=4)
    assert prop.core.memory.perm_mem.size == 2 * 15
    prop.add_reference(video.frame(4), video.labels(4), [1, 2], key=4)
    assert prop.core.memory.perm_mem.size == 2 * 15
    assert prop.core.reference_keys == [0, 4]


def test_objects_can_be_added_mid_video_and_removed(prop, video):
    prop.reset()
    first = video.labels(0)
    only1 = np.where(first == 1, 1, 0).astype(np.uint8)
    prop.add_reference(video.frame(0), only1, [1])
    assert prop.track(video.frame(1)).obj_ids == [1]
    # object 7 appears on frame 2 (given by a new reference); object 1 keeps its prediction there
    lab = np.zeros(SIZE, np.uint8)
    lab[5:20, 5:30] = 7
    prop.add_reference(video.frame(2), lab, [7])
    res = prop.track(video.frame(3))
    assert res.obj_ids == [1, 7] and set(res.confidence) == {1, 7}
    assert prop.core.memory.hidden.shape[1] == 2
    prop.remove_object(1)
    res = prop.track(video.frame(4))
    assert res.obj_ids == [7] and 1 not in np.unique(res.labels)
    assert prop.core.memory.hidden.shape[1] == 1


def test_object_absent_from_reference_gets_no_pixels_and_zero_confidence(prop, video):
    prop.reset()
    lab = np.where(video.labels(0) == 1, 1, 0).astype(np.uint8)
    prop.add_reference(video.frame(0), lab, [1, 2])  # 2 declared but not visible
    res = prop.track(video.frame(1))
    assert res.obj_ids == [1, 2]
    if not (res.labels == 2).any():
        assert res.confidence[2] == 0.0


def test_correct_replaces_the_last_frames_memory(video):
    prop = XMemPropagator("synthetic", device="cpu", process_size=48, mem_every=5)
    prop.add_reference(video.frame(0), video.labels(0), [1, 2])
    prop.track(video.frame(1))  # not a memory frame (mem_every 5)
    work = prop.core.memory.work_mem
    assert work.size == 0
    fixed = np.zeros(SIZE, np.uint8)
    fixed[10:40, 10:50] = 2
    prop.correct(fixed)
    assert work.size == 15  # the corrected frame is now memory
    first = work.v[0].clone()
    prop.correct(fixed)  # correcting again replaces it instead of adding
    assert work.size == 15
    torch.testing.assert_close(work.v[0], first)
    other = np.zeros(SIZE, np.uint8)
    prop.correct(other)
    assert work.size == 15 and not torch.allclose(work.v[0], first)


def test_bad_use_raises_input_error(prop, video):
    prop.reset()
    with pytest.raises(InputError):
        prop.track(video.frame(0))
    with pytest.raises(InputError):
        prop.correct(video.labels(0))
    prop.add_reference(video.frame(0), video.labels(0), [1, 2])
    with pytest.raises(InputError):
        prop.track(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(InputError):
        prop.add_reference(video.frame(0), video.labels(0), [0])
    with pytest.raises(InputError):
        XMemPropagator("synthetic", device="cpu", max_mid_term=3)


def test_reset_forgets_objects_and_memory(prop, video):
    prop.add_reference(video.frame(0), video.labels(0), [1, 2])
    prop.reset()
    assert prop.obj_ids == [] and not prop.core.has_memory()


def test_bench_reports_fps_memory_device_and_weights():
    out = run_bench(size=SIZE, frames=4, objects=1, device="cpu", weights="synthetic")
    assert out["fps"] > 0 and out["frames"] == 3
    assert out["peak_mem_bytes"] > 0
    assert out["device"] == "cpu" and "synthetic" in out["weights_label"]


def test_bench_arguments_parse_for_the_cli():
    import argparse

    parser = argparse.ArgumentParser()
    add_bench_args(parser)
    args = parser.parse_args(["--size", "64x96", "--frames", "2", "--device", "cpu"])
    assert args.size == (64, 96) and args.frames == 2 and args.weights == "synthetic" and not args.fast
    assert bench_from_args(args)["frames"] == 1
