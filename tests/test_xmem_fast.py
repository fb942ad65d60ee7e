"""XMem fast mode (fp16 autocast): its parity check against the fp32 path, looser tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from track_anything.models.xmem.parity import fast_deviation, run

XMEM = Path(__file__).resolve().parent / "fixtures" / "xmem"


def _short_case(tmp_path: Path, frames: int, mem_every: int) -> Path:
    """The fixture's first `frames` frames cropped to 64x96 (both objects stay), memorising every `mem_every`."""
    with np.load(XMEM / "inputs.npz") as d:
        crop = np.s_[40:104, 50:146]
        np.savez(tmp_path / "inputs.npz", frames=d["frames"][:frames, crop[0], crop[1]], first_mask=d["first_mask"][crop])
    cfg = json.loads((XMEM / "config.json").read_text())
    cfg["inference_config"]["mem_every"] = mem_every
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_fp16_autocast_path_runs_through_memory_writes_and_stays_near_fp32_on_cpu(tmp_path):
    case = _short_case(tmp_path, 4, mem_every=2)  # frame 2 is written to memory in fp16
    exact = run(case)
    quick = run(case, fast=True)
    assert np.isfinite(quick["probs"]).all()
    # the memory schedule does not depend on precision
    for name in ("work_mem_size_after", "long_mem_size_after", "is_mem_frame"):
        assert np.array_equal(quick[name], exact[name]), name
    assert exact["is_mem_frame"].tolist() == [True, False, True, False]
    # CPU fp16 kernels accumulate differently from cuDNN's; measured 2.8e-2 over all 8 fixture frames
    assert float(np.abs(quick["probs"] - exact["probs"]).max()) < 5e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fast path's speed/parity goal is for CUDA")
def test_cuda_fast_mode_is_within_2e_2_of_fp32_on_the_fixture():
    assert fast_deviation(XMEM, "cuda") <= 2e-2
