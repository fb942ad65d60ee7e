"""Planning the worker's Python environment: which torch build, how big, how it failed, when it is ready.

No bpy here (the operators in setup.py run the steps), so all of it is tested plainly.

* torch build: CUDA wheels come from PyTorch's own package index on Windows and Linux
  (PyPI's torch is CPU-only on Windows), macOS takes PyPI's default build (MPS), CPU
  takes PyTorch's CPU index on Linux/Windows (PyPI's Linux torch pulls ~4 GB of CUDA
  libraries). AUTO picks CUDA when ``nvidia-smi`` finds a GPU, MPS on Apple silicon,
  else CPU.
* download size: ``pip install --dry-run --report`` resolves the packages; the sizes of
  the files it would fetch are added up (local files by stat, remote ones by HEAD).
* a build happens in ``<env>.partial`` and becomes ``<env>`` by a rename only after the
  worker's hello ran in it; the marker file written last says it is ready. A build
  that was interrupted (cancelled, crashed, disk full) leaves no folder that counts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write

READY_MARKER = ".tam-env-ready"
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# CUDA builds offered for the pinned torch, newest first, with the CUDA version each needs.
CUDA_TAGS = (("cu130", (13, 0)), ("cu128", (12, 8)), ("cu126", (12, 6)))
TORCH_PACKAGES = ("torch", "torchvision")
HELLO_PREFIX = "TAM-HELLO "

BUILD_ITEMS = [
    ("AUTO", "Automatic", "CUDA if an NVIDIA GPU is found, the default build (MPS) on Apple silicon, else CPU"),
    ("CUDA", "NVIDIA CUDA", "CUDA wheels from PyTorch's package index (Windows, Linux)"),
    ("DEFAULT", "Default (PyPI)", "PyPI's torch: MPS on macOS, CUDA on Linux, CPU-only on Windows"),
    ("CPU", "CPU only", "The smallest download; no GPU"),
]


@dataclass
class Gpu:
    """What the machine has for torch: 'nvidia' (with its CUDA version), 'apple' or 'none'."""

    kind: str
    name: str = ""
    cuda: tuple[int, int] | None = None

    def describe(self) -> str:
        if self.kind == "nvidia":
            cuda = f", driver supports CUDA {self.cuda[0]}.{self.cuda[1]}" if self.cuda else ""
            return f"NVIDIA {self.name}{cuda}".replace("NVIDIA NVIDIA", "NVIDIA")
        if self.kind == "apple":
            return "Apple silicon (Metal)"
        return "no GPU found"


def parse_nvidia_smi(output: str) -> Gpu | None:
    """The GPU name and the driver's CUDA version from plain ``nvidia-smi`` output."""
    cuda = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", output)
    name = re.search(r"^\|\s+\d+\s+(.+?)\s{2,}", output, re.MULTILINE)
    if cuda is None and name is None:
        return None
    return Gpu("nvidia", name.group(1).strip() if name else "GPU",
               (int(cuda.group(1)), int(cuda.group(2))) if cuda else None)


def detect_gpu(platform: str = sys.platform, machine: str | None = None) -> Gpu:
    """Look for an NVIDIA GPU (nvidia-smi) or Apple silicon; 'none' when neither is there."""
    if platform == "darwin":
        import platform as _platform

        return Gpu("apple") if (machine or _platform.machine()) == "arm64" else Gpu("none")
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return Gpu("none")
    try:
        out = subprocess.run([smi], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return Gpu("none")
    return parse_nvidia_smi(out) or Gpu("none")


def cuda_tag(gpu: Gpu) -> str:
    """The newest CUDA build the GPU's driver can run (the oldest offered if unknown)."""
    if gpu.cuda is not None:
        for tag, need in CUDA_TAGS:
            if gpu.cuda >= need:
                return tag
    return CUDA_TAGS[-1][0]


def choose_build(choice: str, gpu: Gpu, platform: str = sys.platform) -> str:
    """The build AUTO stands for on this machine; CUDA where there is none becomes an error upstream."""
    if choice != "AUTO":
        return choice
    if gpu.kind == "nvidia" and platform != "darwin":
        return "CUDA"
    if platform == "darwin":
        return "DEFAULT"
    return "CPU"


def index_args(build: str, gpu: Gpu, platform: str = sys.platform) -> list[str]:
    """pip options that pick the torch build: PyTorch's index for CUDA (and CPU on Linux/Windows)."""
    if build == "CUDA":
        if platform == "darwin":
            raise ValueError("there are no CUDA builds of torch for macOS: choose Default (MPS) or CPU")
        return ["--extra-index-url", f"{PYTORCH_INDEX}/{cuda_tag(gpu)}"]
    if build == "CPU" and platform != "darwin":
        return ["--extra-index-url", f"{PYTORCH_INDEX}/cpu"]
    return []


def progress_args(pip_version: str) -> list[str]:
    """pip's progress as lines Blender can show: 'raw' (pip 24.1+), else the bar."""
    parts = [int(p) for p in re.findall(r"\d+", pip_version)[:2]] + [0, 0]
    return ["--progress-bar", "raw" if tuple(parts[:2]) >= (24, 1) else "on"]


def _remote_size(url: str, timeout: float = 15.0) -> int:
    req = urllib.request.Request(url, method="HEAD")
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the package index pip chose
        return int(resp.headers.get("Content-Length") or 0)


def download_size(report: dict, remote_size=_remote_size) -> tuple[int, int]:
    """(bytes, files) pip would download for a ``--dry-run --report`` result (0 for unknown sizes)."""
    total = count = 0
    for item in report.get("install", []):
        url = (item.get("download_info") or {}).get("url", "")
        if not url:
            continue
        count += 1
        try:
            if url.startswith("file://"):
                total += os.path.getsize(urllib.request.url2pathname(url[len("file://"):]))
            else:
                total += remote_size(url)
        except (OSError, ValueError):
            continue
    return total, count


def format_size(n: int) -> str:
    """1234567890 -> '1.2 GB'."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def explain_failure(lines: list[str], code: int | None) -> str:
    """One line saying why a build step failed (network, disk, a missing build) from its output."""
    text = "\n".join(lines[-80:])
    low = text.lower()
    if "no space left on device" in low or "errno 28" in low or "disk quota exceeded" in low:
        return "the disk is full: free space (the environment needs several GB) and try again"
    network = ("temporary failure in name resolution", "connection refused", "network is unreachable",
               "max retries exceeded", "connectionerror", "read timed out", "could not fetch url",
               "failed to establish a new connection", "name or service not known")
    if any(k in low for k in network):
        return "the package index could not be reached: check the network connection (or a proxy) and try again"
    m = re.search(r"no matching distribution found for (\S+)", low)
    if m:
        return f"no build of {m.group(1)} fits this Python/platform (Python 3.11 is needed)"
    for line in reversed(lines):
        if line.lower().startswith("error"):
            return line
    return f"exit code {code}" if code is not None else "it stopped"


def env_python(env: Path) -> Path:
    """The interpreter inside a venv folder."""
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def partial_dir(env: Path) -> Path:
    """Where a build of `env` happens until it is verified."""
    return env.with_name(env.name + ".partial")


def is_ready(env: Path) -> bool:
    """True only for an environment whose build finished and whose worker answered hello."""
    return env_python(env).is_file() and (env / READY_MARKER).is_file()


def clear_partial(env: Path) -> None:
    """Remove what an interrupted build left (its partial folder)."""
    shutil.rmtree(partial_dir(env), ignore_errors=True)


def finish_build(env: Path, hello: dict) -> None:
    """Mark the verified partial build ready (marker last) and move it into place by renames."""
    part = partial_dir(env)
    atomic_write(part / READY_MARKER, json.dumps(hello, indent=1).encode("utf-8"))
    old = env.with_name(env.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if env.exists():
        os.replace(env, old)
    os.replace(part, env)
    shutil.rmtree(old, ignore_errors=True)


def site_dirs(python: str) -> list[str]:
    """The site-packages folders of another Python (a venv's own ones included)."""
    out = subprocess.run([python, "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise ValueError(f"cannot ask {python} for its packages: {out.stderr.strip()[-200:]}")
    return [d for d in json.loads(out.stdout) if os.path.isdir(d)]


# Run by the new environment's Python: make the given folders part of its sys.path (a .pth file).
LINK_SCRIPT = """
import pathlib, sys, sysconfig
pth = pathlib.Path(sysconfig.get_paths()["purelib"]) / "tam-base-packages.pth"
pth.write_text("\\n".join(sys.argv[1:]) + "\\n", encoding="utf-8")
"""


# Run by the new environment's Python: start the real worker from this extension and ask
# it hello (torch version, CUDA, devices); the line is read back by the add-on.
VERIFY_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import launch
launch.register_root()
from track_anything.tam_blender_addon.client import WorkerClient
client = WorkerClient(sys.executable)
try:
    info = client.start(timeout=300)
finally:
    client.shutdown()
print("TAM-HELLO " + json.dumps({k: info.get(k) for k in ("torch", "cuda", "devices", "python", "executable")}))
"""


def parse_hello(lines: list[str]) -> dict | None:
    """The worker's hello the verify step printed, or None."""
    for line in reversed(lines):
        if line.startswith(HELLO_PREFIX):
            try:
                return json.loads(line[len(HELLO_PREFIX):])
            except ValueError:
                return None
    return None


def check_hello(hello: dict | None, build: str) -> str:
    """'' if the worker in the new environment is fit for the chosen build, else why not (one line)."""
    if not hello or not hello.get("torch"):
        return "the new environment's worker did not start (torch could not be imported)"
    if build == "CUDA" and not hello.get("cuda"):
        return (f"torch {hello['torch']} was installed but sees no CUDA GPU: update the NVIDIA driver "
                "or choose another build")
    return ""
