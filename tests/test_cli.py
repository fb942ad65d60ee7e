"""The `tam` command line: track/export/eval end to end, and one clear line on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from track_anything.tam_blender_addon.cli import main

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def small_object_clip(tmp_path_factory):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    clip = make_clip(preset_spec("small_object_pan", seed=11))
    paths = write_clip(clip, tmp_path_factory.mktemp("pan"))
    return clip, paths


def _independent_j(pred_dir: Path, gt_dir: Path) -> float:
    js = []
    for gt_file in sorted(gt_dir.glob("*.png")):
        g = cv2.imread(str(gt_file), cv2.IMREAD_GRAYSCALE) > 127
        p = cv2.imread(str(pred_dir / gt_file.name), cv2.IMREAD_GRAYSCALE) > 127
        union = (g | p).sum()
        js.append(1.0 if union == 0 else (g & p).sum() / union)
    return float(np.mean(js))


def test_track_export_eval_small_moving_object_from_first_frame_box(tmp_path, small_object_clip, capsys):
    clip, paths = small_object_clip
    x0, y0, x1, y1 = (int(v) for v in clip.box(0, 1))
    sess = tmp_path / "s"
    assert main(["-q", "track", str(paths["video"]), "--session", str(sess),
                 "--box", f"0:{x0},{y0},{x1},{y1}", "--backend", "classic"]) == 0
    assert main(["-q", "export", str(sess), "--format", "png", "--out", str(tmp_path / "pred")]) == 0
    files = sorted((tmp_path / "pred" / "1").glob("*.png"))
    assert [f.name for f in files] == [f"{i:05d}.png" for i in range(len(clip))]
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "pred"), str(paths["gt"]), "--json"]) == 0
    import json

    res = json.loads(capsys.readouterr().out)
    j = _independent_j(tmp_path / "pred" / "1", paths["gt"] / "1")
    assert abs(res["objects"]["1"]["J"] - j) < 1e-6
    assert res["mean"]["J"] >= 0.85


def test_export_labels_and_exr_formats(tmp_path, small_object_clip):
    clip, paths = small_object_clip
    x0, y0, x1, y1 = (int(v) for v in clip.box(0, 1))
    sess = tmp_path / "s"
    assert main(["-q", "track", str(paths["video"]), "--session", str(sess), "--range", "0:5",
                 "--box", f"0:{x0},{y0},{x1},{y1}"]) == 0
    assert main(["-q", "export", str(sess), "--format", "labels", "--out", str(tmp_path / "lab")]) == 0
    lab = cv2.imread(str(tmp_path / "lab" / "00003.png"), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1}
    assert main(["-q", "export", str(sess), "--format", "exr", "--out", str(tmp_path / "exr")]) == 0
    assert (tmp_path / "exr" / "1" / "00003.exr").exists()


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    return subprocess.run([str(VENV_BIN / "tam"), *args], capture_output=True, text=True, env=env, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("backend:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert needle in lines[0], lines[0]


def test_bad_inputs_exit_nonzero_with_one_line_and_leave_the_session_intact(tmp_path, small_object_clip):
    clip, paths = small_object_clip
    video = str(paths["video"])
    sess = tmp_path / "s"
    x0, y0, x1, y1 = (int(v) for v in clip.box(0, 1))
    assert main(["-q", "track", video, "--session", str(sess), "--range", "0:4", "--box", f"0:{x0},{y0},{x1},{y1}"]) == 0
    snapshot = {p.relative_to(sess): p.read_bytes() for p in sess.rglob("*") if p.is_file() and p.name != "log.jsonl"}

    _one_line_error(_run_cli("info", str(tmp_path / "nope.mp4")), "nope.mp4")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    _one_line_error(_run_cli("info", str(corrupt)), "corrupt.mp4")
    _one_line_error(_run_cli("track", video, "--session", str(sess), "--click", f"0:{clip.width + 5},10"), "outside")
    _one_line_error(_run_cli("track", video, "--session", str(sess), "--click", "0:10,10:300"), "300")
    _one_line_error(_run_cli("inpaint", video, "--session", str(sess), "--objects", "7", "--out", str(tmp_path / "o")), "7")

    after = {p.relative_to(sess): p.read_bytes() for p in sess.rglob("*") if p.is_file() and p.name != "log.jsonl"}
    assert after == snapshot


def test_every_command_has_help():
    for cmd in ["info", "track", "export", "inpaint", "eval", "demo", "bench"]:
        proc = _run_cli(cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout
