"""XMem memory-frame and hidden-state schedule, as the official ``InferenceCore.step`` decides it.

* memory frame: t - last memory frame >= mem_every, or a mask is given (and not ``end``);
* deep_update_every < 0: the value encoder's GRU updates the hidden state on memory frames
  and the decoder's GRU on all the others;
* deep_update_every = d >= 0: the decoder's GRU runs on every decoded frame, and the value
  encoder's GRU replaces it on a memory frame once t - last deep update >= d (the first
  counter starts at -d, so frame 0 is a deep update).
"""

from __future__ import annotations

import pytest
import torch

from track_anything.models.xmem.bench import MovingTexture
from track_anything.models.xmem.inference import InferenceCore
from track_anything.models.xmem.network import network_from_state_dict, synthetic_weights
from track_anything.models.xmem.parity import normalise, one_hot


@pytest.fixture(scope="module")
def net():
    return network_from_state_dict(synthetic_weights())


def _run(net, frames: int, end_last: bool = False, **cfg) -> list[dict]:
    video = MovingTexture((32, 48), objects=2, seed=11)
    core = InferenceCore(net, dict(top_k=5, **cfg))
    core.set_all_labels([1, 2])
    caps = []
    for t in range(frames):
        cap: dict = {"work_before": core.memory.work_mem.size}
        image = normalise(video.frame(t))
        end = end_last and t == frames - 1
        if t == 0:
            core.step(image, one_hot(video.labels(0), [1, 2]), valid_labels=[1, 2], capture=cap)
        else:
            core.step(image, end=end, capture=cap)
        cap["mem"] = core.memory.work_mem.size > cap["work_before"]
        caps.append(cap)
    return caps


def _source(cap: dict) -> str:
    """Which GRU produced the hidden state after this step."""
    after = cap["hidden_after"]
    if "val_hidden_out" in cap and torch.equal(after, cap["val_hidden_out"]):
        if cap.get("dec_hidden_out") is None or not torch.equal(after, cap["dec_hidden_out"]):
            return "value"
    if cap.get("dec_hidden_out") is not None and torch.equal(after, cap["dec_hidden_out"]):
        return "decoder"
    return "unchanged"


def test_synchronised_deep_update_on_memory_frames_only(net):
    caps = _run(net, 7, mem_every=3, deep_update_every=-1)
    assert [c["mem"] for c in caps] == [True, False, False, True, False, False, True]
    want = ["value", "decoder", "decoder"] * 2 + ["value"]
    assert [_source(c) for c in caps] == want
    assert caps[3].get("dec_hidden_out") is None  # the decoder skips its GRU on memory frames


def test_deep_update_every_counts_from_the_last_deep_update(net):
    caps = _run(net, 9, mem_every=2, deep_update_every=3)
    assert [c["mem"] for c in caps] == [True, False, True, False, True, False, True, False, True]
    # deep at 0 (0 - (-3) >= 3), not at 2 (2 - 0 < 3), at 4, not at 6, at 8; decoder GRU everywhere else
    want = ["value", "decoder", "decoder", "decoder", "value", "decoder", "decoder", "decoder", "value"]
    assert [_source(c) for c in caps] == want
    assert all(c.get("dec_hidden_out") is not None for c in caps[1:])


def test_end_frame_writes_no_memory_and_keeps_the_hidden_state(net):
    caps = _run(net, 3, end_last=True, mem_every=2, deep_update_every=-1)
    assert [c["mem"] for c in caps] == [True, False, False]
    assert _source(caps[2]) == "unchanged"
