"""The worker environment's plan: torch build per platform and GPU, download size, one-line failures, readiness."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from track_anything.operators import env_plan
from track_anything.operators.env_plan import Gpu

NVIDIA_SMI = """
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|=========================================+========================+======================|
|   0  NVIDIA GeForce RTX 3060        Off |   00000000:01:00.0  On |                  N/A |
+-----------------------------------------+------------------------+----------------------+
"""


def test_nvidia_smi_gives_the_gpu_and_its_cuda_version():
    gpu = env_plan.parse_nvidia_smi(NVIDIA_SMI)
    assert gpu == Gpu("nvidia", "NVIDIA GeForce RTX 3060", (12, 4))
    assert "CUDA 12.4" in gpu.describe()
    assert env_plan.parse_nvidia_smi("command not found") is None


def test_cuda_build_is_the_newest_the_driver_runs():
    assert env_plan.cuda_tag(Gpu("nvidia", "x", (13, 1))) == "cu130"
    assert env_plan.cuda_tag(Gpu("nvidia", "x", (12, 9))) == "cu128"
    assert env_plan.cuda_tag(Gpu("nvidia", "x", (12, 4))) == "cu126"  # older drivers get the oldest offered
    assert env_plan.cuda_tag(Gpu("nvidia", "x", None)) == "cu126"


def test_torch_build_per_platform():
    nvidia, none = Gpu("nvidia", "x", (12, 8)), Gpu("none")
    assert env_plan.choose_build("AUTO", nvidia, "win32") == "CUDA"
    assert env_plan.choose_build("AUTO", none, "linux") == "CPU"
    assert env_plan.choose_build("AUTO", Gpu("apple"), "darwin") == "DEFAULT"
    assert env_plan.choose_build("CPU", nvidia, "linux") == "CPU"
    # Windows and Linux CUDA wheels come from PyTorch's own index; PyPI's Windows torch is CPU-only
    assert env_plan.index_args("CUDA", nvidia, "win32") == ["--extra-index-url", "https://download.pytorch.org/whl/cu128"]
    assert env_plan.index_args("CPU", none, "linux") == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert env_plan.index_args("DEFAULT", Gpu("apple"), "darwin") == []
    assert env_plan.index_args("CPU", Gpu("apple"), "darwin") == []
    with pytest.raises(ValueError, match="macOS"):
        env_plan.index_args("CUDA", nvidia, "darwin")


def test_pip_progress_is_shown_as_lines():
    assert env_plan.progress_args("24.2") == ["--progress-bar", "raw"]
    assert env_plan.progress_args("23.2.1") == ["--progress-bar", "on"]


def test_download_size_adds_up_local_and_remote_files(tmp_path):
    wheel = tmp_path / "a-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x" * 1234)
    report = {"install": [
        {"download_info": {"url": wheel.as_uri()}},
        {"download_info": {"url": "https://files.example/b.whl"}},
        {"download_info": {"url": (tmp_path / "gone.whl").as_uri()}},  # unknown size: counted, 0 bytes
    ]}
    size, files = env_plan.download_size(report, remote_size=lambda url: 10_000_000)
    assert (size, files) == (10_001_234, 3)
    assert env_plan.format_size(size) == "10.0 MB"


def test_a_real_pip_without_network_fails_in_one_line(tmp_path):
    """pip pointed at an index nobody serves: the failure says 'network', not a traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-cache-dir", "--isolated", "--retries", "1",
         "--timeout", "2", "--index-url", "http://127.0.0.1:9/simple", "tam-not-a-package==1.0"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    why = env_plan.explain_failure((out.stdout + out.stderr).splitlines(), out.returncode)
    assert why.startswith("the package index could not be reached"), why
    assert "\n" not in why


def test_disk_full_and_missing_builds_are_named():
    assert env_plan.explain_failure(["ERROR: Could not install packages due to an OSError: [Errno 28] "
                                     "No space left on device"], 1).startswith("the disk is full")
    assert "torch" in env_plan.explain_failure(
        ["ERROR: No matching distribution found for torch==2.14.1"], 1)


def _fake_env(folder: Path) -> Path:
    py = env_plan.env_python(folder)
    py.parent.mkdir(parents=True)
    py.write_text("")
    return folder


def test_an_interrupted_build_is_never_taken_for_a_ready_environment(tmp_path):
    env = tmp_path / "worker-env"
    part = _fake_env(env_plan.partial_dir(env))
    assert not env_plan.is_ready(env) and not env_plan.is_ready(part)
    _fake_env(env)  # a folder with a python but no marker (an older build that died half-way)
    assert not env_plan.is_ready(env)
    env_plan.finish_build(env, {"torch": "2.14.1", "devices": [{"id": "cpu"}]})
    assert env_plan.is_ready(env) and not part.exists()
    assert json.loads((env / env_plan.READY_MARKER).read_text())["torch"] == "2.14.1"
    _fake_env(env_plan.partial_dir(env))
    env_plan.clear_partial(env)
    assert not env_plan.partial_dir(env).exists() and env_plan.is_ready(env)


def test_hello_decides_whether_the_build_is_fit():
    lines = ["noise", env_plan.HELLO_PREFIX + json.dumps({"torch": "2.14.1", "cuda": False, "devices": []})]
    hello = env_plan.parse_hello(lines)
    assert hello["torch"] == "2.14.1"
    assert env_plan.check_hello(hello, "CPU") == ""
    assert "no CUDA GPU" in env_plan.check_hello(hello, "CUDA")
    assert "did not start" in env_plan.check_hello(env_plan.parse_hello(["Traceback ..."]), "CPU")


def test_size_comes_from_a_real_pip_dry_run_report(tmp_path):
    """pip resolves offline from a folder of wheels; the report's files add up to their sizes on disk."""
    src = tmp_path / "src"
    (src / "tam_probe").mkdir(parents=True)
    (src / "tam_probe" / "__init__.py").write_text("x = 1\n" * 200)
    (src / "setup.py").write_text("from setuptools import setup\nsetup(name='tam-probe', version='1.0', "
                                  "packages=['tam_probe'])\n")
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
                   check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("tam_probe-1.0-*.whl")
    report = tmp_path / "report.json"
    subprocess.run([*pip, "install", "--dry-run", "--ignore-installed", "-q", "--report", str(report), "--no-index",
                    "--find-links", str(wheels), "tam-probe==1.0"], check=True, capture_output=True, timeout=120)
    size, files = env_plan.download_size(json.loads(report.read_text()))
    assert (size, files) == (wheel.stat().st_size, 1)
