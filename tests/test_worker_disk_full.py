"""A disk that fills up mid-job: a one-line DiskError, finished frames kept, a re-run continues."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

from track_anything.tam_blender_addon import session as session_mod
from track_anything.tam_blender_addon.errors import DiskError, as_disk_error
from track_anything.tam_blender_addon.protocol import Request
from track_anything.tam_blender_addon.worker import EventChannel, Worker


def test_disk_errors_get_an_actionable_line_and_other_errors_do_not():
    full = as_disk_error(OSError(errno.ENOSPC, "No space left on device", "/shots/a/0001.npz"))
    assert isinstance(full, DiskError)
    assert str(full).startswith("No space left on device writing /shots/a/0001.npz: free some space")
    assert "kept" in str(full)
    assert "writable folder" in str(as_disk_error(OSError(errno.EROFS, "Read-only file system", "/mnt/x")))
    assert as_disk_error(OSError(errno.ENOENT, "No such file or directory")) is None
    assert as_disk_error(ValueError("nope")) is None


class _Events:
    """The worker's event stream, kept in memory."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.buf.close = lambda: None  # the worker closes its channel at shutdown; keep what it wrote

    def of(self, req: int) -> list[dict]:
        lines = self.buf.getvalue().splitlines()
        return [e for e in map(json.loads, lines) if e["req"] == req]


def _call(worker: Worker, events: _Events, req: int, cmd: str, **params) -> dict:
    worker.handle(Request(req, cmd, params))
    if worker.job is not None and worker.job.req == req:
        assert worker.job.finished.wait(120)
    return events.of(req)[-1]


def test_disk_full_mid_track_is_a_disk_error_that_keeps_finished_frames(tmp_path, monkeypatch):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    clip = make_clip(preset_spec("small_object_pan", seed=2, num_frames=14))
    frames = write_clip(clip, tmp_path / "clip", video=False, images=True)["frames"]
    events = _Events()
    worker = Worker(EventChannel(events.buf))
    assert _call(worker, events, 1, "create_session", path=str(tmp_path / "s"), source=str(frames),
                 backend="classic", half=True)["kind"] == "result"
    assert worker.engine.half  # engine options pass through create_session
    assert _call(worker, events, 2, "add_object", name="thing")["kind"] == "result"
    x0, y0, x1, y1 = (float(v) for v in clip.box(0, 1))
    _call(worker, events, 3, "add_box", frame=0, obj=1, x0=x0, y0=y0, x1=x1, y1=y1)
    assert _call(worker, events, 4, "segment", frame=0)["kind"] == "result"

    real_replace, budget = os.replace, {"left": 6}

    def filling_disk(src, dst):
        if Path(dst).parent.name == "masks":  # mask files: the disk is full after six of them
            if budget["left"] == 0:
                raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            budget["left"] -= 1
        return real_replace(src, dst)

    monkeypatch.setattr(session_mod.os, "replace", filling_disk)
    end = _call(worker, events, 5, "track", direction="forward")
    assert end["kind"] == "error" and end["data"]["error"] == "DiskError"
    assert "No space left on device" in end["data"]["message"] and "traceback" not in end["data"]
    assert end["data"]["done"] == 6  # the keyframe was written before; tracked frames 1..6 were
    monkeypatch.undo()

    kept = worker.session.mask_frames()
    assert kept == list(range(0, 7))
    again = _call(worker, events, 6, "track", direction="forward")  # space freed: it continues
    assert again["kind"] == "result" and again["data"]["done"] == again["data"]["total"] == len(clip) - 7
    assert worker.session.mask_frames() == list(range(len(clip)))
    _call(worker, events, 7, "close_session")


def test_a_missing_source_is_not_mistaken_for_a_disk_error(tmp_path):
    events = _Events()
    worker = Worker(EventChannel(events.buf))
    bad = _call(worker, events, 1, "create_session", path=str(tmp_path / "s"), source=str(tmp_path / "nothing.mp4"))
    assert bad["kind"] == "error" and bad["data"]["error"] != "DiskError"
