"""The E2FGVI bench reports time per frame and peak memory for a procedural clip."""

from __future__ import annotations

import numpy as np

from track_anything.models.e2fgvi.bench import run_bench, synthetic_frame, synthetic_mask


def test_bench_runs_a_tiny_clip_on_cpu_and_reports_its_numbers() -> None:
    res = run_bench(size=(48, 90), frames=6, device="cpu", weights="synthetic")
    assert res["frames"] == 6
    assert res["s_per_frame"] > 0
    assert res["peak_mem_bytes"] > 0
    assert res["device"] == "cpu"
    assert res["weights_label"] == "synthetic-v1"
    assert res["windows_run"] == 2


def test_bench_clip_has_a_moving_hole_over_texture() -> None:
    f0, f1 = synthetic_frame(0, (48, 90)), synthetic_frame(1, (48, 90))
    assert f0.dtype == np.uint8 and f0.shape == (48, 90, 3) and not np.array_equal(f0, f1)
    m0, m9 = synthetic_mask(0, (48, 90)), synthetic_mask(9, (48, 90))
    assert 0.01 < m0.mean() < 0.2 and not np.array_equal(m0, m9)
