"""Classic inpainter: bit-exact outside the hole, true background inside on a panning clip, streaming."""

from __future__ import annotations

import cv2
import numpy as np

from track_anything.models.classic import ClassicInpainter
from track_anything.tam_blender_addon.synth import make_clip, preset_spec


def _clip_and_masks(n: int = 24):
    clip = make_clip(preset_spec("demo", seed=0, num_frames=n))
    frames = [clip.render(i) for i in range(n)]
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    masks = [cv2.dilate((lab > 0).astype(np.uint8), kernel).astype(bool) for _, lab in frames]
    return clip, [f for f, _ in frames], masks


def test_outside_pixels_bit_exact_and_hole_close_to_the_true_background():
    clip, frames, masks = _clip_and_masks()
    inp = ClassicInpainter()
    got = list(inp.inpaint(lambda i: frames[i], lambda i: masks[i], range(len(frames))))
    assert [i for i, _ in got] == list(range(len(frames)))
    errs, telea = [], []
    for i, out in got:
        m = masks[i]
        assert out.dtype == np.uint8 and np.array_equal(out[~m], frames[i][~m])
        bg = clip.background(i).astype(np.float32)
        errs.append(np.abs(out[m].astype(np.float32) - bg[m]).mean())
        alone = cv2.inpaint(frames[i], m.astype(np.uint8), 4, cv2.INPAINT_TELEA)
        telea.append(np.abs(alone[m].astype(np.float32) - bg[m]).mean())
    assert np.mean(errs) < 8.0  # sensor noise alone is ~1.2
    assert np.mean(errs) < 0.6 * np.mean(telea)


def test_stops_between_frames_when_asked_and_reads_frames_lazily():
    clip, frames, masks = _clip_and_masks(n=40)
    reads = []

    def get_frame(i):
        reads.append(i)
        return frames[i]

    done = []
    inp = ClassicInpainter(radius=3, far=12, stride=4)
    gen = inp.inpaint(get_frame, lambda i: masks[i], range(40), should_stop=lambda: len(done) >= 3)
    for i, _ in gen:
        done.append(i)
    assert done == [0, 1, 2]
    assert max(reads) <= 2 + 12  # only the look-ahead window was read, never the whole clip


def test_frames_without_a_hole_come_back_unchanged():
    frames = [np.full((16, 16, 3), k, np.uint8) for k in range(3)]
    out = list(ClassicInpainter().inpaint(lambda i: frames[i], lambda i: np.zeros((16, 16), bool), [0, 1, 2]))
    assert all(np.array_equal(f, frames[i]) for i, f in out)
