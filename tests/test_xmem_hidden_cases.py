"""XMem against the official implementation on cases the shared fixture does not cover.

Each folder under tests/fixtures/xmem_extra holds inputs, a config and the outputs of the
official XMem code run as an oracle (see the README there): a longer video whose working
memory is consolidated into long-term memory many times, long-term memory that is pruned,
an object that vanishes and one that leaves the frame, at a size that is not a multiple of 16
in one axis. Tolerances as in tests/fixtures/xmem/README.md section 6.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

EXTRA = Path(__file__).resolve().parent / "fixtures" / "xmem_extra"
CASES = sorted(p for p in EXTRA.iterdir() if (p / "expected.npz").is_file()) if EXTRA.is_dir() else []


@pytest.fixture(scope="module", params=CASES, ids=[p.name for p in CASES])
def case(request) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(folder, our runner's arrays, the official arrays) for one case."""
    from track_anything.models.xmem import parity

    folder: Path = request.param
    t0 = time.perf_counter()
    produced = parity.run(folder)
    print(f"{folder.name}: runner {time.perf_counter() - t0:.1f} s")
    with np.load(folder / "expected.npz") as data:
        expected = {k: data[k] for k in data.files}
    return folder, produced, expected


def test_there_are_extra_cases():
    assert CASES, f"no cases under {EXTRA}"


def test_memory_schedule_matches_official_exactly(case):
    _, produced, expected = case
    for k in ("is_mem_frame", "work_mem_size_after", "long_mem_size_after"):
        np.testing.assert_array_equal(produced[k], expected[k], err_msg=k)


def test_case_exercises_consolidation_and_pruning(case):
    folder, _, expected = case
    icfg = json.loads((folder / "config.json").read_text())["inference_config"]
    long = expected["long_mem_size_after"]
    threshold = icfg["max_long_term_elements"] - icfg["num_prototypes"]
    full = np.flatnonzero(long >= threshold)
    assert full.size, "long-term memory never reached the pruning threshold"
    # a consolidation after that point (a memory frame whose HW new elements did not all stay in
    # working memory) had to prune long-term memory first
    work, mem = expected["work_mem_size_after"], expected["is_mem_frame"]
    hw = int(work[0])
    consolidated = [t for t in range(1, len(work)) if mem[t] and work[t] < work[t - 1] + hw]
    assert any(t > full[0] for t in consolidated), "no consolidation after long-term memory was full"


def test_probs_match_official_within_5e_4(case):
    _, produced, expected = case
    assert produced["probs"].shape == expected["probs"].shape
    diff = np.abs(produced["probs"] - expected["probs"]).max(axis=(1, 2, 3))
    print(f"probs max|diff| = {diff.max():.3e}")
    assert diff.max() <= 5e-4, f"frames over tolerance: {np.flatnonzero(diff > 5e-4).tolist()}"


def test_other_float_arrays_match_official_within_relative_1e_3(case):
    _, produced, expected = case
    for k, ref in expected.items():
        if k == "probs" or ref.dtype.kind != "f" or ref.size == 0:
            continue
        rel = float(np.abs(produced[k] - ref).max()) / max(1.0, float(np.abs(ref).max()))
        assert rel <= 1e-3, f"{k}: {rel:.3e}"
