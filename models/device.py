"""The one device and precision policy of every backend (SAM, XMem, E2FGVI-HQ, SAM 2.1).

* Device: ``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit ``cuda[:N]``,
  ``mps`` or ``cpu`` is checked and refused with a one-line InputError when absent.
* Per-op CPU fallback: an op without an MPS kernel (torchvision's ``deform_conv2d``, used
  by E2FGVI's alignment) runs on the CPU for that call only (`run_op`); the rest of the
  network stays on the GPU.
* Precision: `half_dtype` is the only place deciding the reduced-precision dtype per
  device. Half precision is a CUDA feature here; MPS and the CPU always compute in fp32
  (MPS autocast lacks kernels the networks use; on the CPU it is slower, not faster).

torch is imported lazily, so importing this module (e.g. for its docstring) is cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import InputError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")
# ops that have no MPS kernel in the torch/torchvision we pin: they run on the CPU there
MPS_CPU_FALLBACK_OPS = frozenset({"deform_conv2d"})


def mps_available() -> bool:
    """True when this torch can run on Apple's Metal (MPS)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: Any = "auto") -> torch.device:
    """torch.device for 'auto' (CUDA > MPS > CPU), 'cuda[:N]', 'mps' or 'cpu'; InputError if absent."""
    import torch

    if isinstance(device, torch.device):
        dev_text = str(device)
    else:
        dev_text = str(device or "auto").strip().lower()
    if dev_text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        out = torch.device(dev_text)
    except RuntimeError as exc:
        raise InputError(f"unknown device {device!r}; use auto, cuda, mps or cpu") from exc
    if out.type not in ("cuda", "mps", "cpu"):
        raise InputError(f"unsupported device {device!r}; use auto, cuda, mps or cpu")
    if out.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but this torch ({torch.__version__}) sees no CUDA GPU")
    if out.type == "mps" and not mps_available():
        raise InputError("device 'mps' requested but Metal (MPS) is not available here")
    return out


def half_dtype(device: torch.device, half: bool, prefer_bf16: bool = False) -> torch.dtype | None:
    """The reduced-precision dtype to autocast to on `device`, or None for full fp32.

    Half only when asked and only on CUDA; `prefer_bf16` takes bfloat16 where the GPU
    supports it (SAM's encoder overflows fp16 less often in bf16), else float16.
    """
    import torch

    if not half or device.type != "cuda":
        return None
    if prefer_bf16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def op_device(op: str, device: torch.device) -> torch.device:
    """Where op `op` runs for tensors on `device`: the CPU where MPS lacks its kernel."""
    import torch

    if device.type == "mps" and op in MPS_CPU_FALLBACK_OPS:
        return torch.device("cpu")
    return device


def run_op(op: str, fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """`fn(*tensors, **kwargs)` on the device `op_device` picks; the result returns to the input's device.

    Tensor keyword arguments move along with the positional ones. On CUDA and the CPU
    this is a plain call (no copies), so their numerics are unchanged.
    """
    import torch

    home = tensors[0].device
    where = op_device(op, home)
    if where == home:
        return fn(*tensors, **kwargs)
    moved = [t.to(where) for t in tensors]
    kw = {k: (v.to(where) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    return fn(*moved, **kw).to(home)
