"""Keyframe tracking: span planning, both-direction tracking, corrections, resume, removal."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest

from track_anything.tam_blender_addon.errors import Cancelled, InputError
from track_anything.tam_blender_addon.pipeline import Engine, Span, plan_spans


def test_plan_spans_cover_range_once_per_direction_and_fuse_between_keyframes():
    spans = plan_spans([10, 20], 0, 29, "both")
    assert spans == [
        Span(10, None, 9, 0),
        Span(10, 20, 11, 19),
        Span(20, 10, 19, 11, fuse=True),
        Span(20, None, 21, 29),
    ]
    covered = sorted(f for s in spans for f in s.frames)
    # frames between keyframes are tracked twice (fused), the rest once, keyframes never
    assert covered.count(15) == 2 and covered.count(5) == 1 and 10 not in covered and 20 not in covered


def test_plan_spans_single_direction_and_adjacent_keyframes():
    assert plan_spans([5], 0, 9, "forward") == [Span(5, None, 6, 9)]
    assert plan_spans([5], 0, 9, "backward") == [Span(5, None, 4, 0)]
    assert plan_spans([3, 4], 3, 4, "both") == []


def test_plan_spans_without_keyframe_in_range_is_a_clear_error():
    with pytest.raises(InputError, match="no keyframe"):
        plan_spans([50], 0, 10)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


@pytest.fixture(scope="module")
def occlusion_clip(tmp_path_factory):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    clip = make_clip(preset_spec("occlusion", seed=3, num_frames=36))
    out = tmp_path_factory.mktemp("occl")
    paths = write_clip(clip, out)
    return clip, paths


def _new_session(tmp_path, video, backend="classic"):
    from track_anything.tam_blender_addon.frames import open_source
    from track_anything.tam_blender_addon.session import Session

    with open_source(video) as src:
        info = src.info()
    return Session.create(tmp_path / "session", info, backend=backend)


def _boxed_first_object(session, clip, frames=(0,)):
    """The clip's first object with its true box on `frames`; (object id, classic Engine)."""
    oid = clip.obj_ids[0]
    session.add_object(obj_id=oid)
    for f in frames:
        session.add_box(f, oid, *clip.box(f, oid))
    return oid, Engine(session)


@contextlib.contextmanager
def _tracked_first_object(tmp_path, clip, video, end: int):
    """A classic session with the clip's first object boxed on frame 0 and tracked over 0..end."""
    with _new_session(tmp_path, video) as s:
        oid, eng = _boxed_first_object(s, clip)
        list(eng.track(start=0, end=end, direction="forward"))
        yield s, oid, eng
        eng.close()


def _mean_j(session, clip, obj, frames=None):
    frames = range(len(clip)) if frames is None else frames
    return float(np.mean([_jaccard(session.object_mask(f, obj), clip.mask(f, obj)) for f in frames]))


def test_middle_keyframe_box_tracks_both_directions_through_occlusion(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    mid = len(clip) // 2
    with _new_session(tmp_path, paths["video"]) as s:
        for oid in clip.obj_ids:
            s.add_object(obj_id=oid)
            s.add_box(mid, oid, *clip.box(mid, oid))
        eng = Engine(s)
        eng.segment(mid)
        list(eng.track(direction="both"))
        assert s.mask_frames() == list(range(len(clip)))
        for oid in clip.obj_ids:
            assert _mean_j(s, clip, oid) >= 0.80, oid
        eng.close()


def test_correction_recomputes_only_the_span_between_neighbouring_keyframes(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    n = len(clip)
    with _new_session(tmp_path, paths["video"]) as s:
        oid, eng = _boxed_first_object(s, clip, frames=(0, 20))
        list(eng.track(direction="both"))
        before = {f: s.read_mask(f).labels.copy() for f in range(n)}
        j_before = _mean_j(s, clip, oid, range(21, n))
        # correction on frame 10: only the spans 0..10 and 10..20 are recomputed
        s.add_box(10, oid, *clip.box(10, oid))
        eng.segment(10)
        list(eng.track(direction="both"))
        log = s.read_log()
        last_start = [e for e in log if e["event"] == "track_start"][-1]
        assert sorted(last_start["spans"]) == sorted(["0->[1..9]", "10<-[1..9]", "10->[11..19]", "20<-[11..19]"])
        recomputed = {e["frame"] for e in log[log.index(last_start):] if e["event"] == "track_frame"}
        assert recomputed == set(range(1, 10)) | set(range(11, 20))
        for f in range(21, n):  # outside the corrected span nothing changed
            assert np.array_equal(s.read_mask(f).labels, before[f])
        assert _mean_j(s, clip, oid, range(21, n)) == j_before
        eng.close()


def test_interrupted_track_resumes_from_the_last_written_frame(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    n = len(clip)
    with _new_session(tmp_path, paths["video"]) as s:
        oid, eng = _boxed_first_object(s, clip)
        calls = {"n": 0}

        def stop_after_12() -> bool:
            calls["n"] += 1
            return calls["n"] > 12

        with pytest.raises(Cancelled):
            list(eng.track(direction="forward", should_stop=stop_after_12))
        assert s.mask_frames() == list(range(0, 13))
        progress = list(eng.track(direction="forward"))
        assert len(progress) == n - 13  # only what was missing, nothing twice
        redone = [e["frame"] for e in s.read_log() if e["event"] == "track_frame"]
        assert sorted(redone) == list(range(1, n))
        assert _mean_j(s, clip, oid) >= 0.8
        eng.close()


def test_remove_object_keeps_pixels_outside_dilated_mask_and_resumes(tmp_path, occlusion_clip):
    import cv2

    from track_anything.tam_blender_addon.frames import open_source

    clip, paths = occlusion_clip
    with _tracked_first_object(tmp_path, clip, paths["video"], end=11) as (s, oid, eng):
        out = tmp_path / "removed"
        stops = {"n": 0}

        def stop_soon() -> bool:
            stops["n"] += 1
            return stops["n"] > 5

        with pytest.raises(Cancelled):
            list(eng.inpaint([oid], str(out), dilate=4, frames=list(range(12)), should_stop=stop_soon))
        kept = sorted(p.name for p in out.glob("*.png"))
        assert 0 < len(kept) < 12
        list(eng.inpaint([oid], str(out), dilate=4, frames=list(range(12))))
        with open_source(paths["video"]) as src:
            for f in range(12):
                res = cv2.cvtColor(cv2.imread(str(out / f"{f:05d}.png")), cv2.COLOR_BGR2RGB)
                m = s.object_mask(f, oid).astype(np.uint8)
                k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
                hole = cv2.dilate(m, k) > 0
                orig = src.get(f)
                assert np.array_equal(res[~hole], orig[~hole])
                if hole.any():
                    assert not np.array_equal(res[hole], orig[hole])


def test_removal_reuses_finished_frames_only_while_the_masks_are_unchanged(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    with _tracked_first_object(tmp_path, clip, paths["video"], end=5) as (s, oid, eng):
        out = tmp_path / "removed"
        frames = list(range(6))
        list(eng.inpaint([oid], str(out), dilate=4, frames=frames))
        # same masks and settings: a re-run finds every frame done
        assert list(eng.inpaint([oid], str(out), dilate=4, frames=frames)) == []
        # a correction rewrites masks: the earlier frames no longer count as done
        s.add_box(3, oid, *clip.box(3, oid))
        eng.segment(3)
        assert len(list(eng.inpaint([oid], str(out), dilate=4, frames=frames))) == len(frames)
        # other settings (a bigger dilation) also start over
        assert len(list(eng.inpaint([oid], str(out), dilate=6, frames=frames))) == len(frames)


def test_changed_tracker_settings_retrack_finished_spans_and_same_settings_skip_them(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    with _tracked_first_object(tmp_path, clip, paths["video"], end=6) as (s, oid, eng):
        eng.close()
        again = Engine(s)
        assert list(again.track(start=0, end=6, direction="forward")) == []  # nothing changed: nothing redone
        again.close()
        refined = Engine(s, refine=True)  # refinement on: the finished span's masks are stale
        assert len(list(refined.track(start=0, end=6, direction="forward"))) == 6
        last_start = [e for e in s.read_log() if e["event"] == "track_start"][-1]
        assert last_start["spans"] == ["0->[1..6]"] and last_start["skipped"] == []
        refined.close()


def test_tracker_fingerprint_follows_neural_settings_and_weights(tmp_path, occlusion_clip):
    clip, paths = occlusion_clip
    with _new_session(tmp_path, paths["video"], backend="neural") as s:
        fp = Engine(s, weights="synthetic")._tracker_fingerprint()
        assert Engine(s, weights="synthetic")._tracker_fingerprint() == fp
        assert Engine(s, weights="official")._tracker_fingerprint() != fp
        assert Engine(s, weights="synthetic", sam_model="vit_h")._tracker_fingerprint() != fp
        assert Engine(s, weights="synthetic", half=True)._tracker_fingerprint() != fp
        s.settings["half_precision"] = True  # the session's setting (Blender's preference) is the default
        assert Engine(s, weights="synthetic").half and not Engine(s, weights="synthetic", half=False).half
        assert Engine(s, weights="synthetic")._tracker_fingerprint() != fp
        s.settings["half_precision"] = False
        s.settings["mem_every"] = 3
        assert Engine(s, weights="synthetic")._tracker_fingerprint() != fp


def _replayed(session) -> dict:
    """The span state by replaying every log line (what resuming cost before the ledger)."""
    from track_anything.tam_blender_addon.pipeline import _apply_span_event

    state: dict = {}
    for ev in session.read_log():
        _apply_span_event(state, ev)
    return state


def test_resume_reads_a_bounded_log_tail_after_20000_tracked_frames(tmp_path, monkeypatch):
    from track_anything.tam_blender_addon import pipeline
    from track_anything.tam_blender_addon import session as session_mod
    from track_anything.tam_blender_addon.session import Session, SourceInfo

    monkeypatch.setattr(session_mod.os, "fsync", lambda fd: None)  # 20,000 appends in about a second
    n = 20_000
    s = Session.create(tmp_path / "s", SourceInfo("long.mp4", "video", 8, 8, 25.0, n + 1))
    eng = Engine(s)
    read = []
    real_tail = s.log_tail
    monkeypatch.setattr(s, "log_tail", lambda offset: read.append(real_tail(offset)) or read[-1])
    s.log("span_start", job="j", span="0->[1..20000]", sig="A", resume_from=None)
    s.log("span_done", job="old", span="x", sig="B")
    for f in range(1, n + 1):  # what Engine._run_span logs per frame, compaction included
        s.log("track_frame", job="j", sig="A", frame=f, doubtful=[])
        if f % pipeline.LEDGER_EVERY == 0:
            eng._span_state(compact=True)
    assert len(s.read_log()) == n + 2
    read.clear()
    state = eng._span_state()  # a resume after a crash at the last frame
    assert len(read) == 1 and len(read[0][0]) <= pipeline.LEDGER_EVERY
    assert state == _replayed(s) == {"A": n, "B": "done"}
    # a crash with the whole pass unrecorded in the ledger costs one full replay, then is bounded again
    (s.path / session_mod.LEDGER_FILE).unlink()
    read.clear()
    assert eng._span_state() == {"A": n, "B": "done"} and len(read[0][0]) == n + 2
    read.clear()
    assert eng._span_state() == {"A": n, "B": "done"} and read[0][0] == []
    s.close()


def test_ledger_of_a_replaced_log_is_ignored(tmp_path):
    from track_anything.tam_blender_addon import session as session_mod
    from track_anything.tam_blender_addon.session import Session, SourceInfo

    s = Session.create(tmp_path / "s", SourceInfo("v.mp4", "video", 8, 8, 25.0, 10))
    eng = Engine(s)
    s.log("span_done", sig="A")
    assert eng._span_state(compact=True) == {"A": "done"}
    (s.path / session_mod.LOG_FILE).write_text(json.dumps({"event": "span_done", "sig": "Z"}) + "\n" * 40)
    assert eng._span_state() == {"Z": "done"}
    (s.path / session_mod.LEDGER_FILE).write_text("{damaged")
    assert eng._span_state() == {"Z": "done"}
    s.close()
