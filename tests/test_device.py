"""One device and precision policy for every backend (models/device.py), availability monkeypatched."""

from __future__ import annotations

import pytest
import torch

from track_anything.errors import InputError
from track_anything.models import device as policy


@pytest.fixture
def machine(monkeypatch):
    """Pretend this machine has the given accelerators (the policy reads only these two calls)."""

    def set_up(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(policy, "mps_available", lambda: mps)

    return set_up


@pytest.mark.parametrize(("cuda", "mps", "expected"), [
    (True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu"),
])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda: bool, mps: bool, expected: str) -> None:
    machine(cuda, mps)
    assert policy.resolve_device("auto").type == expected
    assert policy.resolve_device(None).type == expected


def test_explicit_devices_are_checked_against_what_is_there(machine) -> None:
    machine(False, False)
    assert policy.resolve_device("cpu") == torch.device("cpu")
    assert policy.resolve_device(torch.device("cpu")) == torch.device("cpu")
    for absent in ("cuda", "cuda:1", "mps"):
        with pytest.raises(InputError, match="requested but"):
            policy.resolve_device(absent)
    with pytest.raises(InputError, match="unknown device"):
        policy.resolve_device("gpu please")
    with pytest.raises(InputError, match="unsupported device"):
        policy.resolve_device("meta")


def test_every_backend_resolves_through_the_one_policy(machine) -> None:
    from track_anything.models import sam
    from track_anything.models.e2fgvi import inpainter
    from track_anything.models.xmem import propagator

    for module in (sam, propagator, inpainter):
        assert module.resolve_device is policy.resolve_device, module.__name__
    # and they act on it: an absent accelerator is refused the same way by each constructor
    machine(False, False)
    builders = [
        lambda: sam.SamSegmenter("vit_b", weights="synthetic", device="mps"),
        lambda: propagator.XMemPropagator("synthetic", device="mps"),
        lambda: inpainter.E2FGVIInpainter("synthetic", device="mps"),
    ]
    for build in builders:
        with pytest.raises(InputError, match="'mps' requested but Metal"):
            build()


def test_half_precision_is_a_cuda_only_choice(monkeypatch) -> None:
    cuda, mps, cpu = torch.device("cuda"), torch.device("mps"), torch.device("cpu")
    for dev in (mps, cpu):
        assert policy.half_dtype(dev, True) is None
        assert policy.half_dtype(dev, True, prefer_bf16=True) is None
    assert policy.half_dtype(cuda, False) is None
    assert policy.half_dtype(cuda, True) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert policy.half_dtype(cuda, True, prefer_bf16=True) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert policy.half_dtype(cuda, True, prefer_bf16=True) is torch.float16


def test_ops_without_an_mps_kernel_fall_back_to_the_cpu_alone() -> None:
    assert policy.op_device("deform_conv2d", torch.device("mps")) == torch.device("cpu")
    assert policy.op_device("conv2d", torch.device("mps")) == torch.device("mps")
    assert policy.op_device("deform_conv2d", torch.device("cuda")) == torch.device("cuda")
    x = torch.arange(6.0).view(2, 3)
    calls = []

    def op(a, b, *, scale):
        calls.append((a.device, b.device, scale.device))
        return a * b * scale

    out = policy.run_op("deform_conv2d", op, x, x, scale=torch.tensor(2.0))
    assert torch.equal(out, x * x * 2) and calls == [(torch.device("cpu"),) * 3]


def test_backends_on_the_cpu_keep_full_precision(machine) -> None:
    from track_anything.models.e2fgvi.inpainter import E2FGVIInpainter
    from track_anything.models.xmem.propagator import XMemPropagator

    machine(False, False)
    assert XMemPropagator("synthetic", device="auto", fast=True).fast is False
    assert E2FGVIInpainter("synthetic", device="auto", precision="fp16").precision == "fp32"


def test_worker_hello_reports_the_policys_choice(machine) -> None:
    from track_anything.tam_blender_addon.worker import runtime_info

    machine(False, True)
    info = runtime_info()
    assert info["auto_device"] == "mps" and {"id": "mps", "name": "Apple Metal (MPS)"} in info["devices"]
    machine(False, False)
    assert runtime_info()["auto_device"] == "cpu"
