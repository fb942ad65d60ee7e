"""SAM 2.1 memory: the memory encoder (mask downsampler + ConvNeXt fuser) and the memory attention
(self- and cross-attention with 2-D axial rotary position embeddings)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .encoder import LayerNorm2d, SinePositionEncoding
from .heads import Attention


def axial_rope_table(dim: int, side: int, theta: float = 10000.0) -> Tensor:
    """Complex (side², dim/2) rotations: the first half of the pairs turn with x, the second with y."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(side * side, dtype=torch.float32)
    tx = (t % side).float()
    ty = torch.div(t, side, rounding_mode="floor").float()
    fx, fy = torch.outer(tx, freqs), torch.outer(ty, freqs)
    return torch.cat([torch.polar(torch.ones_like(fx), fx), torch.polar(torch.ones_like(fy), fy)], dim=-1)


def rotate(x: Tensor, table: Tensor) -> Tensor:
    """Apply the rotations in `table` (N, D/2) to consecutive channel pairs of x (B, H, N·r, D), tiled r times."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    reps = xc.shape[-2] // table.shape[0]
    if reps > 1:
        table = table.repeat(reps, 1)
    return torch.view_as_real(xc * table).flatten(3).type_as(x)


class RopeAttention(Attention):
    """Attention with axial RoPE on queries and (all but the last `exclude` object-pointer) keys.
    The rotation table is built for the token grid actually seen (side = sqrt(#queries)) and cached."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, theta: float = 10000.0):
        super().__init__(dim, heads, 1, kv_dim)
        self.head_dim = dim // heads
        self.theta = theta
        self._tables: dict[tuple[int, str], Tensor] = {}

    def table(self, n: int, device: torch.device) -> Tensor:
        side = math.sqrt(n)
        if side != int(side):
            raise ValueError(f"RoPE needs a square token grid, got {n} tokens")
        key = (int(side), str(device))
        if key not in self._tables:
            self._tables[key] = axial_rope_table(self.head_dim, int(side), self.theta).to(device)
        return self._tables[key]

    def forward(self, q: Tensor, k: Tensor, v: Tensor, exclude: int = 0) -> Tensor:  # type: ignore[override]
        q, k, v = self.split(self.q_proj(q)), self.split(self.k_proj(k)), self.split(self.v_proj(v))
        table = self.table(q.shape[-2], q.device)
        q = rotate(q, table)
        n_rope = k.size(-2) - exclude
        if n_rope > 0:
            k = torch.cat([rotate(k[:, :, :n_rope], table), k[:, :, n_rope:]], dim=2)
        return self.out_proj(self.merge(F.scaled_dot_product_attention(q, k, v)))


class MemoryAttentionLayer(nn.Module):
    """Pre-norm RoPE self-attention, RoPE cross-attention to memory (keys + pos), ReLU FFN."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, ffn: int = 2048, heads: int = 1):
        super().__init__()
        self.self_attn = RopeAttention(dim, heads)
        self.cross_attn_image = RopeAttention(dim, heads, kv_dim=mem_dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, memory: Tensor, memory_pos: Tensor, num_ptr_tokens: int) -> Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory + memory_pos, memory, exclude=num_ptr_tokens)
        y = self.norm3(x)
        return x + self.linear2(F.relu(self.linear1(y)))


class MemoryAttention(nn.Module):
    """Conditions the current frame's tokens (HW, B, C) on the memory tokens (N, B, mem_dim)."""

    def __init__(self, dim: int = 256, mem_dim: int = 64, num_layers: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(MemoryAttentionLayer(dim, mem_dim) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, curr: Tensor, curr_pos: Tensor, memory: Tensor, memory_pos: Tensor,
                num_ptr_tokens: int = 0) -> Tensor:
        x = (curr + 0.1 * curr_pos).transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_ptr_tokens)
        return self.norm(x).transpose(0, 1)


class MaskDownSampler(nn.Module):
    """Four stride-2 conv + LayerNorm2d + GELU stages (×4 channels each), then a 1×1 conv to `dim`."""

    def __init__(self, dim: int = 256, stages: int = 4):
        super().__init__()
        self.encoder = nn.Sequential()
        c_in = 1
        for _ in range(stages):
            c_out = c_in * 4
            self.encoder.append(nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1))
            self.encoder.append(LayerNorm2d(c_out))
            self.encoder.append(nn.GELU())
            c_in = c_out
        self.encoder.append(nn.Conv2d(c_in, dim, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depth-wise 7×7 conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, dim: int = 256):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of ConvNeXt blocks."""

    def __init__(self, dim: int = 256, num_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """Pixel features (B, C, h, w) + mask input (B, 1, 16h, 16w) -> memory features (B, mem_dim, h, w) and pos."""

    def __init__(self, dim: int = 256, mem_dim: int = 64):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(dim)
        self.pix_feat_proj = nn.Conv2d(dim, dim, kernel_size=1)
        self.fuser = Fuser(dim)
        self.position_encoding = SinePositionEncoding(mem_dim)
        self.out_proj = nn.Conv2d(dim, mem_dim, kernel_size=1)

    def forward(self, pix_feat: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        mask = self.mask_downsampler(mask)
        x = self.out_proj(self.fuser(self.pix_feat_proj(pix_feat) + mask))
        return x, self.position_encoding(x).to(x.dtype)
