"""Shared by the parity tests: run `tests/parity.py` like the hidden cases are run, load
golden arrays, and the E2FGVI README's tolerance checks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# tests/fixtures/e2fgvi/README.md, "Recommended test tolerances" (absolute)
E2FGVI_ATOL = {
    "direct_masked_frames": 1e-6,
    "direct_pred_flows_0": 1e-4,
    "direct_pred_flows_1": 1e-4,
    "direct_dbg_encoder_c0_8": 1e-4,
    "direct_dbg_featprop_c0_8": 1e-4,
    "direct_dbg_transformer0_c0_8": 5e-5,
    "direct_dbg_transformer7_c0_8": 5e-5,
    "direct_dbg_softcomp_c0_8": 1e-3,
    "direct_pred_imgs": 1e-3,
}


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz, loaded into memory."""
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def run_parity(model: str, fixture_dir: Path, out_dir: Path, timeout: float = 1200) -> dict[str, np.ndarray]:
    """`python tests/parity.py MODEL FIXTURE_DIR OUT.npz` in a separate process; its arrays."""
    out = Path(out_dir) / "out.npz"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "parity.py"), model, str(fixture_dir), str(out)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    print(f"{model} parity runner on {Path(fixture_dir).name}: {time.perf_counter() - t0:.1f} s")
    return load_arrays(out)


def parity_fixtures(model: str, fixture_dir: Path):
    """The module-scoped fixtures `ours` (our arrays, from the parity dispatcher in a subprocess)
    and `expected` (the golden arrays) of one fixture folder: ``ours, expected = parity_fixtures(...)``."""
    import pytest

    @pytest.fixture(scope="module")
    def ours(tmp_path_factory) -> dict[str, np.ndarray]:
        return run_parity(model, fixture_dir, tmp_path_factory.mktemp(model))

    @pytest.fixture(scope="module")
    def expected() -> dict[str, np.ndarray]:
        return load_arrays(Path(fixture_dir) / "expected.npz")

    return ours, expected


# The small XMem memory the long-term tests share (consolidation after a few frames).
XMEM_SMALL_MEMORY = {"mem_every": 1, "top_k": 10, "max_mid_term_frames": 3, "min_mid_term_frames": 2,
                     "num_prototypes": 8}


def assert_e2fgvi_direct(ours: dict, expected: dict, name: str) -> None:
    """One direct-call array within its absolute tolerance."""
    diff = np.abs(ours[name].astype(np.float64) - expected[name])
    assert diff.max() <= E2FGVI_ATOL[name], f"{name}: max |diff| {diff.max():.3g}"


def assert_e2fgvi_procedure(ours: dict, expected: dict, fixture_dir: Path) -> None:
    """Every window's predictions, the running-average composite and the uint8 frames within
    tolerance; pixels outside the dilated masks exactly the source's."""
    for k in range(int(expected["proc_num_windows"])):
        name = f"win{k}_pred255_masked"
        diff = np.abs(ours[name].astype(np.float64) - expected[name])
        assert diff.max() <= 0.25, f"{name}: max |diff| {diff.max():.3g}"
    df = np.abs(ours["comp_float"].astype(np.float64) - expected["comp_float"])
    assert df.max() <= 1.0 and (df > 1e-3).mean() <= 1e-3
    du = np.abs(ours["comp_u8"].astype(np.int16) - expected["comp_u8"])
    assert du.max() <= 1 and (du > 0).mean() <= 1e-3
    with np.load(Path(fixture_dir) / "inputs.npz") as d:
        frames, dilated = d["frames"], d["masks_dilated"].astype(bool)
    np.testing.assert_array_equal(ours["comp_u8"][~dilated], frames[~dilated])


# tests/fixtures/sam2/README.md section 6 (compare mode `sam2`)
SAM2_MASK_ATOL = 5e-2
SAM2_SCORE_ATOL = 3e-2
SAM2_MEMATTN_ATOL = 3e-2
SAM2_REL = 1e-4


def assert_sam2(ours: dict, expected: dict) -> dict[str, float]:
    """Every expected array present with the same shape and dtype, within the README's tolerances:
    masks atol 5e-2, object scores 3e-2, first_memattn_out 3e-2, other intermediates 1e-4·max(1, max|ref|),
    integer arrays exact. Returns the max |diff| per group."""
    worst: dict[str, float] = {}
    for name, ref in expected.items():
        assert name in ours, f"{name}: missing from our output"
        got = ours[name]
        assert got.shape == ref.shape, f"{name}: shape {got.shape} != {ref.shape}"
        assert got.dtype == ref.dtype, f"{name}: dtype {got.dtype} != {ref.dtype}"
        if not np.issubdtype(ref.dtype, np.floating):
            np.testing.assert_array_equal(got, ref, err_msg=name)
            continue
        diff = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
        if name.startswith("call") and name.endswith("_masks"):
            group, tol = "masks", SAM2_MASK_ATOL
        elif name.endswith("_obj_scores"):
            group, tol = "obj_scores", SAM2_SCORE_ATOL
        elif name == "first_memattn_out":
            group, tol = name, SAM2_MEMATTN_ATOL
        else:
            group, tol = name, SAM2_REL * max(1.0, float(np.abs(ref).max()))
        assert diff <= tol, f"{name}: max |diff| {diff:.3g} > {tol:.3g}"
        worst[group] = max(worst.get(group, 0.0), diff)
    return worst
