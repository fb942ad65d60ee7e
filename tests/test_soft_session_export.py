"""Soft alpha in the session (format 2, migration from 1), the engine's matte hook, and the soft exports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from track_anything.tam_blender_addon.cli import main
from track_anything.tam_blender_addon.errors import InputError
from track_anything.tam_blender_addon.export import export_masks
from track_anything.tam_blender_addon.frames import open_source
from track_anything.tam_blender_addon.pipeline import Engine
from track_anything.tam_blender_addon.session import Session
from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "session_v1" / "session"


def test_a_version_1_session_opens_read_only_with_hard_alpha():
    with Session.open(FIXTURE, writable=False) as s:
        assert [o.name for o in s.objects] == ["ball", "cup"]
        assert s.mask_frames() == [0, 1, 2]
        assert s.read_alpha(1) is None
        a = s.object_alpha(1, 1)
        assert a.dtype == np.float32 and np.array_equal(a, s.object_mask(1, 1).astype(np.float32))
    assert json.loads((FIXTURE / "session.json").read_text())["version"] == 1  # untouched


def test_opening_a_version_1_session_for_writing_migrates_it_and_keeps_everything(tmp_path):
    path = tmp_path / "s"
    shutil.copytree(FIXTURE, path)
    with Session.open(FIXTURE, writable=False) as old:
        before = {f: old.read_mask(f).labels.copy() for f in old.mask_frames()}
        prompts = old.prompts()
    with Session.open(path) as s:
        assert json.loads((path / "session.json").read_text())["version"] == 2
        assert (path / "alpha").is_dir()
        assert any(e["event"] == "migrated" and e["from_version"] == 1 for e in s.read_log())
        assert s.prompts() == prompts
        for f, lab in before.items():
            assert np.array_equal(s.read_mask(f).labels, lab)
        soft = s.object_mask(2, 1).astype(np.float32) * 0.75
        s.write_alpha(2, {1: soft})
        assert np.allclose(s.object_alpha(2, 1), soft, atol=1e-4)


def test_alpha_round_trips_in_16_bit_and_goes_stale_when_the_mask_changes(tmp_path):
    with Session.open(shutil.copytree(FIXTURE, tmp_path / "s")) as s:
        rec = s.read_mask(1)
        rng = np.random.default_rng(0)
        alpha = np.clip(rec.mask(1) + rng.uniform(-0.3, 0.3, rec.labels.shape) * (rng.random(rec.labels.shape) < 0.2),
                        0, 1).astype(np.float32)
        s.write_alpha(1, {1: alpha})
        back = s.read_alpha(1)
        assert set(back) == {1} and np.abs(back[1] - alpha).max() <= 0.5 / 65535 + 1e-7
        assert np.array_equal(s.object_alpha(1, 2), rec.mask(2).astype(np.float32))  # no soft alpha stored for 2
        s.write_alpha(1, {1: alpha}, labels=rec.labels)  # the writer's own labels: same result
        assert np.abs(s.read_alpha(1)[1] - alpha).max() <= 0.5 / 65535 + 1e-7
        s.write_alpha(0, {1: alpha}, labels=rec.labels)  # not frame 0's mask: never shown
        assert s.read_alpha(0) is None
        lab = rec.labels.copy()
        lab[0, 0] = 1
        s.write_mask(1, lab)
        assert s.read_alpha(1) is None  # made from another mask: stale, not shown
        assert np.array_equal(s.object_alpha(1, 1), (lab == 1).astype(np.float32))
        with pytest.raises(InputError, match="no mask"):
            s.delete_mask(2) or s.write_alpha(2, {1: alpha})
        with pytest.raises(InputError, match="shape"):
            s.write_alpha(1, {1: alpha[:5]})


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A small motion-blurred clip tracked by the classic backend (the matte hook runs per frame)."""
    root = tmp_path_factory.mktemp("soft_track")
    obj = ObjectSpec(1, (30, 24), [(0, 30, 32, 1.0), (5, 66, 34, 1.0)], shape="ellipse", hue=0.1)
    clip = make_clip(ClipSpec(width=112, height=64, num_frames=6, objects=[obj], supersample=4, shutter=0.5,
                              background="blobs", background_hue=0.6))
    paths = write_clip(clip, root / "clip", video=False, images=True)
    with open_source(paths["frames"]) as src:
        info = src.info()
    session = Session.create(root / "session", info)
    session.add_object(obj_id=1)
    session.add_box(0, 1, *clip.box(0, 1))
    engine = Engine(session)
    engine.segment(0)
    list(engine.track())
    engine.close()
    session.close()
    return clip, paths, root / "session"


def test_tracking_stores_soft_alpha_beside_every_mask(tracked):
    clip, _, spath = tracked
    err_soft, err_hard = [], []
    with Session.open(spath, writable=False) as s:
        for f in range(6):
            truth = clip.alphas(f)[1]
            err_soft.append(np.mean((s.object_alpha(f, 1) - truth) ** 2))
            err_hard.append(np.mean((s.object_mask(f, 1) - truth) ** 2))
            soft = s.read_alpha(f)
            assert soft is not None and 1 in soft, f
            a = soft[1]
            assert ((a > 0.05) & (a < 0.95)).sum() > 10
            assert np.mean((a >= 0.5) != s.object_mask(f, 1)) < 0.01  # refines the edge, keeps the shape
    assert np.mean(err_soft) < 0.8 * np.mean(err_hard)


def test_export_alpha_exr_rgba_and_hard_read_back(tracked, tmp_path):
    clip, _, spath = tracked
    with Session.open(spath, writable=False) as s:
        soft = {f: s.read_alpha(f)[1] for f in range(6)}
        masks = {f: s.object_mask(f, 1) for f in range(6)}
    for fmt in ("alpha", "exr", "rgba"):
        assert main(["-q", "export", str(spath), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
    assert main(["-q", "export", str(spath), "--format", "alpha", "--hard", "--out", str(tmp_path / "hard")]) == 0
    for f in range(6):
        png16 = cv2.imread(str(tmp_path / "alpha" / "1" / f"{f:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert png16.dtype == np.uint16 and np.abs(png16 / 65535.0 - soft[f]).max() < 1e-4
        exr = cv2.imread(str(tmp_path / "exr" / "1" / f"{f:05d}.exr"), cv2.IMREAD_UNCHANGED)
        assert exr.dtype == np.float32 and np.abs(exr - soft[f]).max() < 1e-4
        hard = cv2.imread(str(tmp_path / "hard" / "1" / f"{f:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(hard)) <= {0, 65535} and np.array_equal(hard > 0, masks[f])
        rgba = cv2.imread(str(tmp_path / "rgba" / "1" / f"{f:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert rgba.dtype == np.uint16 and rgba.shape == (64, 112, 4)
        a = rgba[..., 3] / 65535.0
        assert np.abs(a - soft[f]).max() < 1e-4
        # premultiplied: colour never exceeds alpha, and is zero where alpha is
        assert np.all(rgba[..., :3].astype(np.int64) <= rgba[..., 3:].astype(np.int64) + 1)
        assert not rgba[..., :3][a == 0].any()


def test_rgba_foreground_has_less_background_spill_than_the_raw_frame(tracked, tmp_path):
    clip, paths, spath = tracked
    assert main(["-q", "export", str(spath), "--format", "rgba", "--out", str(tmp_path / "rgba")]) == 0
    f = 3
    rgba = cv2.imread(str(tmp_path / "rgba" / "1" / f"{f:05d}.png"), cv2.IMREAD_UNCHANGED)[..., [2, 1, 0, 3]] / 65535.0
    a = rgba[..., 3]
    frame = clip.get(f) / 255.0
    inner = cv2.erode((a >= 0.999).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    fg_colour = frame[inner].mean(axis=0)
    edge = (a > 0.2) & (a < 0.8)
    est = rgba[..., :3][edge] / a[edge][:, None]
    assert np.abs(est - fg_colour).mean() < np.abs(frame[edge] - fg_colour).mean()


def test_export_prores_4444_carries_the_alpha(tracked, tmp_path):
    clip, _, spath = tracked
    with Session.open(spath, writable=False) as s:
        soft = [s.read_alpha(f)[1] for f in range(6)]
    assert main(["-q", "export", str(spath), "--format", "prores", "--out", str(tmp_path / "pr")]) == 0
    mov = tmp_path / "pr" / "1.mov"
    assert mov.is_file() and not list((tmp_path / "pr").glob(".*"))
    reader = imageio_ffmpeg.read_frames(str(mov), pix_fmt="rgba", bpp=4)
    meta = next(reader)
    assert "prores" in meta["codec"] and meta["size"] == (112, 64)
    frames = [np.frombuffer(b, np.uint8).reshape(64, 112, 4) for b in reader]
    assert len(frames) == 6
    for got, want in zip(frames, soft, strict=True):
        assert np.abs(got[..., 3] / 255.0 - want).max() < 0.02


def test_rgba_and_prores_need_the_source_frames(tracked, tmp_path):
    _, _, spath = tracked
    with Session.open(spath, writable=False) as s, pytest.raises(InputError, match="source clip"):
        list(export_masks(s, "rgba", tmp_path / "x"))
