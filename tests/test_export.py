"""Mask export: per-object PNG and EXR mattes, label maps, frame ranges, atomic files."""

from __future__ import annotations

import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon import export as export_mod
from track_anything.tam_blender_addon.errors import InputError
from track_anything.tam_blender_addon.export import export_masks
from track_anything.tam_blender_addon.session import TMP_SUFFIX, FrameMapping, Session, SourceInfo

ROOT = Path(__file__).resolve().parents[1]
W, H, N = 40, 30, 6


def _labels(f: int) -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[2 + f: 10 + f, 3:12] = 1
    lab[15:25, 20 + f: 30 + f] = 2
    return lab


@pytest.fixture
def sess(tmp_path: Path):
    s = Session.create(tmp_path / "s", SourceInfo("/v.mp4", "video", W, H, 24.0, N))
    s.add_object("a"), s.add_object("b")
    for f in (1, 2, 4):
        s.write_mask(f, _labels(f))
    yield s
    s.close()


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def test_png_export_writes_one_binary_matte_per_object_and_frame(sess: Session, tmp_path: Path) -> None:
    out = tmp_path / "png"
    done = list(export_masks(sess, "png", out))
    assert done == list(range(N))
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]
    for oid in (1, 2):
        assert sorted(p.name for p in (out / str(oid)).iterdir()) == [f"{f:05d}.png" for f in range(N)]
        for f in range(N):
            img = _read(out / str(oid) / f"{f:05d}.png")
            assert img.dtype == np.uint8 and img.shape == (H, W)
            assert set(np.unique(img)) <= {0, 255}
            want = (_labels(f) == oid) if f in (1, 2, 4) else np.zeros((H, W), bool)
            assert np.array_equal(img == 255, want), (oid, f)


def test_labels_export_writes_uint8_id_maps(sess: Session, tmp_path: Path) -> None:
    out = tmp_path / "lab"
    assert list(export_masks(sess, "labels", out, frames=[4, 0])) == [4, 0]
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00004.png"]
    assert np.array_equal(_read(out / "00004.png"), _labels(4))
    assert not _read(out / "00000.png").any()


def _exr_channel_types(path: Path) -> dict[str, int]:
    """Channel name -> pixel type (0 uint, 1 half, 2 float) from an EXR header."""
    data = path.read_bytes()
    assert data[:4] == b"\x76\x2f\x31\x01", "not an OpenEXR file"
    i = data.index(b"channels\x00chlist\x00") + len(b"channels\x00chlist\x00")
    size = struct.unpack_from("<i", data, i)[0]
    blob, out, k = data[i + 4: i + 4 + size], {}, 0
    while blob[k] != 0:
        end = blob.index(b"\x00", k)
        name = blob[k:end].decode()
        out[name] = struct.unpack_from("<i", blob, end + 1)[0]
        k = end + 1 + 16
    return out


def test_exr_export_writes_single_channel_float32_mattes(sess: Session, tmp_path: Path) -> None:
    out = tmp_path / "exr"
    assert list(export_masks(sess, "exr", out, frames=range(1, 3))) == [1, 2]
    for oid in (1, 2):
        for f in (1, 2):
            p = out / str(oid) / f"{f:05d}.exr"
            assert len(_exr_channel_types(p)) == 1 and list(_exr_channel_types(p).values()) == [2]
            img = _read(p)
            assert img.dtype == np.float32 and img.shape == (H, W)
            assert np.array_equal(img, (_labels(f) == oid).astype(np.float32))


def test_default_range_is_the_session_mapping(sess: Session, tmp_path: Path) -> None:
    sess.mapping = FrameMapping(scene_start=50, source_start=2, length=3)
    assert list(export_masks(sess, "labels", tmp_path / "m")) == [2, 3, 4]


def test_bad_format_and_frames_are_input_errors(sess: Session, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown export format 'tiff'"):
        list(export_masks(sess, "tiff", tmp_path / "x"))
    with pytest.raises(InputError, match=r"frame 6 is outside the source \(frames 0..5\)"):
        list(export_masks(sess, "png", tmp_path / "x", frames=[0, 6]))


def test_an_interrupted_export_leaves_no_half_file(sess: Session, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "png"
    real = export_mod.atomic_write
    calls = []

    def failing_on_the_fifth(path, data, **kw):
        calls.append(path)
        if len(calls) == 5:
            # The temp file is written, then the "crash" hits before the rename.
            Path(path).with_name(f".{Path(path).name}.crash{TMP_SUFFIX}").write_bytes(data[:10])
            raise OSError("no space left on device")
        real(path, data, **kw)

    monkeypatch.setattr(export_mod, "atomic_write", failing_on_the_fifth)
    with pytest.raises(OSError, match="no space"):
        list(export_masks(sess, "png", out))
    assert not (out / "1" / "00002.png").exists()  # the fifth file never appears under its name
    monkeypatch.undo()
    assert list(export_masks(sess, "png", out)) == list(range(N))  # a rerun cleans up and completes
    assert not [p for p in out.rglob(".*")]
    assert len(list(out.rglob("*.png"))) == 2 * N


def test_export_killed_mid_way_leaves_only_complete_files(tmp_path: Path) -> None:
    sdir, out = tmp_path / "s", tmp_path / "out"
    code = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("_l", {str(ROOT / "tam_blender_addon" / "launch.py")!r})
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); mod.register_root()
        import numpy as np
        from track_anything.tam_blender_addon.session import Session, SourceInfo
        from track_anything.tam_blender_addon.export import export_masks
        s = Session.create({str(sdir)!r}, SourceInfo("/v.mp4", "video", 640, 480, 24.0, 100000))
        for _ in range(3):
            s.add_object()
        rng = np.random.default_rng(0)
        s.write_mask(0, rng.integers(0, 4, (480, 640)).astype(np.uint8))
        print("go", flush=True)
        for f in export_masks(s, "png", {str(out)!r}, frames=[0] * 100000):
            pass
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "go", child.stderr.read()
    time.sleep(0.7)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    files = list(out.rglob("*.png"))
    assert files
    for p in files:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (480, 640), p
