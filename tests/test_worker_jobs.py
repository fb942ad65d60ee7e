"""Real jobs through the worker: the classic engine on a small synthetic clip.

Covers prompts + segment + track over the protocol, progress events, cancelling between
frames, the one-job-at-a-time rule, unexpected exceptions with tracebacks, and the
crash-safety acceptance test (kill -9 during a 300-frame track, then resume).
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time

import numpy as np
import pytest
from worker_raw import send_raw  # beside the tests (conftest)

from track_anything.tam_blender_addon.client import WorkerClient
from track_anything.tam_blender_addon.errors import Cancelled, TamError
from track_anything.tam_blender_addon.protocol import PROGRESS_FIELDS

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")

NUM_FRAMES = 300


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 300-frame 80x60 image sequence with one object drifting right, and its truth."""
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(name="worker", width=80, height=60, num_frames=NUM_FRAMES, seed=5, pan=(0.05, 0.0),
                    objects=[ObjectSpec(1, (22.0, 18.0), [(0, 25.0, 30.0, 1.0), (NUM_FRAMES - 1, 55.0, 32.0, 1.0)],
                                        texture="stripes", hue=0.6)])
    c = make_clip(spec)
    paths = write_clip(c, tmp_path_factory.mktemp("clip"), video=False, images=True)
    return c, paths["frames"]


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    log = tmp_path_factory.mktemp("wlog") / "worker.log"
    client = WorkerClient(log_path=str(log), worker_args=["--log", str(log.with_name("own.log"))])
    client.start(timeout=120)
    yield client
    client.shutdown(timeout=60)


def _prepare(client: WorkerClient, clip, path) -> dict:
    """Create a session through the worker: one object, a box on frame 0, segmented."""
    c, frames = clip
    opened = client.call("create_session", path=str(path), source=str(frames), backend="classic", timeout=120)
    assert opened["source"]["num_frames"] == NUM_FRAMES and opened["backend"] == "classic"
    obj = client.call("add_object", name="thing", timeout=30)
    assert obj["id"] == 1
    x0, y0, x1, y1 = (float(v) for v in c.box(0, 1))
    client.call("add_box", frame=0, obj=1, x0=x0, y0=y0, x1=x1, y1=y1, timeout=30)
    seg = client.call("segment", frame=0, timeout=120)
    assert seg["obj_ids"] == [1] and seg["kind"] == "keyframe" and seg["areas"]["1"] > 100
    return opened


def _read_only(path):
    from track_anything.tam_blender_addon.session import Session

    return Session.open(path, writable=False)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _wait_for(client: WorkerClient, pred, timeout: float = 120) -> list:
    """Poll (never blocking) until an event satisfies `pred`; all events seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ev in client.poll():
            seen.append(ev)
            if pred(ev):
                return seen
        time.sleep(0.01)
    pytest.fail(f"no matching event within {timeout}s; last: {seen[-3:]}")


def test_track_through_the_worker_streams_one_progress_event_per_frame(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    progress = []
    result = worker.call("track", start=0, end=29, direction="forward", on_event=progress.append, timeout=300)
    assert [e.kind for e in progress] == ["progress"] * 29
    assert all(set(e.data) == set(PROGRESS_FIELDS) for e in progress)
    assert [e.data["frame"] for e in progress] == list(range(1, 30))
    assert [e.data["done"] for e in progress] == list(range(1, 30))
    assert progress[-1].data["total"] == 29 and progress[-1].data["eta_s"] in (0, 0.0)
    assert result["cmd"] == "track" and (result["done"], result["total"]) == (29, 29)
    with _read_only(tmp_path / "s") as s:  # the Blender side reads what the worker wrote
        assert s.mask_frames() == list(range(30))
        j = [_jaccard(s.object_mask(f, 1), clip[0].mask(f, 1)) for f in range(30)]
    assert np.mean(j) > 0.7, j


def test_cancel_mid_track_stops_between_frames_and_keeps_them(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    seen = []

    def on_event(ev):
        seen.append(ev)
        if len(seen) == 10:
            worker.cancel()

    with pytest.raises(Cancelled, match=r"cancelled at frame (\d+); finished frames are kept") as info:
        worker.call("track", direction="forward", on_event=on_event, timeout=300)
    frames = [e.data["frame"] for e in seen]
    assert 10 <= len(frames) < NUM_FRAMES - 1
    stopped_at = int(info.value.args[0].split("frame ")[1].split(";")[0])
    assert stopped_at == frames[-1] + 1  # the stop came between two frames
    with _read_only(tmp_path / "s") as s:
        # exactly the keyframe plus the frames reported: none half-done, none missing
        assert s.mask_frames() == [0, *frames]
        assert any(e["event"] == "track_cancelled" for e in s.read_log())
    assert worker.call("hello", timeout=30)["protocol"] == 1


def test_one_long_job_at_a_time_and_no_segment_while_it_runs(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    req = worker.send("track", direction="forward")
    _wait_for(worker, lambda e: e.req == req and e.kind == "progress")
    with pytest.raises(TamError, match=rf"busy: track \(request {req}\) is still running"):
        worker.call("export", format="png", out=str(tmp_path / "png"), timeout=30)
    with pytest.raises(TamError, match="busy"):
        worker.call("segment", frame=0, timeout=30)
    with pytest.raises(TamError, match="busy"):
        worker.call("open_session", path=str(tmp_path / "s"), timeout=30)
    assert worker.call("cancel", req=req + 1000, timeout=30)["cancelled"] is False  # not that job
    assert worker.call("cancel", req=req, timeout=30) == {"cancelled": True, "req": req}
    end = _wait_for(worker, lambda e: e.req == req and e.kind in ("result", "error"))[-1]
    assert end.kind == "error" and end.data["error"] == "Cancelled"


def test_unexpected_exception_sends_its_traceback_and_is_logged(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(TamError, match=r"^inpaint failed: (FileExistsError|NotADirectoryError)") as info:
        worker.call("inpaint", objects=[1], out=str(blocker / "out"), timeout=120)
    tb = info.value.event.data["traceback"]
    assert tb.startswith("Traceback") and "pipeline.py" in tb and "mkdir" in tb
    own_log = worker.worker_args[1]
    deadline = time.monotonic() + 10
    while "inpaint failed" not in open(own_log).read() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "Traceback" in open(own_log).read()
    with _read_only(tmp_path / "s") as s:
        errors = [e for e in s.read_log() if e["event"] == "worker_error"]
    assert errors and errors[-1]["cmd"] == "inpaint" and "Traceback" in errors[-1]["traceback"]
    assert worker.call("hello", timeout=30)["protocol"] == 1


def test_user_errors_come_back_as_their_class_without_traceback(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    from track_anything.tam_blender_addon.errors import InputError

    with pytest.raises(InputError, match="outside") as info:
        worker.call("add_click", frame=NUM_FRAMES + 5, obj=1, x=3, y=3, timeout=30)
    assert "traceback" not in info.value.event.data
    with pytest.raises(InputError, match="direction"):
        worker.call("track", direction="sideways", timeout=60)


def test_refine_job_reports_one_progress_per_frame(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    worker.call("track", start=0, end=5, direction="forward", timeout=300)
    progress = []
    result = worker.call("refine", frames=[1, 2, 3], on_event=progress.append, timeout=300)
    assert [(e.data["stage"], e.data["frame"]) for e in progress] == [("refine", 1), ("refine", 2), ("refine", 3)]
    assert (result["cmd"], result["done"], result["total"]) == ("refine", 3, 3)


def test_export_streams_progress_and_writes_each_frame(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    progress = []
    out = tmp_path / "labels"
    result = worker.call("export", format="labels", out=str(out), frames=list(range(10)),
                         on_event=progress.append, timeout=120)
    assert [e.data["frame"] for e in progress] == list(range(10)) and result["done"] == 10
    assert len(list(out.glob("*.png"))) == 10


def test_cancel_stops_a_job_whose_engine_step_does_not_poll_should_stop(worker, clip, tmp_path):
    # Engine.export takes no should_stop: the worker closes the generator between frames.
    _prepare(worker, clip, tmp_path / "s")
    out = tmp_path / "png"
    first = 900
    send_raw(worker,
        f'{{"v":1,"id":{first},"cmd":"export","params":{{"format":"png","out":"{out}"}}}}\n'
        f'{{"v":1,"id":{first + 1},"cmd":"cancel"}}\n'.encode()
    )
    events = _wait_for(worker, lambda e: e.req == first and e.kind in ("result", "error"))
    end = events[-1]
    assert end.kind == "error" and end.data["error"] == "Cancelled", end
    written = [e.data["frame"] for e in events if e.req == first and e.kind == "progress"]
    assert end.data["done"] == len(written) < NUM_FRAMES // 2
    assert sorted(int(p.stem) for p in (out / "1").glob("*.png")) == written


def test_shapes_command_writes_the_mask_shapes_file(worker, clip, tmp_path):
    _prepare(worker, clip, tmp_path / "s")
    worker.call("track", start=0, end=5, direction="forward", timeout=300)
    out = tmp_path / "shapes.json"
    result = worker.call("shapes", out=str(out), timeout=120)
    assert out.is_file() and out.stat().st_size > 0
    assert result["cmd"] == "shapes"


def test_shutdown_during_a_job_stops_it_between_frames_and_exits_cleanly(clip, tmp_path):
    client = WorkerClient()
    client.start(timeout=120)
    _prepare(client, clip, tmp_path / "s")
    req = client.send("track", direction="forward")
    _wait_for(client, lambda e: e.req == req and e.kind == "progress" and e.data["done"] >= 5)
    client.shutdown(timeout=60)
    events = client.poll()
    assert [e.data["error"] for e in events if e.req == req and e.kind == "error"] == ["Cancelled"]
    assert events[-1].kind == "exited" and events[-1].data["returncode"] == 0 and events[-1].data["expected"]
    done = [e.data["frame"] for e in events if e.req == req and e.kind == "progress"]
    with _read_only(tmp_path / "s") as s:
        assert s.mask_frames()[-1] <= NUM_FRAMES - 2  # stopped early...
        assert s.mask_frames()[-1] >= max(done, default=5)  # ...after the frames it reported


@pytest.mark.slow
def test_kill_9_mid_track_then_resume_loses_nothing_and_redoes_at_most_one_frame(clip, tmp_path):
    path = tmp_path / "s"
    first = WorkerClient()
    first.start(timeout=120)
    _prepare(first, clip, path)
    killed: list[int] = []

    def kill_at_frame_100(ev):
        if ev.data["done"] >= 100 and not killed:
            killed.append(ev.data["done"])
            os.kill(first.pid, signal.SIGKILL)

    with pytest.raises(TamError, match=r"worker exited unexpectedly \(code -9\)"):
        first.call("track", direction="forward", on_event=kill_at_frame_100, timeout=300)
    exited = [e for e in first.poll() if e.kind == "exited"]
    assert len(exited) == 1 and exited[0].data["returncode"] == -9 and exited[0].data["expected"] is False
    assert not first.alive
    first.shutdown()
    masks = path / "masks"
    before = {p.name: p.stat().st_mtime_ns for p in masks.glob("f*.npz")}
    assert len(before) >= 101

    second = WorkerClient()
    second.start(timeout=120)
    try:
        second.call("open_session", path=str(path), timeout=120)  # takes over the dead worker's lock
        warnings = [e for e in second.poll() if e.kind == "warning"]
        assert any("stale lock" in e.data["message"] for e in warnings), warnings
        progress = []
        result = second.call("track", direction="forward", on_event=progress.append, timeout=300)
    finally:
        second.shutdown(timeout=60)
    assert result["done"] == result["total"] == len(progress)
    assert len(progress) < NUM_FRAMES - 100  # it resumed instead of starting over

    with _read_only(path) as s:
        for f in range(NUM_FRAMES):  # every frame's mask is there and readable
            rec = s.read_mask(f)
            assert rec is not None and rec.labels.shape == (60, 80), f
        log = s.read_log()
    written = collections.Counter(e["frame"] for e in log if e["event"] == "track_frame")
    assert set(written) == set(range(1, NUM_FRAMES))
    twice = [f for f, n in written.items() if n > 1]
    assert len(twice) <= 1 and all(n <= 2 for n in written.values()), twice
    # on disk too: of the frames written before the kill, at most one was written again
    rewritten = [n for n, t in before.items() if (masks / n).stat().st_mtime_ns != t]
    assert len(rewritten) <= 1, rewritten
    resumed = [e for e in log if e["event"] == "span_start" and e.get("resume_from") is not None]
    assert len(resumed) == 1 and resumed[0]["resume_from"] >= 100
