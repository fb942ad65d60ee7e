"""The sam2 backend everywhere a backend is chosen: engine, session settings, CLI (synthetic weights, CPU)."""

from __future__ import annotations

import pytest

from track_anything.errors import InputError
from track_anything.tam_blender_addon.cli import main
from track_anything.tam_blender_addon.pipeline import Engine
from track_anything.tam_blender_addon.session import Session


@pytest.fixture(scope="module")
def clip_paths(tmp_path_factory):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    clip = make_clip(preset_spec("small_object_pan", seed=11))
    return clip, write_clip(clip, tmp_path_factory.mktemp("pan"))


def test_tam_track_backend_sam2_synthetic_runs_end_to_end_labelled_meaningless(tmp_path, clip_paths, capsys):
    clip, paths = clip_paths
    x0, y0, x1, y1 = (int(v) for v in clip.box(0, 1))
    sess = tmp_path / "s"
    assert main(["-q", "track", str(paths["video"]), "--session", str(sess), "--box", f"0:{x0},{y0},{x1},{y1}",
                 "--range", "0:4", "--backend", "sam2", "--weights", "synthetic", "--sam2-model", "tiny",
                 "--sam2-image-size", "64", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "SYNTHETIC" in out and "meaningless" in out
    assert "sam2 (SAM 2.1 tiny" in err and "meaningless" in err
    with Session.open(sess, writable=False) as s:
        assert s.backend == "sam2" and s.tracker_settings()["sam2_model"] == "tiny"
        assert s.mask_frames() == [0, 1, 2, 3, 4]
        for f in range(1, 5):
            rec = s.read_mask(f)
            assert rec.kind == "tracked" and rec.labels.shape == (clip.height, clip.width)
            assert all(0.0 <= c <= 1.0 for c in rec.confidence.values())
        started = [e for e in s.read_log() if e["event"] == "track_start"]
        assert "SYNTHETIC" in started[-1]["backend"]


def test_sam2_model_is_the_sessions_and_part_of_the_span_fingerprint(tmp_path, clip_paths):
    _, paths = clip_paths
    from track_anything.tam_blender_addon.frames import open_source

    with open_source(paths["video"]) as src:
        info = src.info()
    with Session.create(tmp_path / "s", info, backend="sam2") as s:
        assert Engine(s, weights="synthetic").sam2_model == "base_plus"
        s.settings["sam2_model"] = "small"
        eng = Engine(s, weights="synthetic")
        assert eng.sam2_model == "small" and eng.config.sam2_model == "small"
        other = Engine(s, weights="synthetic", sam2_model="large")
        assert eng._tracker_fingerprint() != other._tracker_fingerprint()
        assert eng._tracker_fingerprint() == Engine(s, weights="synthetic")._tracker_fingerprint()
        with pytest.raises(InputError, match="SAM 2.1 model must be"):
            Engine(s, sam2_model="huge")


def test_cli_refuses_an_unknown_sam2_model(clip_paths, tmp_path, capsys):
    _, paths = clip_paths
    with pytest.raises(SystemExit):
        main(["track", str(paths["video"]), "--session", str(tmp_path / "s"), "--backend", "sam2",
              "--sam2-model", "huge"])
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_worker_hello_lists_sam2_and_sessions_take_the_sam2_model(tmp_path, clip_paths):
    """create_session{backend: sam2, sam2_model} stores the size; open_session reads it back; hello lists it."""
    from track_anything.tam_blender_addon.client import WorkerClient

    _, paths = clip_paths
    client = WorkerClient(log_path=str(tmp_path / "worker.log"))
    hello = client.start(timeout=180)
    try:
        assert {"classic", "neural", "sam2"} <= set(hello["backends"])
        made = client.call("create_session", path=str(tmp_path / "s"), source=str(paths["video"]),
                           backend="sam2", sam2_model="tiny", weights="synthetic", device="cpu", timeout=120)
        assert made["backend"] == "sam2" and made["synthetic"] and "SYNTHETIC" in made["backend_label"]
        assert made["settings"]["sam2_model"] == "tiny" and made["engine"]["sam2_model"] == "tiny"
        client.call("close_session", timeout=30)
        again = client.call("open_session", path=str(tmp_path / "s"), weights="synthetic", timeout=120)
        assert again["engine"]["sam2_model"] == "tiny" and again["backend"] == "sam2"
    finally:
        client.shutdown(timeout=60)


def test_tam_bench_sam2_reports_fps_and_says_when_half_precision_does_not_apply(capsys):
    import json

    assert main(["bench", "sam2", "--sam2-model", "tiny", "--image-size", "64", "--size", "64x96", "--frames", "3",
                 "--device", "cpu", "--fast"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["model_size"] == "tiny" and res["frames"] == 2 and res["fps"] > 0
    assert res["fast"] is False and "fp32" in res["half_note"]


def test_a_keyframe_fed_again_after_reset_reuses_its_image_features_and_gives_the_same_masks():
    """Each pipeline pass resets the propagator and re-adds its keyframe: the encoder runs once for it."""
    import numpy as np

    from track_anything.models.sam2.tracker import Sam2Propagator

    yy, xx = np.mgrid[0:48, 0:64]
    bg = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 4 - c) for c in range(3)], -1) * 50 + 110
    frames = []
    for t in range(4):
        f = bg.copy()
        f[(xx - 12 - 2 * t) ** 2 + (yy - 24) ** 2 < 64] = [220, 50, 40]
        frames.append(f.astype(np.uint8))
    lab = np.zeros((48, 64), np.uint8)
    lab[16:32, 4:20] = 2

    def one_pass(p):
        p.reset()
        p.add_reference(frames[0], lab, [2])
        return [p.track(f) for f in frames[1:]]

    p = Sam2Propagator("tiny", "synthetic", "cpu", image_size=64)
    calls = []
    p.net.image_encoder.register_forward_hook(lambda *a: calls.append(1))
    first = one_pass(p)
    n_first = len(calls)
    second = one_pass(p)
    assert n_first == 4 and len(calls) - n_first == 3  # the keyframe's features came from the first pass
    fresh = one_pass(Sam2Propagator("tiny", "synthetic", "cpu", image_size=64))
    for a, b, c in zip(first, second, fresh, strict=True):
        assert np.array_equal(a.labels, b.labels) and np.array_equal(a.labels, c.labels)
        assert a.confidence == b.confidence == c.confidence


def test_tam_track_backend_sam2_loads_the_registry_checkpoint_and_is_not_labelled_synthetic(
        tmp_path, clip_paths, capsys):
    """With sam2.1_tiny in the weights folder, --backend sam2 runs on it (strict load), no synthetic label."""
    import torch

    from track_anything.models.sam2.network import synthetic_weights

    clip, paths = clip_paths
    wdir = tmp_path / "weights"
    wdir.mkdir()
    torch.save({"model": synthetic_weights("tiny")}, wdir / "sam2.1_hiera_tiny.pt")  # the official file layout
    x0, y0, x1, y1 = (int(v) for v in clip.box(0, 1))
    assert main(["-q", "track", str(paths["video"]), "--session", str(tmp_path / "s"),
                 "--box", f"0:{x0},{y0},{x1},{y1}", "--range", "0:2", "--backend", "sam2", "--weights-dir", str(wdir),
                 "--sam2-model", "tiny", "--sam2-image-size", "64", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "SYNTHETIC" not in out + err and "sam2 (SAM 2.1 tiny" in err
