"""XMem parity with the official implementation on the golden fixture (README section 6 tolerances)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from golden import XMEM_SMALL_MEMORY, load_arrays, run_parity

ROOT = Path(__file__).resolve().parents[1]
XMEM = ROOT / "tests" / "fixtures" / "xmem"


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """Run `tests/parity.py xmem` on a copy of the fixture that holds only the inputs and the config."""
    case = tmp_path_factory.mktemp("xmem_case")
    for name in ("inputs.npz", "config.json"):
        shutil.copy(XMEM / name, case / name)
    return run_parity("xmem", case, case, timeout=600)


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    """The official code's outputs."""
    return load_arrays(XMEM / "expected.npz")


def test_runner_writes_every_expected_array_with_same_shape_and_dtype(produced, expected):
    assert set(produced) == set(expected)
    for k, ref in expected.items():
        assert produced[k].shape == ref.shape, k
        assert produced[k].dtype == ref.dtype, k


def test_probs_match_official_within_5e_4(produced, expected):
    diff = np.abs(produced["probs"] - expected["probs"]).max()
    print(f"probs max|diff| = {diff:.3e}")
    assert diff <= 5e-4


def test_intermediates_match_official_within_relative_1e_3(produced, expected):
    worst = ("", 0.0)
    for k, ref in expected.items():
        if k == "probs" or ref.dtype.kind != "f":
            continue
        rel = float(np.abs(produced[k] - ref).max()) / max(1.0, float(np.abs(ref).max()))
        worst = max(worst, (k, rel), key=lambda x: x[1])
        assert rel <= 1e-3, f"{k}: {rel:.3e}"
    print(f"worst intermediate: {worst[0]} {worst[1]:.3e}")


def test_memory_sizes_and_memory_frames_match_exactly(produced, expected):
    for k in ("work_mem_size_after", "long_mem_size_after", "is_mem_frame"):
        np.testing.assert_array_equal(produced[k], expected[k], err_msg=k)


def test_frame1_affinity_nonzeros_lie_in_the_top30_similarities(produced, expected):
    sim = expected["f1_similarity"][0]  # (N, HW)
    aff = produced["f1_affinity"][0]
    top = np.argsort(-sim, axis=0)[:30]
    for q in range(sim.shape[1]):
        nz = np.flatnonzero(aff[:, q])
        assert nz.size > 0
        assert set(nz.tolist()) <= set(top[:, q].tolist()), f"query {q}"
        assert abs(aff[:, q].sum() - 1) < 1e-4


def test_runner_consolidates_long_term_memory_by_the_official_rules(tmp_path: Path):
    from track_anything.models.xmem import parity
    from track_anything.models.xmem.bench import MovingTexture

    video = MovingTexture((64, 96), objects=2, seed=7)
    frames = np.stack([video.frame(t) for t in range(9)])
    lab = video.labels(0)
    np.savez(tmp_path / "inputs.npz", frames=frames, first_mask=np.where(lab == 2, 5, lab).astype(np.uint8))
    icfg = json.loads((XMEM / "config.json").read_text())["inference_config"]
    icfg.update(XMEM_SMALL_MEMORY, mem_every=2, num_prototypes=16, max_long_term_elements=40)
    end_flag = "step(..., end=False), then end=True on the last frame"
    config = {"formula": "synthetic-v2", "inference_config": icfg, "end_flag": end_flag}
    (tmp_path / "config.json").write_text(json.dumps(config))
    out = parity.run(tmp_path)
    hw = 4 * 6
    # memory frames 0, 2, 4, 6 (8 would be one, but it is the end frame); at 3 frames in working
    # memory the middle one becomes 16 prototypes
    np.testing.assert_array_equal(out["is_mem_frame"], [1, 0, 1, 0, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(out["work_mem_size_after"], np.array([1, 1, 2, 2, 2, 2, 2, 2, 2]) * hw)
    np.testing.assert_array_equal(out["long_mem_size_after"], [0, 0, 0, 0, 16, 16, 32, 32, 32])
    probs = out["probs"]
    assert probs.shape == (9, 3, 64, 96) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(probs[0, 2], (lab == 2).astype(np.float32), atol=1e-6)  # label 5 -> object 2
