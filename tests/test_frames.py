"""Frame sources: videos through imageio-ffmpeg, image sequences through OpenCV, and their failures."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from track_anything.tam_blender_addon import frames as frames_mod
from track_anything.tam_blender_addon.errors import MediaError
from track_anything.tam_blender_addon.frames import (
    ImageSequenceSource,
    VideoSource,
    list_image_sequence,
    open_from_info,
    open_source,
    to_rgb8,
)
from track_anything.tam_blender_addon.session import SourceInfo

W, H, N = 64, 48, 60


def _frame(i: int, w: int = W, h: int = H) -> np.ndarray:
    """A frame that identifies its index by its grey level, with a red band (RGB order check)."""
    f = np.full((h, w, 3), (i * 4) % 200 + 20, np.uint8)
    f[8:16, :, :] = (255, 0, 0)
    return f


def _write_video(path: Path, n: int, codec: str, params: list[str], w: int = W, h: int = H) -> Path:
    writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=25, codec=codec, quality=None,
                                         macro_block_size=1, output_params=params)
    writer.send(None)
    for i in range(n):
        writer.send(_frame(i, w, h))
    writer.close()
    return path


def _sequential(path: Path) -> list[np.ndarray]:
    """Reference decode: every frame in order, read directly with imageio-ffmpeg."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("videos")
    return {
        "h264": _write_video(d / "clip.mp4", N, "libx264", ["-qp", "0"]),
        "mjpeg": _write_video(d / "clip.avi", N, "mjpeg", ["-q:v", "2"]),
    }


def _ffmpeg_children() -> set[int]:
    """Live (non-zombie) ffmpeg processes started by this process."""
    out = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
        fields = rest.split()
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and "ffmpeg" in comm:
            out.add(int(pid))
    return out


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# ----------------------------------------------------------------------------- videos


@pytest.mark.parametrize("codec", ["h264", "mjpeg"])
def test_video_metadata_is_exact(videos, codec) -> None:
    with open_source(videos[codec]) as src:
        assert isinstance(src, VideoSource)
        assert (src.width, src.height, src.fps, src.num_frames) == (W, H, 25.0, N)
        info = src.info()
        assert info == SourceInfo(str(videos[codec]), "video", W, H, 25.0, N, None)


@pytest.mark.parametrize("codec", ["h264", "mjpeg"])
def test_random_access_returns_the_same_pixels_as_a_sequential_decode(videos, codec) -> None:
    ref = _sequential(videos[codec])
    assert len(ref) == N
    order = random.Random(3).sample(range(N), 16)  # far jumps, short forward jumps, steps back
    order += list(range(N - 1, N - 21, -1)) + [0, 1, 2, 40, 41, 59]
    with open_source(videos[codec]) as src:
        for i in order:
            got = src.get(i)
            assert got.dtype == np.uint8 and got.shape == (H, W, 3)
            assert np.array_equal(got, ref[i]), f"frame {i} differs"


def test_frames_are_rgb_and_match_what_was_encoded(videos) -> None:
    with open_source(videos["h264"]) as src:
        for i in (0, 17, 59):
            got = src.get(i).astype(int)
            band = got[10:14]
            assert band[..., 0].mean() > 200 and band[..., 2].mean() < 60  # the red band stays red
            assert np.abs(got - _frame(i).astype(int)).mean() < 8


def test_sequential_reads_reuse_one_ffmpeg_and_the_cache_stays_bounded(videos, monkeypatch) -> None:
    spawned = []
    real = imageio_ffmpeg.read_frames

    def counting(*a, **k):
        spawned.append(k.get("input_params"))
        return real(*a, **k)

    with open_source(videos["h264"]) as src:
        monkeypatch.setattr(frames_mod.imageio_ffmpeg, "read_frames", counting)
        for i in range(0, N):
            src.get(i)
        assert len(spawned) == 1
        assert len(src._cache) == frames_mod.CACHE_FRAMES
        src.get(N - 1)  # cache hit
        src.get(50)  # a far jump back: one seek
        assert len(spawned) == 2 and spawned[1][0] == "-ss"
        src.get(49)  # stepping backwards: one more decode fills a block before 49 ...
        for i in range(48, 0, -1):
            src.get(i)  # ... so these are cache hits
        assert len(spawned) == 3
        assert len(src._cache) <= frames_mod.BACKWARD_MAX_FRAMES
        src.get(55)  # forward again: the cache shrinks back
        assert len(src._cache) == frames_mod.CACHE_FRAMES


def test_returned_frames_are_private_copies(videos) -> None:
    with open_source(videos["h264"]) as src:
        a = src.get(3)
        a[:] = 0
        assert src.get(3).any()


def test_memory_does_not_grow_with_video_length(tmp_path) -> None:
    w, h, n = 128, 96, 2000
    path = _write_video(tmp_path / "long.mp4", n, "libx264", ["-preset", "ultrafast"], w, h)
    with open_source(path) as src:
        assert src.num_frames == n
        for i in range(100):
            src.get(i)
        before = _rss_kib()
        t = time.perf_counter()
        checksum = 0
        for i in range(100, n):
            checksum += int(src.get(i)[0, 0, 0])
        elapsed = time.perf_counter() - t
        growth_mib = (_rss_kib() - before) / 1024
    frame_mib = w * h * 3 / 2**20
    print(f"read {n - 100} frames in {elapsed:.2f}s, RSS growth {growth_mib:.1f} MiB "
          f"(all frames would be {frame_mib * n:.0f} MiB)")
    assert checksum > 0
    assert growth_mib < 12


def test_open_from_info_trusts_the_session_count_and_checks_the_size(videos) -> None:
    with open_source(videos["h264"]) as src:
        info = src.info()
    with open_from_info(info) as src:
        assert src.num_frames == N and np.array_equal(src.get(10), _sequential(videos["h264"])[10])
    info.width = 32
    with pytest.raises(MediaError, match=r"is 64x48 but the session expects 32x48"):
        open_from_info(info)


def test_reading_past_the_real_end_names_the_frame(videos) -> None:
    with open_source(videos["h264"]) as src:
        info = src.info()
    info.num_frames = N + 5  # a session that believes in more frames than the file holds
    with open_from_info(info) as src:
        with pytest.raises(MediaError, match=rf"clip.mp4: frame {N + 2} cannot be decoded"):
            src.get(N + 2)
        assert src.get(N - 1).shape == (H, W, 3)  # the source stays usable


def test_frame_index_out_of_range_is_a_media_error(videos) -> None:
    with open_source(videos["mjpeg"]) as src:
        with pytest.raises(MediaError, match=r"frame 60 is outside the source \(frames 0..59\)"):
            src.get(N)


# ----------------------------------------------------------------------------- broken videos


def test_missing_and_non_video_files_are_media_errors(tmp_path) -> None:
    with pytest.raises(MediaError, match="nothing.mp4 is missing"):
        open_source(tmp_path / "nothing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4"):
        open_source(tmp_path / "empty.mp4")
    # fixed junk: random bytes now and then probe as some raw format and fail differently
    (tmp_path / "junk.mov").write_bytes(b"this is not a video file\n" * 160)
    with pytest.raises(MediaError, match=r"junk.mov: cannot read the header \(.*Invalid data"):
        open_source(tmp_path / "junk.mov")


def test_truncated_mp4_fails_at_open_naming_the_file(videos, tmp_path) -> None:
    data = videos["h264"].read_bytes()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 2])
    t = time.perf_counter()
    with pytest.raises(MediaError, match="cut.mp4"):
        open_source(bad)
    assert time.perf_counter() - t < 10


def test_truncated_avi_names_the_first_frame_that_cannot_be_decoded(videos, tmp_path) -> None:
    data = videos["mjpeg"].read_bytes()
    bad = tmp_path / "cut.avi"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut.avi is truncated or corrupt: only \d+ of about \d+ frames"
                       r" can be decoded \(frame \d+ fails: [^\[]"):
        open_source(bad)


def test_audio_longer_than_the_picture_is_not_mistaken_for_truncation(videos, tmp_path) -> None:
    out = tmp_path / "with_audio.mp4"
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(videos["h264"]),
                    "-f", "lavfi", "-t", "4", "-i", "anullsrc=r=8000:cl=mono", "-c:v", "copy", "-c:a", "aac",
                    str(out)], check=True, timeout=60)
    with open_source(out) as src:
        assert src.num_frames == N  # the container says 4 s = 100 frames
        assert src.warnings and "ends after 60 frames" in src.warnings[0]
        assert src.get(N - 1).shape == (H, W, 3)


def test_garbage_in_the_middle_ends_in_a_media_error_not_a_hang(videos, tmp_path) -> None:
    data = bytearray(videos["mjpeg"].read_bytes())
    rng = random.Random(1)
    for k in range(len(data) // 3, len(data) // 3 + 3000):
        data[k] = rng.randrange(256)
    bad = tmp_path / "garbled.avi"
    bad.write_bytes(bytes(data))
    before = _ffmpeg_children()
    t = time.perf_counter()
    with pytest.raises(MediaError, match=r"garbled.avi.*frame \d+"):
        with open_source(bad) as src:
            for i in range(src.num_frames):
                src.get(i)
    assert time.perf_counter() - t < 20
    assert _ffmpeg_children() <= before


def test_a_stuck_read_times_out_and_leaves_no_ffmpeg_behind(videos) -> None:
    before = _ffmpeg_children()
    with pytest.raises(MediaError, match=r"clip.mp4: timed out after 1e-05 s reading the header"):
        open_source(videos["h264"], timeout=1e-5)
    src = open_source(videos["h264"])
    src.get(0)
    src.timeout = 1e-5
    with pytest.raises(MediaError, match="timed out"):
        src.get(50)  # far jump: a new ffmpeg that cannot answer in time
    assert _ffmpeg_children() <= before
    src.timeout = 30
    assert src.get(50).shape == (H, W, 3)  # recovers with a fresh reader
    src.close()
    assert _ffmpeg_children() <= before


# ----------------------------------------------------------------------------- image sequences


def _write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]))


def test_image_folder_glob_and_printf_pattern_sort_naturally(tmp_path) -> None:
    for i in (1, 2, 10, 9):
        _write_png_rgb(tmp_path / f"frame_{i}.png", _frame(i))
    (tmp_path / "notes.txt").write_text("not an image")
    expected = [str(tmp_path / f"frame_{i}.png") for i in (1, 2, 9, 10)]
    assert list_image_sequence(tmp_path) == expected
    assert list_image_sequence(tmp_path / "frame_*.png") == expected
    assert list_image_sequence(tmp_path / "frame_%d.png") == expected
    with open_source(tmp_path) as src:
        assert isinstance(src, ImageSequenceSource)
        assert (src.width, src.height, src.num_frames, src.fps) == (W, H, 4, 24.0)
        assert np.array_equal(src.get(3), _frame(10))  # natural order: ..., 9, 10
        info = src.info()
    assert info.kind == "images" and info.files == expected
    with open_from_info(info) as again:
        assert np.array_equal(again.get(2), _frame(9))


def test_printf_pattern_with_padding(tmp_path) -> None:
    for i in range(3):
        _write_png_rgb(tmp_path / f"shot_{i:04d}.png", _frame(i))
    _write_png_rgb(tmp_path / "shot_12.png", _frame(7))  # not 4-digit: not part of the sequence
    with open_source(tmp_path / "shot_%04d.png", fps=30) as src:
        assert src.num_frames == 3 and src.fps == 30.0
        assert np.array_equal(src.get(1), _frame(1))


def test_image_pixels_convert_to_rgb8_by_the_documented_rule(tmp_path) -> None:
    rgb16 = np.zeros((H, W, 3), np.uint16)
    rgb16[..., 0] = 65535
    rgb16[..., 1] = 257 * 100
    rgb16[..., 2] = 128
    assert cv2.imwrite(str(tmp_path / "a16.png"), rgb16[:, :, ::-1])
    lin = np.zeros((H, W, 3), np.float32)
    lin[..., 0] = 1.0
    lin[..., 1] = 0.2158605  # sRGB 128 / 255
    lin[..., 2] = 2.5  # over-range, clipped
    assert cv2.imwrite(str(tmp_path / "b.exr"), lin[:, :, ::-1])
    grey = np.full((H, W), 77, np.uint8)
    assert cv2.imwrite(str(tmp_path / "c.png"), grey)
    src = open_source(tmp_path)
    assert tuple(src.get(0)[0, 0]) == (255, 100, 0)
    assert tuple(src.get(1)[0, 0]) == (255, 128, 255)
    assert tuple(src.get(2)[0, 0]) == (77, 77, 77)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 200, 0
    assert tuple(to_rgb8(bgra)[0, 0]) == (200, 0, 10)


def test_broken_image_in_a_sequence_names_file_and_frame(tmp_path) -> None:
    for i in range(3):
        _write_png_rgb(tmp_path / f"f{i}.png", _frame(i))
    (tmp_path / "f1.png").write_bytes(b"\x89PNG broken")
    _write_png_rgb(tmp_path / "f3.png", np.zeros((10, 10, 3), np.uint8))
    src = open_source(tmp_path)
    with pytest.raises(MediaError, match=r"frame 1: image .*f1.png is corrupt"):
        src.get(1)
    with pytest.raises(MediaError, match=r"f3.png: frame 3 is 10x10, the source is 64x48"):
        src.get(3)
    (tmp_path / "f2.png").unlink()
    with pytest.raises(MediaError, match=r"frame 2: image .*f2.png is missing"):
        src.get(2)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_pipes_are_refused_instead_of_blocking_a_read(tmp_path) -> None:
    os.mkfifo(tmp_path / "frame.png")
    with pytest.raises(MediaError, match="frame.png is not a regular file"):
        open_source(tmp_path / "frame.png")
    os.mkfifo(tmp_path / "clip.mp4")
    with pytest.raises(MediaError, match="clip.mp4 is not a regular file"):
        open_source(tmp_path / "clip.mp4")


def test_empty_folder_and_unmatched_pattern_are_media_errors(tmp_path) -> None:
    with pytest.raises(MediaError, match="no image files match"):
        open_source(tmp_path)
    with pytest.raises(MediaError, match="no image files match"):
        open_source(tmp_path / "x_%04d.png")
