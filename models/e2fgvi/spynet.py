"""SPyNet optical flow as E2FGVI-HQ fine-tunes it, plus the flow warp it and the propagation share.

State-dict names follow the official checkpoint, which was built with mmcv's ConvModule
(``basic_module.N.basic_module.M.conv.weight``); here a plain module named ``conv`` gives
the same keys without mmcv.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Sample `x` (N, C, H, W) at pixel + `flow` (N, H, W, 2; x then y) bilinearly, corners aligned."""
    _, _, h, w = x.shape
    if flow.shape[1:3] != (h, w):
        raise ValueError(f"flow size {tuple(flow.shape[1:3])} does not match feature size {(h, w)}")
    ys = torch.arange(h, device=x.device)
    xs = torch.arange(w, device=x.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # Sample positions in float32 even under half-precision autocast: fp16 cannot hold
    # pixel coordinates of a few hundred to sub-pixel accuracy.
    grid = torch.stack((gx, gy), 2).float()
    moved = grid + flow.float()
    # Same arithmetic order as the reference: 2 * g / max(size - 1, 1) - 1.
    nx = 2.0 * moved[:, :, :, 0] / max(w - 1, 1) - 1.0
    ny = 2.0 * moved[:, :, :, 1] / max(h - 1, 1) - 1.0
    out = F.grid_sample(
        x.float(), torch.stack((nx, ny), dim=3), mode="bilinear", padding_mode=padding_mode, align_corners=True
    )
    return out.to(x.dtype)


class _ConvAct(nn.Module):
    """A 7x7 convolution with optional ReLU, keyed ``conv.*`` like mmcv's ConvModule."""

    def __init__(self, cin: int, cout: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=7, stride=1, padding=3)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve, then ReLU where configured."""
        y = self.conv(x)
        return F.relu(y) if self.relu else y


class SPyNetBasicModule(nn.Module):
    """One pyramid level: [ref, warped supp, flow] (8 ch) -> flow residual (2 ch)."""

    def __init__(self) -> None:
        super().__init__()
        chans = (8, 32, 64, 32, 16, 2)
        self.basic_module = nn.Sequential(
            *[_ConvAct(chans[i], chans[i + 1], relu=i < 4) for i in range(5)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refine the flow of one pyramid level."""
        return self.basic_module(x)


class SPyNet(nn.Module):
    """Six-level spatial-pyramid flow network (flow from `ref` to `supp`, in pixels)."""

    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList([SPyNetBasicModule() for _ in range(6)])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1))

    def compute_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow between images already sized to multiples of 32."""
        n, _, h, w = ref.shape
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(5):
            refs.append(F.avg_pool2d(refs[-1], kernel_size=2, stride=2, count_include_pad=False))
            supps.append(F.avg_pool2d(supps[-1], kernel_size=2, stride=2, count_include_pad=False))
        refs.reverse()
        supps.reverse()
        flow = refs[0].new_zeros(n, 2, h // 32, w // 32)
        for level, module in enumerate(self.basic_module):
            if level == 0:
                flow_up = flow
            else:
                flow_up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = flow_warp(supps[level], flow_up.permute(0, 2, 3, 1).contiguous(), padding_mode="border")
            flow = flow_up + module(torch.cat([refs[level], warped, flow_up], 1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow (N, 2, H, W) from `ref` to `supp` (N, 3, H, W in [0, 1]); channel 0 is x."""
        h, w = ref.shape[2:4]
        w_up = w if w % 32 == 0 else 32 * (w // 32 + 1)
        h_up = h if h % 32 == 0 else 32 * (h // 32 + 1)
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.compute_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        fx = flow[:, 0:1] * (float(w) / float(w_up))
        fy = flow[:, 1:2] * (float(h) / float(h_up))
        return torch.cat([fx, fy], 1)
