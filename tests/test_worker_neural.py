"""The neural path (SAM ViT-B + XMem, synthetic weights) through the real worker on CPU."""

from __future__ import annotations

import pytest

from track_anything.tam_blender_addon.client import WorkerClient


@pytest.mark.slow
def test_neural_ten_frame_span_runs_through_the_worker_and_is_labelled_synthetic(tmp_path):
    from track_anything.tam_blender_addon.session import Session
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(name="neural", width=128, height=96, num_frames=11, seed=4, pan=(0.3, 0.0),
                    objects=[ObjectSpec(1, (30.0, 26.0), [(0, 40.0, 45.0, 1.0), (10, 70.0, 50.0, 1.1)])])
    paths = write_clip(make_clip(spec), tmp_path / "clip")
    client = WorkerClient(log_path=str(tmp_path / "worker.log"))
    client.start(timeout=180)
    try:
        opened = client.call("create_session", path=str(tmp_path / "s"), source=str(paths["video"]),
                             backend="neural", weights="synthetic", device="cpu", refine=False, timeout=300)
        assert opened["backend"] == "neural"
        client.call("add_object", name="thing", timeout=30)
        client.call("add_click", frame=0, obj=1, x=40.0, y=45.0, positive=True, timeout=30)
        client.call("segment", frame=0, timeout=600)
        events = []
        result = client.call("track", direction="forward", timeout=900, on_event=events.append)
        progress = [e for e in events if e.kind == "progress"]
        assert [e.data["frame"] for e in progress] == list(range(1, 11))
        assert result is not None
    finally:
        client.shutdown(timeout=60)
    with Session.open(tmp_path / "s", writable=False) as s:
        assert s.mask_frames() == list(range(11))
        start = next(e for e in s.read_log() if e["event"] == "track_start")
        assert "SYNTHETIC" in start["backend"]
