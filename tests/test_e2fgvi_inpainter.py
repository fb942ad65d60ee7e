"""The production E2FGVI-HQ Inpainter: streaming, cancelling, bounded memory, bit-exact outside the mask."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from track_anything.models.e2fgvi.inpainter import E2FGVIInpainter, feather_alpha, paste, working_shape
from track_anything.models.e2fgvi.procedure import run_procedure
from track_anything.models.protocols import Inpainter
from track_anything.tam_blender_addon.errors import InputError


def _texture(i: int, h: int, w: int) -> np.ndarray:
    """Cheap panning texture at any size (separable uint8 patterns, wrapping)."""
    xs = np.arange(w, dtype=np.int64) + 7 * i
    ys = np.arange(h, dtype=np.int64)
    col = ((np.sin(xs / 13.0) * 90 + 120).astype(np.uint8), (xs * 3 % 256).astype(np.uint8),
           ((xs // 40) % 2 * 160 + 40).astype(np.uint8))
    row = ((np.cos(ys / 17.0) * 60).astype(np.uint8), (ys % 256).astype(np.uint8),
           ((ys // 40) % 2 * 50).astype(np.uint8))
    return np.stack([np.add.outer(r, c) for r, c in zip(row, col, strict=True)], -1)


def _blob(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Filled ellipse as a bool mask, built from 1-D row extents (no full-size float temporaries)."""
    t = 1.0 - ((np.arange(h) - cy) / ry) ** 2
    half = np.where(t > 0, rx * np.sqrt(np.maximum(t, 0)), -1.0)
    return np.abs(np.arange(w) - cx)[None, :] <= half[:, None]


def _ellipse(i: int, h: int, w: int, cx0: float = 0.3, extra: bool = False) -> np.ndarray:
    """A moving ellipse (optionally with a second, still blob) as a bool mask."""
    m = _blob(h, w, h * 0.55, w * (cx0 + 0.02 * i), 0.16 * h, 0.07 * w)
    if extra:
        m |= _blob(h, w, 0.2 * h, 0.8 * w, 0.06 * h, 0.04 * w)
    return m


@pytest.fixture(scope="module")
def small_inpainter() -> E2FGVIInpainter:
    """One synthetic-weight model on CPU shared by the small-clip tests."""
    return E2FGVIInpainter("synthetic", device="cpu", work_size=(60, 108), chunk_frames=21)


def test_inpainter_satisfies_the_backend_protocol(small_inpainter: E2FGVIInpainter) -> None:
    assert isinstance(small_inpainter, Inpainter)
    assert small_inpainter.synthetic is True
    assert small_inpainter.name == "e2fgvi-hq"


def test_working_shape_fits_landscape_and_portrait_frames() -> None:
    assert working_shape(480, 864, (480, 864)) == (480, 864)
    assert working_shape(100, 200, (480, 864)) == (100, 200)
    assert working_shape(2160, 3840, (480, 864)) == (480, 853)
    assert working_shape(3840, 2160, (480, 864)) == (853, 480)


def test_paste_changes_only_masked_pixels_and_feathers_inwards() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    filled = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    mask = np.zeros((40, 50), bool)
    mask[10:30, 5:45] = True
    for feather in (0, 4):
        out = paste(src, filled, mask, feather)
        assert np.array_equal(out[~mask], src[~mask])
    assert np.array_equal(paste(src, filled, mask, 0)[mask], filled[mask])
    alpha = feather_alpha(mask, 4)
    assert alpha[20, 25] == 1.0 and 0 < alpha[10, 25] < 1.0 and alpha[9, 25] == 0.0


def test_long_clip_uses_bounded_references_and_streams_each_frame_once(
        small_inpainter: E2FGVIInpainter) -> None:
    n, h, w = 26, 48, 90
    masks = {i: _ellipse(i, h, w, 0.2, extra=i % 2 == 0) for i in range(n)}
    reads: list[int] = []

    def get_frame(i: int) -> np.ndarray:
        reads.append(i)
        return _texture(i, h, w)

    plan = small_inpainter.plan(n)
    for f, nb, refs in plan:
        assert all(abs(r - f) <= 10 and r % 10 == 0 and r not in nb for r in refs)
    got = []
    for idx, frame in small_inpainter.inpaint(get_frame, masks.__getitem__, range(n)):
        src = _texture(idx, h, w)
        assert frame.dtype == np.uint8 and frame.shape == (h, w, 3)
        assert np.array_equal(frame[~masks[idx]], src[~masks[idx]])
        got.append(idx)
    assert got == list(range(n))
    assert small_inpainter.windows_run == len(plan)
    # Held frames stay within about one chunk, whatever the clip length.
    assert small_inpainter.max_cached <= small_inpainter.chunk_frames + 2
    # Native size: every frame is read once (references were read when first needed).
    assert sorted(set(reads)) == list(range(n)) and len(reads) == n


def test_native_size_clip_matches_the_official_procedure(small_inpainter: E2FGVIInpainter) -> None:
    n, h, w = 12, 40, 70
    frames = np.stack([_texture(i, h, w) for i in range(n)])
    masks = np.stack([_ellipse(i, h, w, 0.2, extra=True) for i in range(n)])
    # Reference: test.py's windows, each a plain model call on the whole window.
    ref = run_procedure(lambda x, num_local: small_inpainter.model(x, num_local)[0], frames, masks.astype(np.uint8))
    # Ours reuses per-frame features and per-pair flows across windows and decodes local frames only.
    ours = np.stack([f for _, f in small_inpainter.inpaint(frames.__getitem__, masks.__getitem__, range(n))])
    diff = np.abs(ours.astype(np.int16) - ref.comp_u8)
    assert diff.max() <= 1 and (diff > 0).mean() <= 1e-3
    assert np.array_equal(ours[~masks], frames[~masks])


def test_frames_are_yielded_as_soon_as_no_later_window_covers_them(
        small_inpainter: E2FGVIInpainter) -> None:
    n, h, w = 12, 40, 70
    seen = []
    gen = small_inpainter.inpaint(lambda i: _texture(i, h, w), lambda i: _ellipse(i, h, w), range(n))
    for idx, _frame in gen:
        seen.append((idx, small_inpainter.windows_run))
    # Windows centred on 0, 5, 10: frames 0-4 are final after the second window, the rest after the third.
    assert seen == [(i, 2) for i in range(5)] + [(i, 3) for i in range(5, 12)]


def test_cancel_between_windows_stops_without_more_work(small_inpainter: E2FGVIInpainter) -> None:
    n, h, w = 20, 40, 70
    yielded = []
    stop = {"now": False}
    gen = small_inpainter.inpaint(lambda i: _texture(i, h, w), lambda i: _ellipse(i, h, w), range(n),
                                  should_stop=lambda: stop["now"])
    for idx, _frame in gen:
        yielded.append(idx)
        stop["now"] = True
    assert yielded == [0, 1, 2, 3, 4]
    assert small_inpainter.windows_run == 2


def test_empty_masks_skip_the_network_and_return_the_source(small_inpainter: E2FGVIInpainter) -> None:
    n, h, w = 7, 30, 40
    empty = np.zeros((h, w), bool)
    out = list(small_inpainter.inpaint(lambda i: _texture(i, h, w), lambda i: empty, [3, 4, 5, 6, 7, 8, 9]))
    assert [i for i, _ in out] == [3, 4, 5, 6, 7, 8, 9]
    assert all(np.array_equal(f, _texture(i, h, w)) for i, f in out)
    assert small_inpainter.windows_run == 0 and n == len(out)


def test_frames_of_another_size_are_rejected(small_inpainter: E2FGVIInpainter) -> None:
    frames = {0: _texture(0, 30, 40), 1: _texture(1, 32, 40)}
    with pytest.raises(InputError, match="expected"):
        list(small_inpainter.inpaint(frames.__getitem__, lambda i: np.ones(frames[i].shape[:2], bool), [0, 1]))


def test_4k_clip_is_inpainted_with_bounded_memory_and_exact_pixels_outside_the_mask() -> None:
    h, w, n = 2160, 3840, 12
    inp = E2FGVIInpainter("synthetic", device="cpu", work_size=(120, 216), feather=3)
    frame_bytes = h * w * 3
    reads = {"frames": 0}

    def get_frame(i: int) -> np.ndarray:
        reads["frames"] += 1
        return _texture(i, h, w)

    def get_mask(i: int) -> np.ndarray:
        return _ellipse(i, h, w, 0.25, extra=True)

    start = time.perf_counter()
    tracemalloc.start()
    try:
        order = []
        for idx, frame in inp.inpaint(get_frame, get_mask, range(n)):
            src, mask = _texture(idx, h, w), get_mask(idx)
            assert frame.shape == (h, w, 3) and frame.dtype == np.uint8
            changed = (frame != src).any(axis=2)
            assert not (changed & ~mask).any(), f"frame {idx} changed outside the mask"
            assert changed[mask].mean() > 0.5, f"frame {idx} was not inpainted"
            order.append(idx)
            del frame, src, mask, changed
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - start
    assert order == list(range(n))
    # Never the whole clip in RAM: the peak stays far below n full-size frames.
    assert peak < 0.5 * n * frame_bytes, f"peak host memory {peak / 1e6:.0f} MB"
    # Each source frame is read once to inpaint and once to paste back.
    assert reads["frames"] <= 2 * n
    assert elapsed < 240
