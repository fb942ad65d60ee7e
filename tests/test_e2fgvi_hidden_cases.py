"""E2FGVI-HQ parity on a case the shared fixture does not cover (golden made by the official code).

`tests/fixtures/e2fgvi_extra/multi_numref2_44x50`: several masked regions touching every
border, two frames with an empty mask, `num_ref = 2` with stride 3 / ref_length 5, and a
width (50) smaller than its pad (58), where test.py's single mirror concatenation leaves
the model input 100 wide instead of 108. See the fixture's README for how it was made.
Runs `tests/parity.py e2fgvi` as a separate process, exactly as hidden cases are run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from golden import E2FGVI_ATOL, assert_e2fgvi_direct, assert_e2fgvi_procedure, parity_fixtures

from track_anything.models.e2fgvi.procedure import window_plan

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "e2fgvi_extra" / "multi_numref2_44x50"
ours, expected = parity_fixtures("e2fgvi", FIX)


def test_reference_windows_for_num_ref_2() -> None:
    """get_ref_index with num_ref = 2: candidates f - 5 .. min(T, f + 5) in steps of 5, minus locals."""
    plan = window_plan(10, neighbor_stride=3, ref_length=5, num_ref=2)
    assert [(f, refs) for f, _, refs in plan] == [(0, [5]), (3, []), (6, [1]), (9, [4])]
    # test.py's end_idx = min(length, ...) plus range(..., end_idx + 1, ...) can name frame T
    # itself (the official code then fails with an IndexError); we pick the same indices.
    assert window_plan(14, 3, 5, 2)[3][2] == [4, 14]


def test_every_golden_array_with_same_shape_and_layout(ours: dict, expected: dict) -> None:
    assert set(expected) <= set(ours)
    for k, v in expected.items():
        assert ours[k].shape == v.shape and ours[k].dtype == v.dtype, k
        if v.dtype == np.int64:
            np.testing.assert_array_equal(ours[k], v, err_msg=k)
    # width 50 < pad 58: one mirror concatenation -> 100 columns, as test.py
    assert ours["direct_masked_frames"].shape == (1, 5, 3, 60, 100)


@pytest.mark.parametrize("name", sorted(E2FGVI_ATOL))
def test_direct_call_within_tolerance(ours: dict, expected: dict, name: str) -> None:
    assert_e2fgvi_direct(ours, expected, name)


def test_windows_and_composite_within_tolerance(ours: dict, expected: dict) -> None:
    assert_e2fgvi_procedure(ours, expected, FIX)
    with np.load(FIX / "inputs.npz") as d:
        frames, dilated = d["frames"], d["masks_dilated"].astype(bool)
    assert not dilated[1].any() and not dilated[5].any()  # the empty-mask frames come back untouched
    np.testing.assert_array_equal(ours["comp_u8"][[1, 5]], frames[[1, 5]])
