"""Parity with the official E2FGVI-HQ (synthetic-v1 weights) on the golden fixture.

Runs `tests/parity.py e2fgvi` as a separate process (exactly what hidden cases run),
then compares every array with the README's tolerance table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from golden import E2FGVI_ATOL, assert_e2fgvi_direct, assert_e2fgvi_procedure, parity_fixtures

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "e2fgvi"
ours, expected = parity_fixtures("e2fgvi", FIX)


def test_runner_produces_every_golden_array(ours: dict, expected: dict) -> None:
    assert set(expected) <= set(ours)
    for k, v in expected.items():
        assert ours[k].shape == v.shape and ours[k].dtype == v.dtype, k


def test_window_layout_matches_test_py(ours: dict, expected: dict) -> None:
    for k, v in expected.items():
        if v.dtype == np.int64:
            np.testing.assert_array_equal(ours[k], v, err_msg=k)


@pytest.mark.parametrize("name", sorted(E2FGVI_ATOL))
def test_direct_forward_call_matches_within_tolerance(ours: dict, expected: dict, name: str) -> None:
    assert_e2fgvi_direct(ours, expected, name)


def test_windows_and_composited_frames_match_within_tolerance(ours: dict, expected: dict) -> None:
    assert_e2fgvi_procedure(ours, expected, FIX)
