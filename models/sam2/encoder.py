"""SAM 2.1 image encoder: the Hiera trunk, the FPN neck and the sine position encoding of its levels."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Mlp(nn.Module):
    """Linear layers with an activation between them (`layers.i` keys, as in the checkpoints)."""

    def __init__(self, dims: Sequence[int], act: type[nn.Module] = nn.ReLU, sigmoid_output: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = act()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else self.act(layer(x))
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class SinePositionEncoding(nn.Module):
    """DETR-style 2-D sine/cosine encoding of an (H, W) grid, normalised to [0, 2π]; cached per size."""

    def __init__(self, channels: int, temperature: float = 10000.0):
        super().__init__()
        self.half = channels // 2
        self.temperature = temperature
        self._cache: dict[tuple[int, int], Tensor] = {}

    def grid(self, h: int, w: int, device: torch.device) -> Tensor:
        """(C, H, W) encoding of an h×w grid."""
        key = (h, w)
        if key not in self._cache:
            scale, eps = 2 * math.pi, 1e-6
            ys = torch.arange(1, h + 1, dtype=torch.float32).view(1, -1, 1).repeat(1, 1, w)
            xs = torch.arange(1, w + 1, dtype=torch.float32).view(1, 1, -1).repeat(1, h, 1)
            ys = ys / (ys[:, -1:, :] + eps) * scale
            xs = xs / (xs[:, :, -1:] + eps) * scale
            dim_t = torch.arange(self.half, dtype=torch.float32)
            dim_t = self.temperature ** (2 * (dim_t // 2) / self.half)
            px = xs[..., None] / dim_t
            py = ys[..., None] / dim_t
            px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
            py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
            self._cache[key] = torch.cat((py, px), dim=3).permute(0, 3, 1, 2)[0]
        return self._cache[key].to(device)

    def forward(self, x: Tensor) -> Tensor:
        return self.grid(x.shape[-2], x.shape[-1], x.device)[None].repeat(x.shape[0], 1, 1, 1)


def _pool(x: Tensor, pool: nn.Module | None) -> Tensor:
    """Max-pool a (B, H, W, C) map spatially."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _to_windows(x: Tensor, size: int) -> tuple[Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B·nW, size, size, C), zero-padding H and W up to multiples of `size`."""
    b, h, w, c = x.shape
    ph, pw = (size - h % size) % size, (size - w % size) % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def _from_windows(x: Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> Tensor:
    """Inverse of `_to_windows`, cropping the padding."""
    hp, wp = padded
    b = x.shape[0] // (hp * wp // size // size)
    x = x.reshape(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :] if (hp > hw[0] or wp > hw[1]) else x


class HieraAttention(nn.Module):
    """Multi-head self-attention whose queries may be max-pooled (stage transitions)."""

    def __init__(self, dim: int, dim_out: int, heads: int, q_pool: nn.Module | None):
        super().__init__()
        self.heads = heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        q, k, v = torch.unbind(self.qkv(x).reshape(b, h * w, 3, self.heads, -1), 2)
        if self.q_pool is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm (windowed) attention + MLP block; projects and pools the shortcut at stage changes."""

    def __init__(self, dim: int, dim_out: int, heads: int, window: int, q_stride: tuple[int, int] | None):
        super().__init__()
        self.dim, self.dim_out, self.window, self.q_stride = dim, dim_out, window, q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = HieraAttention(dim, dim_out, heads, self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp((dim_out, 4 * dim_out, dim_out), act=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool(self.proj(x), self.pool)
        window = self.window
        if window > 0:
            hw = (x.shape[1], x.shape[2])
            x, padded = _to_windows(x, window)
        x = self.attn(x)
        if self.q_stride:
            window = self.window // self.q_stride[0]
            hw = (shortcut.shape[1], shortcut.shape[2])
            padded = tuple(s + (window - s % window) % window for s in hw) if window > 0 else hw
        if self.window > 0:
            x = _from_windows(x, window, padded, hw)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Hierarchical ViT trunk: 4 stages, q-pooling between them; returns every stage's NCHW output."""

    def __init__(self, embed_dim: int, heads: int, stages: Sequence[int], global_blocks: Sequence[int],
                 window_spec: Sequence[int], bkg_size: Sequence[int]):
        super().__init__()
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        q_pool_blocks = [e + 1 for e in self.stage_ends[:-1]]
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, kernel_size=7, stride=4, padding=3)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *bkg_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.blocks = nn.ModuleList()
        stage, dim = 0, embed_dim
        for i in range(sum(stages)):
            window = 0 if i in global_blocks else window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(HieraBlock(dim, dim_out, heads, window, (2, 2) if i in q_pool_blocks else None))
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)
        h, w = x.shape[1:3]
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile([a // b for a, b in zip(pos.shape, win.shape, strict=True)])
        x = x + pos.permute(0, 2, 3, 1)
        outs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class FpnNeck(nn.Module):
    """1×1 lateral convs to d_model; nearest-neighbour top-down sums on the coarse levels only."""

    def __init__(self, d_model: int, channel_list: Sequence[int], top_down_levels: Sequence[int]):
        super().__init__()
        self.position_encoding = SinePositionEncoding(d_model)
        self.convs = nn.ModuleList()
        for c in channel_list:
            seq = nn.Sequential()
            seq.add_module("conv", nn.Conv2d(c, d_model, kernel_size=1))
            self.convs.append(seq)
        self.backbone_channel_list = list(channel_list)
        self.top_down_levels = list(top_down_levels)
        self.d_model = d_model

    def forward(self, xs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        n = len(self.convs) - 1
        out: list[Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        pos: list[Tensor] = [None] * (n + 1)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                up = F.interpolate(prev.to(torch.float32), scale_factor=2.0, mode="nearest")
                prev = lateral + up
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """Trunk + neck; drops the `scalp` coarsest levels. Returns (features, position encodings) fine→coarse."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1):
        super().__init__()
        self.trunk, self.neck, self.scalp = trunk, neck, scalp

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        feats, pos = self.neck(self.trunk(x))
        if self.scalp > 0:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return feats, pos
