"""SAM 2.1 prompt encoder and mask decoder (two-way transformer, IoU / object-score heads, high-res skips)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .encoder import LayerNorm2d, Mlp


class RandomFourierEncoding(nn.Module):
    """Positions in [0, 1]² -> sin/cos of a projection by a fixed Gaussian matrix (SAM's point encoding)."""

    def __init__(self, half_channels: int):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, half_channels)))

    def encode(self, coords: Tensor) -> Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, h: int, w: int) -> Tensor:
        """(C, h, w) encoding of the centres of an h×w grid."""
        ones = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        ys = (ones.cumsum(dim=0) - 0.5) / h
        xs = (ones.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([xs, ys], dim=-1)).permute(2, 0, 1)

    def points(self, coords: Tensor, size: tuple[int, int]) -> Tensor:
        """Pixel (x, y) coordinates in an image of `size` (H, W) -> (B, N, C)."""
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / size[1]
        coords[:, :, 1] = coords[:, :, 1] / size[0]
        return self.encode(coords.to(torch.float))


class PromptEncoder(nn.Module):
    """Points (labels −1 pad, 0 neg, 1 pos, 2/3 box corners) -> sparse tokens; a mask -> dense embedding."""

    def __init__(self, embed_dim: int, grid: int, image_size: int, mask_in_chans: int = 16):
        super().__init__()
        self.embed_dim = embed_dim
        self.grid = grid
        self.image_size = image_size
        self.pe_layer = RandomFourierEncoding(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * grid, 4 * grid)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def dense_pe(self) -> Tensor:
        """(1, C, grid, grid) encoding of the image-embedding positions."""
        return self.pe_layer.dense(self.grid, self.grid).unsqueeze(0)

    def embed_points(self, points: Tensor, labels: Tensor) -> Tensor:
        """(B, N, 2), (B, N) -> (B, N + 1, C): a padding point is always appended (no separate box input)."""
        points = points + 0.5
        points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
        labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        emb = self.pe_layer.points(points, (self.image_size, self.image_size))
        emb = torch.where((labels == -1).unsqueeze(-1), torch.zeros_like(emb) + self.not_a_point_embed.weight, emb)
        for value in range(4):
            emb = torch.where((labels == value).unsqueeze(-1), emb + self.point_embeddings[value].weight, emb)
        return emb

    def forward(self, points: Tensor | None, labels: Tensor | None, masks: Tensor | None) -> tuple[Tensor, Tensor]:
        """Sparse (B, N+1, C) point tokens (none without points) and the dense (B, C, g, g) embedding."""
        bs = points.shape[0] if points is not None else (masks.shape[0] if masks is not None else 1)
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self.embed_points(points, labels)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, self.grid, self.grid)
        return sparse, dense


class Attention(nn.Module):
    """Multi-head attention with an optional channel downsampling after the projections."""

    def __init__(self, dim: int, heads: int, downsample: int = 1, kv_dim: int | None = None):
        super().__init__()
        inner = dim // downsample
        kv_dim = kv_dim or dim
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(kv_dim, inner)
        self.v_proj = nn.Linear(kv_dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q, k, v = self.split(self.q_proj(q)), self.split(self.k_proj(k)), self.split(self.v_proj(v))
        return self.out_proj(self.merge(F.scaled_dot_product_attention(q, k, v)))


class TwoWayBlock(nn.Module):
    """Token self-attention, token->image, MLP, image->token (SAM's two-way block)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp((dim, mlp_dim, dim), act=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, heads, downsample=2)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> tuple[Tensor, Tensor]:
        if self.skip_first_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """Two two-way blocks and a final token->image attention."""

    def __init__(self, dim: int = 256, heads: int = 8, mlp_dim: int = 2048, depth: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(TwoWayBlock(dim, heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = Attention(dim, heads, downsample=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        attn = self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn), keys


class MaskDecoder(nn.Module):
    """Image embedding + prompt tokens -> 4 mask logits, IoU predictions, object-score logit, output tokens."""

    def __init__(self, dim: int = 256, stability_delta: float = 0.05, stability_thresh: float = 0.98,
                 dynamic_multimask: bool = True):
        super().__init__()
        self.num_mask_tokens = 4
        self.transformer = TwoWayTransformer(dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            Mlp((dim, dim, dim, dim // 8)) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = Mlp((dim, 256, 256, self.num_mask_tokens), sigmoid_output=True)
        self.pred_obj_score_head = Mlp((dim, dim, dim, 1))
        self.dynamic_multimask = dynamic_multimask
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def predict_all(self, image: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor,
                    high_res: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """All 4 masks (B, 4, 4h, 4w), IoUs (B, 4), mask tokens (B, 4, C), object score (B, 1)."""
        out_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0)
        out_tokens = out_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((out_tokens, sparse), dim=1)
        src = image + dense
        pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out = hs[:, 1, :]
        mask_out = hs[:, 2: 2 + self.num_mask_tokens, :]
        src = src.transpose(1, 2).view(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = up.shape
        masks = (hyper @ up.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(iou_out), mask_out, self.pred_obj_score_head(hs[:, 0, :])

    def stability(self, logits: Tensor) -> Tensor:
        """IoU between the masks thresholded at +delta and −delta (1 where both are empty)."""
        logits = logits.flatten(-2)
        inter = torch.sum(logits > self.stability_delta, dim=-1).float()
        union = torch.sum(logits > -self.stability_delta, dim=-1).float()
        return torch.where(union > 0, inter / union, 1.0)

    def forward(self, image: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor, multimask: bool,
                high_res: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(masks, ious, tokens for the object pointer, object score logits) as the SAM 2 rules pick them."""
        masks, ious, mask_tokens, obj_scores = self.predict_all(image, image_pe, sparse, dense, high_res)
        if multimask:
            masks, ious = masks[:, 1:], ious[:, 1:]
        elif self.dynamic_multimask and not self.training:
            masks, ious = self._stable_or_best(masks, ious)
        else:
            masks, ious = masks[:, 0:1], ious[:, 0:1]
        tokens = mask_tokens[:, 1:] if multimask else mask_tokens[:, 0:1]
        return masks, ious, tokens, obj_scores

    def _stable_or_best(self, masks: Tensor, ious: Tensor) -> tuple[Tensor, Tensor]:
        """Keep the single-mask output where it is stable, else the multimask output with the best IoU."""
        multi, multi_iou = masks[:, 1:], ious[:, 1:]
        best = torch.argmax(multi_iou, dim=-1)
        rows = torch.arange(multi_iou.size(0), device=ious.device)
        best_mask = multi[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single, single_iou = masks[:, 0:1], ious[:, 0:1]
        stable = self.stability(single) >= self.stability_thresh
        out_mask = torch.where(stable[..., None, None].expand_as(single), single, best_mask)
        out_iou = torch.where(stable.expand_as(single_iou), single_iou, best_iou)
        return out_mask, out_iou
