"""The E2FGVI-HQ generator (Li et al., CVPR 2022), rebuilt without mmcv.

Module and parameter names reproduce the official ``InpaintGenerator`` state dict key for
key (see tests/fixtures/e2fgvi/manifest.json), so ``E2FGVI-HQ-CVPR22.pth`` loads with
strict matching. The deformable convolution is ``torchvision.ops.deform_conv2d``, which
uses the same DCNv2 offset/mask layout as mmcv's ``modulated_deform_conv2d``.

Departures from the reference that change results at most at rounding level:
attention runs over window chunks (bounded memory) or through
``scaled_dot_product_attention`` (GPU path); the two SPyNet directions run as one batch;
``forward`` accepts per-frame encoder features and flows computed earlier and can skip
decoding the reference frames, so a sliding-window caller need not recompute them.
Like the reference, ``forward`` takes any input size whose quarter-size flow and feature
maps agree and whose token map is a multiple of the 5x9 window (test.py's padding gives
60 x 108 multiples, or e.g. 56 x 104 for a 28 x 52 clip); other sizes fail as they do there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from ...errors import WeightsError
from ..checkpoint import check_state_dict, load_state_dict_file
from ..device import run_op
from ..synthetic import synthetic_state_dict
from .spynet import SPyNet, flow_warp

CHANNEL = 128  # feature channels at quarter resolution
HIDDEN = 512  # transformer width
KERNEL, STRIDE, PADDING = (7, 7), (3, 3), (3, 3)  # soft split / composition geometry
WINDOW = (5, 9)  # attention window in tokens
PAD_MULTIPLE = (60, 108)  # input height/width multiples the token windows need

# Keys whose values are construction constants, never produced by the synthetic formula.
CONSTANT_KEYS = frozenset(
    [f"transformer.{i}.attn.valid_ind_rolled" for i in range(8)] + ["update_spynet.mean", "update_spynet.std"]
)


def token_grid(size: tuple[int, int]) -> tuple[int, int]:
    """Soft-split token rows/cols for a quarter-resolution map of `size`."""
    return tuple(
        int((s + 2 * p - (k - 1) - 1) / st + 1) for s, k, st, p in zip(size, KERNEL, STRIDE, PADDING, strict=True)
    )


class Encoder(nn.Module):
    """Frame encoder: 3 x H x W -> 128 x H/4 x W/4, with grouped x0 re-injection."""

    GROUPS = (2, 4, 8, 1)

    def __init__(self) -> None:
        super().__init__()
        spec = [(3, 64, 2, 1), (64, 64, 1, 1), (64, 128, 2, 1), (128, 256, 1, 1), (256, 384, 1, 1),
                (640, 512, 1, 2), (768, 384, 1, 4), (640, 256, 1, 8), (512, 128, 1, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride, groups in spec:
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups), nn.LeakyReLU(0.2)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode a batch of frames (N, 3, H, W) in [-1, 1]."""
        convs = self.layers[0::2]
        out = x
        for conv in convs[:4]:
            out = F.leaky_relu(conv(out), 0.2)
        x0 = out
        n, _, h, w = x0.shape
        out = F.leaky_relu(convs[4](out), 0.2)
        for conv, g in zip(convs[5:], self.GROUPS, strict=True):
            # Interleave the groups: [x0_1, out_1, x0_2, out_2, ...].
            out = torch.cat([x0.view(n, g, -1, h, w), out.view(n, g, -1, h, w)], 2).view(n, -1, h, w)
            out = F.leaky_relu(conv(out), 0.2)
        return out


class Deconv(nn.Module):
    """Bilinear x2 upsampling (corners aligned) followed by a 3x3 convolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample then convolve."""
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))


class SecondOrderDeformableAlignment(nn.Module):
    """Flow-guided DCNv2 alignment of two propagated features (BasicVSR++ style)."""

    def __init__(self, cin: int = 2 * CHANNEL, cout: int = CHANNEL, deform_groups: int = 16,
                 max_residue_magnitude: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.deform_groups = deform_groups
        self.max_residue_magnitude = max_residue_magnitude
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * cout + 4, cout, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, cout, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(cout, 27 * deform_groups, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor, extra: torch.Tensor, flow_1: torch.Tensor,
                flow_2: torch.Tensor) -> torch.Tensor:
        """Align `x` = [prev prop, prop two back] using offsets predicted from `extra` and the flows."""
        out = self.conv_offset(torch.cat([extra, flow_1, flow_2], dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        off_1, off_2 = torch.chunk(offset, 2, dim=1)
        # DCN offsets are (y, x) pairs; flows are (x, y): swap and tile over taps and groups.
        off_1 = off_1 + flow_1.flip(1).repeat(1, off_1.size(1) // 2, 1, 1)
        off_2 = off_2 + flow_2.flip(1).repeat(1, off_2.size(1) // 2, 1, 1)
        offset = torch.cat([off_1, off_2], dim=1)
        mask = torch.sigmoid(mask)
        # Always float32: half-precision kernels are missing on some devices and the
        # offsets need the precision; under autocast the result goes back to x's dtype.
        # (on MPS, which has no deform_conv2d kernel, this one op runs on the CPU)
        out = run_op("deform_conv2d", deform_conv2d, x.float(), offset.float(), self.weight.float(),
                     self.bias.float(), stride=(1, 1), padding=(1, 1), dilation=(1, 1), mask=mask.float())
        return out.to(x.dtype)


class BidirectionalPropagation(nn.Module):
    """Second-order grid propagation of local features, backward then forward."""

    BRANCHES = ("backward_", "forward_")

    def __init__(self, channel: int = CHANNEL) -> None:
        super().__init__()
        self.channel = channel
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, name in enumerate(self.BRANCHES):
            self.deform_align[name] = SecondOrderDeformableAlignment(2 * channel, channel, deform_groups=16)
            self.backbone[name] = nn.Sequential(
                nn.Conv2d((2 + i) * channel, channel, 3, 1, 1), nn.LeakyReLU(0.1),
                nn.Conv2d(channel, channel, 3, 1, 1),
            )
        self.fusion = nn.Conv2d(2 * channel, channel, 1, 1, 0)

    def forward(self, x: torch.Tensor, flows_backward: torch.Tensor, flows_forward: torch.Tensor) -> torch.Tensor:
        """Propagate features x (B, L, C, h, w) with flows (B, L-1, 2, h, w); returns (B, L, C, h, w)."""
        b, t, c, h, w = x.shape
        spatial = [x[:, i] for i in range(t)]
        done: dict[str, list[torch.Tensor]] = {}
        for name in self.BRANCHES:
            backward = name == "backward_"
            order = range(t - 1, -1, -1) if backward else range(t)
            flows = flows_backward if backward else flows_forward
            props: list[torch.Tensor] = []
            feat_prop = x.new_zeros(b, c, h, w)
            for step, idx in enumerate(order):
                current = spatial[idx]
                if step > 0:
                    # The flow index is the step index in both branches (as in the reference).
                    flow_1 = flows[:, step - 1]
                    cond_1 = flow_warp(feat_prop, flow_1.permute(0, 2, 3, 1))
                    if step > 1:
                        feat_2 = props[-2]
                        flow_2 = flow_1 + flow_warp(flows[:, step - 2], flow_1.permute(0, 2, 3, 1))
                        cond_2 = flow_warp(feat_2, flow_2.permute(0, 2, 3, 1))
                    else:
                        feat_2 = torch.zeros_like(feat_prop)
                        flow_2 = torch.zeros_like(flow_1)
                        cond_2 = torch.zeros_like(cond_1)
                    cond = torch.cat([cond_1, current, cond_2], dim=1)
                    feat_prop = self.deform_align[name](torch.cat([feat_prop, feat_2], dim=1), cond, flow_1, flow_2)
                parts = [current] + ([done["backward_"][idx]] if not backward else []) + [feat_prop]
                feat_prop = feat_prop + self.backbone[name](torch.cat(parts, dim=1))
                props.append(feat_prop)
            done[name] = props[::-1] if backward else props
        outputs = [self.fusion(torch.cat([done["backward_"][i], done["forward_"][i]], dim=1)) for i in range(t)]
        return torch.stack(outputs, dim=1) + x


class SoftSplit(nn.Module):
    """Overlapping 7x7 patches (stride 3) of the feature map -> 512-d tokens."""

    def __init__(self, channel: int = CHANNEL, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Linear(math.prod(KERNEL) * channel, hidden)

    def forward(self, x: torch.Tensor, b: int, output_size: tuple[int, int]) -> torch.Tensor:
        """(B*T, C, h, w) -> tokens (B, T, rows, cols, hidden)."""
        f_h, f_w = token_grid(output_size)
        feat = F.unfold(x, kernel_size=KERNEL, stride=STRIDE, padding=PADDING).permute(0, 2, 1)
        feat = self.embedding(feat)
        return feat.view(b, -1, f_h, f_w, feat.size(2))


class SoftComp(nn.Module):
    """Tokens -> overlapping patches summed back into the feature map, then a 3x3 conv."""

    def __init__(self, channel: int = CHANNEL, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.embedding = nn.Linear(hidden, math.prod(KERNEL) * channel)
        self.bias_conv = nn.Conv2d(channel, channel, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor, t: int, output_size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, T, rows, cols, hidden) -> (B*T, C, h, w)."""
        b_, _, _, _, c_ = x.shape
        feat = self.embedding(x.view(b_, -1, c_))
        b, _, c = feat.shape
        feat = feat.view(b * t, -1, c).permute(0, 2, 1)
        feat = F.fold(feat, output_size=output_size, kernel_size=KERNEL, stride=STRIDE, padding=PADDING)
        return self.bias_conv(feat)


class FusionFeedForward(nn.Module):
    """F3N: Linear -> fold/normalise/unfold over the 7x7 patch layout -> GELU -> Linear."""

    def __init__(self, d_model: int = HIDDEN, hidden: int = 1960) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Linear(d_model, hidden))
        self.conv2 = nn.Sequential(nn.GELU(), nn.Linear(hidden, d_model))
        self._norm_cache: dict[tuple, torch.Tensor] = {}

    def _normalizer(self, output_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
        """Overlap count of the fold (one map per size, device and dtype)."""
        key = (tuple(output_size), like.device, like.dtype)
        norm = self._norm_cache.get(key)
        if norm is None:
            n_vecs = math.prod(token_grid(output_size))
            ones = like.new_ones(1, math.prod(KERNEL), n_vecs)
            norm = F.fold(ones, output_size=output_size, kernel_size=KERNEL, padding=PADDING, stride=STRIDE)
            self._norm_cache = {key: norm}
        return norm

    def forward(self, x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, T*rows*cols, d) -> same shape."""
        n_vecs = math.prod(token_grid(output_size))
        x = self.conv1(x)
        b, n, c = x.shape
        folded = F.fold(x.view(-1, n_vecs, c).permute(0, 2, 1), output_size=output_size,
                        kernel_size=KERNEL, padding=PADDING, stride=STRIDE)
        folded = folded / self._normalizer(output_size, folded)
        x = F.unfold(folded, kernel_size=KERNEL, padding=PADDING, stride=STRIDE)
        x = x.permute(0, 2, 1).contiguous().view(b, n, c)
        return self.conv2(x)


def _windows(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, H, W, C) -> (B*nWin, heads, T, 45, C/heads), windows row-major."""
    b, t, h, w, c = x.shape
    wh, ww = WINDOW
    x = x.view(b, t, h // wh, wh, w // ww, ww, c).permute(0, 2, 4, 1, 3, 5, 6)
    return x.reshape(-1, t, wh * ww, heads, c // heads).permute(0, 3, 1, 2, 4)


class WindowAttention(nn.Module):
    """Temporal focal attention: window tokens attend to window, rolled-neighbour and pooled tokens."""

    ROLLS = ((-2, -4), (-2, 4), (2, -4), (2, 4))  # (rows, cols): tl, tr, bl, br

    def __init__(self, dim: int = HIDDEN, num_heads: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        wh, ww = WINDOW
        eh, ew = wh // 2, ww // 2
        tl = torch.ones(wh, ww)
        tl[:-eh, :-ew] = 0
        tr = torch.ones(wh, ww)
        tr[:-eh, ew:] = 0
        bl = torch.ones(wh, ww)
        bl[eh:, :-ew] = 0
        br = torch.ones(wh, ww)
        br[eh:, ew:] = 0
        rolled = torch.stack((tl, tr, bl, br), 0).flatten()
        self.register_buffer("valid_ind_rolled", rolled.nonzero(as_tuple=False).view(-1))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.use_sdpa = False  # GPU fast path; the explicit path is the reference arithmetic
        self.max_attn_elements = 1 << 27  # chunk windows so one logits block stays below this

    def forward(self, x: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """x: LN1 tokens (B, T, H, W, C); pooled: (B, nWh, nWw, T, C). Returns (B, T, H, W, C)."""
        b, t, h, w, c = x.shape
        heads, hd = self.num_heads, c // self.num_heads
        wh, ww = WINDOW
        n_wh, n_ww = h // wh, w // ww
        q, k, v = self.qkv(x).split(c, dim=-1)
        q_w = _windows(q, heads).reshape(-1, heads, t * wh * ww, hd)
        k_w = _windows(k, heads).reshape(-1, heads, t * wh * ww, hd)
        v_w = _windows(v, heads).reshape(-1, heads, t * wh * ww, hd)

        def rolled(m: torch.Tensor) -> torch.Tensor:
            parts = [_windows(torch.roll(m, shifts=s, dims=(2, 3)), heads) for s in self.ROLLS]
            cat = torch.cat(parts, 3)[:, :, :, self.valid_ind_rolled]
            return cat.reshape(cat.shape[0], heads, -1, hd)

        # Pooled keys/values: each window sees the 5x9 neighbourhood of its pooled position.
        pooled = pooled.permute(0, 3, 1, 2, 4)  # B, T, nWh, nWw, C
        _, k_p, v_p = self.qkv(pooled).split(c, dim=-1)
        pad = (wh // 2, ww // 2)

        def unfolded(m: torch.Tensor) -> torch.Tensor:
            m = m.permute(0, 1, 4, 2, 3).reshape(b * t, c, n_wh, n_ww)
            u = F.unfold(m, kernel_size=WINDOW, stride=1, padding=pad)  # B*T, C*45, L
            u = u.view(b, t, c, wh, ww, -1).permute(0, 5, 1, 3, 4, 2)  # B, L, T, wh, ww, C
            u = u.reshape(-1, t, wh * ww, heads, hd).permute(0, 3, 1, 2, 4)
            return u.reshape(u.shape[0], heads, t * wh * ww, hd)

        k_all = torch.cat([k_w, rolled(k), unfolded(k_p)], 2)
        v_all = torch.cat([v_w, rolled(v), unfolded(v_p)], 2)
        # -100 (not -inf) on pooled positions that fall in the zero padding.
        ones = x.new_ones(1, 1, n_wh, n_ww)
        valid = F.unfold(ones, kernel_size=WINDOW, stride=1, padding=pad)[0].t()  # L, 45
        pool_bias = torch.where(valid > 0, 0.0, -100.0).to(x.dtype).repeat(1, t).repeat(b, 1)  # B*L, T*45
        n_keys = k_all.shape[2]
        n_pool = pool_bias.shape[1]
        bias = torch.cat([pool_bias.new_zeros(pool_bias.shape[0], n_keys - n_pool), pool_bias], 1)
        bias = bias[:, None, None, :]  # B*nWin, 1, 1, N

        nq = q_w.shape[2]
        per_window = heads * nq * n_keys
        step = max(1, self.max_attn_elements // max(per_window, 1))
        outs = []
        for s in range(0, q_w.shape[0], step):
            sl = slice(s, s + step)
            if self.use_sdpa:
                o = F.scaled_dot_product_attention(q_w[sl], k_all[sl], v_all[sl],
                                                   attn_mask=bias[sl].to(q_w.dtype), scale=self.scale)
            else:
                attn = (q_w[sl] * self.scale) @ k_all[sl].transpose(-2, -1)
                attn = attn + bias[sl]
                o = attn.softmax(dim=-1) @ v_all[sl]
            outs.append(o)
        o = torch.cat(outs, 0).transpose(1, 2).reshape(-1, nq, c)
        o = self.proj(o)
        o = o.view(b, n_wh, n_ww, t, wh, ww, c).permute(0, 3, 1, 4, 2, 5, 6)
        return o.reshape(b, t, h, w, c)


class TemporalFocalTransformerBlock(nn.Module):
    """x + attn(LN1 x), then + F3N(LN2 x); the focal level pools each window with a Linear(45, 1)."""

    def __init__(self, dim: int = HIDDEN, num_heads: int = 4) -> None:
        super().__init__()
        self.pool_layers = nn.ModuleList([nn.Linear(WINDOW[0] * WINDOW[1], 1)])
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FusionFeedForward(dim)

    def forward(self, x: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, T, rows, cols, C) -> same shape."""
        b, t, h, w, c = x.shape
        wh, ww = WINDOW
        if h % wh or w % ww:
            raise ValueError(f"token map {h}x{w} is not a multiple of the {wh}x{ww} window")
        shortcut = x
        y = self.norm1(x)
        win = y.view(b, t, h // wh, wh, w // ww, ww, c).permute(0, 2, 4, 1, 3, 5, 6).contiguous()
        win = win.view(b, h // wh, w // ww, t, wh * ww, c).transpose(4, 5)
        pooled = self.pool_layers[0](win).flatten(-2)  # B, nWh, nWw, T, C
        x = shortcut + self.attn(y, pooled)
        y = self.norm2(x)
        return x + self.mlp(y.view(b, t * h * w, c), output_size).view(b, t, h, w, c)


class InpaintGenerator(nn.Module):
    """E2FGVI-HQ: flows (SPyNet) -> encoder -> propagation -> focal transformer -> decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.decoder = nn.Sequential(
            Deconv(CHANNEL, 128), nn.LeakyReLU(0.2),
            nn.Conv2d(128, 64, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.2),
            Deconv(64, 64), nn.LeakyReLU(0.2),
            nn.Conv2d(64, 3, kernel_size=3, stride=1, padding=1),
        )
        self.feat_prop_module = BidirectionalPropagation(CHANNEL)
        self.ss = SoftSplit(CHANNEL, HIDDEN)
        self.sc = SoftComp(CHANNEL, HIDDEN)
        self.transformer = nn.Sequential(*[TemporalFocalTransformerBlock(HIDDEN, 4) for _ in range(8)])
        self.update_spynet = SPyNet()

    def set_attention(self, use_sdpa: bool | None = None, max_elements: int | None = None) -> None:
        """Choose the attention kernel (SDPA for the GPU fast path) and the chunk size."""
        for block in self.transformer:
            if use_sdpa is not None:
                block.attn.use_sdpa = use_sdpa
            if max_elements is not None:
                block.attn.max_attn_elements = max_elements

    def forward_bidirect_flow(self, local01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows between consecutive local frames (B, L, 3, H, W in [0, 1]) at quarter size."""
        b, l_t, c, h, w = local01.shape
        small = F.interpolate(local01.reshape(-1, c, h, w), size=(h // 4, w // 4), mode="bilinear",
                              align_corners=True)
        small = small.view(b, l_t, c, h // 4, w // 4)
        if l_t < 2:
            empty = small.new_zeros(b, 0, 2, h // 4, w // 4)
            return empty, empty.clone()
        a = small[:, :-1].reshape(-1, c, h // 4, w // 4)
        z = small[:, 1:].reshape(-1, c, h // 4, w // 4)
        # Two calls of L-1 pairs each, as the official forward_bidirect_flow: one batch of
        # 2(L-1) makes the convolutions block their sums differently (flows ~2e-6 apart, ~1e-4
        # on the images from 11 local frames on), which eats into the parity margins.
        flows_0 = self.update_spynet(a, z).view(b, l_t - 1, 2, h // 4, w // 4)
        flows_1 = self.update_spynet(z, a).view(b, l_t - 1, 2, h // 4, w // 4)
        return flows_0, flows_1

    def quarter_frames(self, masked_frames: torch.Tensor) -> torch.Tensor:
        """Masked frames (N, 3, Hp, Wp) in [-1, 1] -> [0, 1] at quarter size, as the flow network sees them."""
        _, _, h, w = masked_frames.shape
        return F.interpolate((masked_frames + 1) / 2, size=(h // 4, w // 4), mode="bilinear", align_corners=True)

    def pair_flows(self, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows first->second (flows_0) and second->first (flows_1) of quarter-size frame pairs (N, 3, h, w)."""
        n = first.shape[0]
        flows = self.update_spynet(torch.cat([first, second], 0), torch.cat([second, first], 0))
        return flows[:n], flows[n:]

    def forward(self, masked_frames: torch.Tensor | None, num_local_frames: int, *,
                enc_feat: torch.Tensor | None = None,
                flows: tuple[torch.Tensor, torch.Tensor] | None = None,
                decode_all: bool = True) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """masked_frames (B, T, 3, Hp, Wp) in [-1, 1], the first L local -> (tanh images (B*T, 3, Hp, Wp), flows).

        A caller that slides windows may pass per-frame encoder features `enc_feat`
        (B, T, 128, Hp/4, Wp/4) and `flows` it computed before (they depend on single
        frames and frame pairs only), and `decode_all=False` to decode only the local
        frames, whose predictions are the only ones used.
        """
        l_t = int(num_local_frames)
        if enc_feat is None or flows is None:
            if masked_frames is None:
                raise ValueError("masked_frames are needed unless both enc_feat and flows are given")
            # Any size the reference accepts is accepted (test.py pads to 60 x 108 multiples,
            # but leaves small frames short, e.g. 28 -> 56 rows); impossible sizes fail where
            # the reference fails: flow/feature size mismatch (flow_warp) or a token map that
            # is not a multiple of the attention window.
            b, t, ori_c, ori_h, ori_w = masked_frames.shape
        pred_flows = flows if flows is not None else self.forward_bidirect_flow((masked_frames[:, :l_t] + 1) / 2)
        if enc_feat is None:
            enc_feat = self.encoder(masked_frames.reshape(b * t, ori_c, ori_h, ori_w))
            _, c, h, w = enc_feat.shape
        else:
            b, t, c, h, w = enc_feat.shape
        size = (h, w)
        enc_feat = enc_feat.reshape(b, t, c, h, w)
        local_feat = self.feat_prop_module(enc_feat[:, :l_t], pred_flows[0], pred_flows[1])
        enc_feat = torch.cat((local_feat, enc_feat[:, l_t:]), dim=1)
        tokens = self.ss(enc_feat.view(-1, c, h, w), b, size)
        for block in self.transformer:
            tokens = block(tokens, size)
        trans_feat = self.sc(tokens, t, size).view(b, t, -1, h, w)
        enc_feat = enc_feat + trans_feat
        n_dec = t if decode_all else l_t
        output = self.decoder(enc_feat[:, :n_dec].reshape(b * n_dec, c, h, w))
        return torch.tanh(output), pred_flows


def build_generator(weights: str | Path | Mapping[str, torch.Tensor] = "synthetic") -> tuple[InpaintGenerator, str]:
    """A generator in eval mode holding `weights` ("synthetic", a .pth path, or a state dict), and its label.

    Raises WeightsError (one line) when the checkpoint is missing, unreadable or does not fit.
    """
    model = InpaintGenerator()
    template = model.state_dict()
    if isinstance(weights, str) and weights in ("synthetic", "synthetic-v1"):
        state = synthetic_state_dict(template, "synthetic-v1", keep=CONSTANT_KEYS)
        label = "synthetic-v1"
    elif isinstance(weights, Mapping):
        state = dict(weights)
        label = "state-dict"
    else:
        state = load_state_dict_file(weights, what="E2FGVI-HQ checkpoint")
        label = Path(weights).name
    check_state_dict(template, state, "E2FGVI-HQ checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # dtype/shape problems check_state_dict cannot see
        raise WeightsError(f"E2FGVI-HQ checkpoint does not fit the network: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return model, label
