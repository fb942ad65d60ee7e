"""The worker's job table, in-process: every long job is a generator, cancel and shutdown stop it first."""

from __future__ import annotations

import inspect
import io
import threading
import time

import pytest

from track_anything.tam_blender_addon import worker as worker_mod
from track_anything.tam_blender_addon.protocol import Request, decode_event

N = 12


class _Stream(io.BytesIO):
    """The events pipe: keeps what was written even after the worker closes it."""

    def close(self) -> None:
        self.seen = self.getvalue()


def _events(stream: _Stream):
    data = getattr(stream, "seen", None) or stream.getvalue()
    return [decode_event(line) for line in data.splitlines(keepends=True)]


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(name="jobs", width=64, height=48, num_frames=N, seed=2,
                    objects=[ObjectSpec(1, (16.0, 14.0), [(0, 20.0, 24.0, 1.0), (N - 1, 44.0, 24.0, 1.0)],
                                        texture="stripes", hue=0.3)])
    clip = make_clip(spec)
    return clip, write_clip(clip, tmp_path_factory.mktemp("clip"), video=False, images=True)["frames"]


@pytest.fixture
def served(frames, tmp_path):
    """A Worker with a classic session (one object boxed and segmented on frame 0)."""
    clip, path = frames
    stream = _Stream()
    w = worker_mod.Worker(worker_mod.EventChannel(stream))
    w.handle(Request(1, "create_session", {"path": str(tmp_path / "s"), "source": str(path), "backend": "classic"}))
    w.handle(Request(2, "add_object", {}))
    x0, y0, x1, y1 = (float(v) for v in clip.box(0, 1))
    w.handle(Request(3, "add_box", {"frame": 0, "obj": 1, "x0": x0, "y0": y0, "x1": x1, "y1": y1}))
    w.handle(Request(4, "segment", {"frame": 0}))
    assert [e.kind for e in _events(stream)] == ["result"] * 4, _events(stream)
    yield w, stream
    w._finish()


def test_every_long_job_comes_from_the_table_as_a_generator(served, tmp_path) -> None:
    w, _ = served
    assert set(worker_mod.LONG_JOBS) == set(worker_mod.JOBS) == {"track", "refine", "inpaint", "export", "shapes"}
    params = {"track": {}, "refine": {"frames": [1]}, "inpaint": {"objects": [1], "out": str(tmp_path / "i")},
              "export": {"format": "labels", "out": str(tmp_path / "e")}, "shapes": {"out": str(tmp_path / "x.json")}}
    for cmd, job in worker_mod.JOBS.items():
        steps = job(w.engine, params[cmd], lambda: False)
        assert inspect.isgenerator(steps), cmd
        steps.close()
    assert "_accepts" not in vars(worker_mod)


def test_shapes_is_a_job_with_progress_and_its_summary_in_the_result(served, tmp_path) -> None:
    w, stream = served
    out = tmp_path / "shapes.json"
    w.handle(Request(10, "shapes", {"out": str(out)}))
    w.job.thread.join(60)
    events = [e for e in _events(stream) if e.req == 10]
    assert [e.kind for e in events] == ["progress", "result"]
    assert events[-1].data["path"] == str(out) and events[-1].data["objects"] == 1 and out.is_file()


def test_a_job_that_ignores_the_cancel_is_closed_between_two_yields(served, monkeypatch) -> None:
    w, stream = served
    closed = threading.Event()
    resumed = []

    def stubborn(engine, params, stop):  # a real track, but never asks should_stop
        try:
            for p in engine.track(direction="forward"):
                resumed.append(p.frame)
                yield p
        finally:
            closed.set()

    monkeypatch.setitem(worker_mod.JOBS, "track", stubborn)
    job = worker_mod.Job(20, "track")
    job.cancel.set()  # cancelled before its first frame
    kind, data = w._job_outcome(job, {})
    assert closed.is_set() and kind == "error" and data["error"] == "Cancelled"
    assert data["done"] == len(resumed) == 2  # one frame, then one resume with stop set, then closed


def test_shutdown_waits_for_the_job_before_closing_the_session(served, monkeypatch) -> None:
    w, stream = served
    monkeypatch.setattr(worker_mod, "JOIN_ON_EXIT_S", 0.05)  # far shorter than one frame below
    slow_frame = threading.Event()

    def slow_track(engine, params, stop):
        for p in engine.track(direction="forward", should_stop=stop):
            yield p
            slow_frame.set()
            time.sleep(0.5)  # a frame that takes long: the cancel is seen only after it

    monkeypatch.setitem(worker_mod.JOBS, "track", slow_track)
    w.handle(Request(30, "track", {}))
    job = w.job
    assert slow_frame.wait(60)
    session = w.session
    w.handle(Request(31, "shutdown", {}))
    assert not job.thread.is_alive() and session.closed
    ends = {e.req: e for e in _events(stream) if e.kind in ("result", "error")}
    assert ends[30].data["error"] == "Cancelled" and ends[31].data == {"bye": True}
    assert "traceback" not in ends[30].data  # no write into a closed session


def test_session_info_shows_the_sessions_tracker_settings(served) -> None:
    w, stream = served
    opened = _events(stream)[0].data
    assert opened["settings"] == {"max_resolution": None, "mem_every": None, "max_memory_frames": None,
                                  "half_precision": None, "sam2_model": None}
    assert opened["engine"] == {"device": "auto", "half": False, "refine": False, "sam_model": "vit_b",
                                "sam2_model": "base_plus", "weights": "official"}


def test_undo_prompt_takes_back_the_last_click_only(served) -> None:
    w, stream = served
    w.handle(Request(40, "add_click", {"frame": 0, "obj": 1, "x": 2.0, "y": 2.0, "positive": False}))
    w.handle(Request(41, "undo_prompt", {"frame": 0}))
    w.handle(Request(42, "undo_prompt", {"frame": 5}))
    ends = {e.req: e for e in _events(stream)}
    assert ends[41].data == {"frame": 0, "undone": True} and ends[42].data == {"frame": 5, "undone": False}
    left = w.session.prompts(frame=0)
    assert len(left) == 1 and type(left[0]).__name__ == "Box"  # the box stays, the click is gone


def test_refine_without_frames_works_on_the_doubtful_frames(served) -> None:
    w, stream = served
    w.handle(Request(50, "track", {"direction": "forward"}))
    w.job.thread.join(120)
    w.engine.refine_below = 1.01  # every tracked frame counts as doubtful: the button's list is all of them
    doubtful = sorted({f for f, _, _ in w.engine.doubtful_frames(w.engine.refine_below)})
    assert doubtful == list(range(1, N))
    w.handle(Request(51, "refine", {}))
    w.job.thread.join(120)
    end = [e for e in _events(stream) if e.req == 51][-1]
    assert end.kind == "result" and end.data["cmd"] == "refine"
    assert (end.data["done"], end.data["total"]) == (len(doubtful), len(doubtful))
    assert any(e["event"] == "refine_done" for e in w.session.read_log())
