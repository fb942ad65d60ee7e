"""The SAM 2.1 model: configs of the four official sizes, the building blocks wired together, the
per-frame operations the video predictor composes, and strict loading of official or synthetic weights."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import WeightsError
from ..checkpoint import check_state_dict, load_state_dict_file
from ..synthetic import synthetic_state_dict
from .encoder import FpnNeck, Hiera, ImageEncoder, Mlp
from .heads import MaskDecoder, PromptEncoder
from .memory import MemoryAttention, MemoryEncoder

SYNTHETIC_FORMULA = "synthetic-sam2-v1"
NO_OBJ_SCORE = -1024.0  # low-res logits of an object judged absent
MEAN = (0.485, 0.456, 0.406)  # ImageNet normalisation of the input frames
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Sam2Config:
    """The hyper-parameters that differ between sizes (from the official sam2.1_hiera_*.yaml files)."""

    embed_dim: int
    heads: int
    stages: tuple[int, ...]
    global_blocks: tuple[int, ...]
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    bkg_size: tuple[int, int] = (14, 14)


CONFIGS: dict[str, Sam2Config] = {
    "tiny": Sam2Config(96, 1, (1, 2, 7, 2), (5, 7, 9), bkg_size=(7, 7)),
    "small": Sam2Config(96, 1, (1, 2, 11, 2), (7, 10, 13), bkg_size=(7, 7)),
    "base_plus": Sam2Config(112, 2, (2, 3, 16, 3), (12, 16, 20)),
    "large": Sam2Config(144, 2, (2, 6, 36, 4), (23, 33, 43), window_spec=(8, 4, 16, 8), bkg_size=(7, 7)),
}
SIZES = tuple(CONFIGS)


@dataclass
class Features:
    """One frame's image features: the three FPN levels (after conv_s0/conv_s1 on the fine two) and their
    position encodings, NCHW."""

    fpn: list[Tensor]
    pos: list[Tensor]

    def tokens(self) -> tuple[Tensor, Tensor]:
        """The coarsest level and its encoding as (HW, B, C) token sequences."""
        return (self.fpn[-1].flatten(2).permute(2, 0, 1), self.pos[-1].flatten(2).permute(2, 0, 1))

    def top_map(self) -> Tensor:
        """The coarsest level as (B, C, h, w) viewed from its token sequence (channels-last strides, as the
        official code passes it; convolutions round differently on that layout)."""
        b, c, h, w = self.fpn[-1].shape
        return self.tokens()[0].permute(1, 2, 0).view(b, c, h, w)


@dataclass
class HeadsOut:
    """What the SAM heads give for one object on one frame."""

    low_res_multimasks: Tensor
    high_res_multimasks: Tensor
    ious: Tensor
    low_res_masks: Tensor
    high_res_masks: Tensor
    obj_ptr: Tensor
    object_score_logits: Tensor


class Sam2(nn.Module):
    """SAM 2.1 with the SAM 2.1 inference settings (multimask for 0–1 points, object pointers with signed
    projected temporal encodings, occlusion head, no_obj_embed_spatial, 7 memory frames)."""

    num_maskmem = 7
    max_obj_ptrs = 16
    hidden_dim = 256
    mem_dim = 64
    sigmoid_scale = 20.0
    sigmoid_bias = -10.0

    def __init__(self, size: str = "tiny", image_size: int = 1024, dynamic_multimask: bool = True,
                 stability_delta: float = 0.05, stability_thresh: float = 0.98):
        super().__init__()
        if size not in CONFIGS:
            raise WeightsError(f"unknown SAM 2.1 size {size!r}; known: {', '.join(SIZES)}")
        if image_size % 32:
            raise WeightsError(f"SAM 2.1 image_size must be a multiple of 32, got {image_size}")
        cfg = CONFIGS[size]
        self.size, self.image_size, self.grid = size, image_size, image_size // 16
        trunk = Hiera(cfg.embed_dim, cfg.heads, cfg.stages, cfg.global_blocks, cfg.window_spec, cfg.bkg_size)
        self.image_encoder = ImageEncoder(trunk, FpnNeck(256, trunk.channel_list, (2, 3)), scalp=1)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(256, 64, 4)
        self.memory_encoder = MemoryEncoder(256, 64)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(self.num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, self.hidden_dim))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, self.hidden_dim))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
        self.sam_prompt_encoder = PromptEncoder(256, self.grid, image_size)
        self.sam_mask_decoder = MaskDecoder(256, stability_delta, stability_thresh, dynamic_multimask)
        self.obj_ptr_proj = Mlp((256, 256, 256, 256))
        self.obj_ptr_tpos_proj = nn.Linear(self.hidden_dim, self.mem_dim)

    # --- image -----------------------------------------------------------------------------------
    def encode_image(self, image: Tensor) -> Features:
        """Normalised (B, 3, S, S) image -> features, with the decoder's high-res convs applied once."""
        fpn, pos = self.image_encoder(image)
        fpn = list(fpn)
        fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
        fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return Features(fpn, list(pos))

    # --- SAM heads -------------------------------------------------------------------------------
    def sam_heads(self, pix_feat: Tensor, high_res: list[Tensor], points: Tensor | None = None,
                  labels: Tensor | None = None, mask_input: Tensor | None = None,
                  multimask: bool = False) -> HeadsOut:
        """Prompt encoder + mask decoder on memory-conditioned features (B, C, g, g); absent objects get
        NO_OBJ_SCORE logits and the no-object pointer."""
        b, device = pix_feat.size(0), pix_feat.device
        if points is None:
            points = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        if mask_input is not None and mask_input.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_input = F.interpolate(mask_input.float(), size=self.sam_prompt_encoder.mask_input_size,
                                       align_corners=False, mode="bilinear", antialias=True)
        sparse, dense = self.sam_prompt_encoder(points, labels, mask_input)
        low_multi, ious, tokens, scores = self.sam_mask_decoder(
            pix_feat, self.sam_prompt_encoder.dense_pe(), sparse, dense, multimask, high_res)
        present = scores > 0
        low_multi = torch.where(present[:, None, None], low_multi, NO_OBJ_SCORE).float()
        high_multi = F.interpolate(low_multi, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        token = tokens[:, 0]
        if multimask:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low, high = low_multi[rows, best].unsqueeze(1), high_multi[rows, best].unsqueeze(1)
            if tokens.size(1) > 1:
                token = tokens[rows, best]
        else:
            low, high = low_multi, high_multi
        ptr = self.obj_ptr_proj(token)
        lam = present.float()
        ptr = lam * ptr
        ptr = ptr + (1 - lam) * self.no_obj_ptr
        return HeadsOut(low_multi, high_multi, ious, low, high, ptr, scores)

    def mask_as_output(self, pix_feat: Tensor, high_res: list[Tensor], mask: Tensor) -> HeadsOut:
        """A binary (B, 1, S, S) mask prompt used as the output directly (logits ±10); the pointer still
        comes from the SAM heads with the mask as dense prompt (on features without memory)."""
        m = mask.float()
        high = m * 20.0 + -10.0
        low = F.interpolate(high, size=(high.size(-2) // 4, high.size(-1) // 4), align_corners=False,
                            mode="bilinear", antialias=True)
        ious = mask.new_ones(mask.size(0), 1).float()
        ptr = self.sam_heads(pix_feat, high_res, mask_input=self.mask_downsample(m)).obj_ptr
        lam = torch.any(mask.flatten(1).float() > 0.0, dim=1)[..., None].float()
        scores = 20.0 * lam + -10.0
        ptr = lam * ptr
        ptr = ptr + (1 - lam) * self.no_obj_ptr
        return HeadsOut(low, high, ious, low, high, ptr, scores)

    # --- memory ----------------------------------------------------------------------------------
    def encode_memory(self, feats: Features, high_res_masks: Tensor, object_score_logits: Tensor,
                      from_points: bool) -> tuple[Tensor, Tensor]:
        """(memory features float32, pos) from the raw top-level features and the high-res mask logits:
        binarised when the mask came from clicks, else sigmoid; ×20 −10; no-object embedding when absent."""
        pix = feats.top_map()
        m = (high_res_masks > 0).float() if from_points else torch.sigmoid(high_res_masks)
        m = m * self.sigmoid_scale
        m = m + self.sigmoid_bias
        mem, pos = self.memory_encoder(pix, m)
        absent = 1 - (object_score_logits > 0).float()
        mem += absent[..., None, None] * self.no_obj_embed_spatial[..., None, None].expand(*mem.shape)
        return mem, pos

    def no_memory_features(self, feats: Features) -> Tensor:
        """Features of a first conditioning frame: the top level plus the learned no-memory embedding."""
        curr, _ = feats.tokens()
        b, c = curr.size(1), self.hidden_dim
        return (curr + self.no_mem_embed).permute(1, 2, 0).view(b, c, self.grid, self.grid)

    def attend_memory(self, feats: Features, memory: Tensor, memory_pos: Tensor, num_ptr_tokens: int) -> Tensor:
        """Top-level features conditioned on memory tokens (N, B, mem_dim) -> (B, C, g, g)."""
        curr, curr_pos = feats.tokens()
        out = self.memory_attention(curr, curr_pos, memory, memory_pos, num_ptr_tokens)
        b = curr.size(1)
        return out.permute(1, 2, 0).view(b, self.hidden_dim, self.grid, self.grid)

    def high_res_features(self, feats: Features) -> list[Tensor]:
        """The two fine levels for the decoder's skips, viewed through token layout like the official code."""
        return [f.flatten(2).permute(2, 0, 1).permute(1, 2, 0).view(f.shape) for f in feats.fpn[:2]]

    def obj_ptr_pos(self, offsets: list[int], num_frames: int, device: torch.device) -> Tensor:
        """Projected 1-D sine encodings of signed frame offsets, normalised by the pointer window."""
        t_max = min(num_frames, self.max_obj_ptrs) - 1
        pos = torch.tensor(offsets).to(device=device)
        pos = sine_1d(pos / t_max, self.hidden_dim)
        return self.obj_ptr_tpos_proj(pos)


def sine_1d(pos: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Transformer-style sine/cosine encoding of scalar positions -> (N, dim)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    emb = pos.unsqueeze(-1) / dim_t
    return torch.cat([emb.sin(), emb.cos()], dim=-1)


# --- building and loading --------------------------------------------------------------------------
def empty_network(size: str = "tiny", image_size: int = 1024) -> Sam2:
    """A Sam2 on the meta device (no memory used), to be filled by `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return Sam2(size, image_size)


def template_state_dict(size: str = "tiny") -> dict[str, Tensor]:
    """Keys, shapes and dtypes (meta tensors) of a size's state dict, in registration order."""
    return empty_network(size, 1024).state_dict()


def size_from_state_dict(sd: Mapping[str, Tensor]) -> str:
    """Which of the four sizes a state dict is, from the trunk width and depth."""
    try:
        width = int(sd["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
    except KeyError:
        raise WeightsError("not a SAM 2.1 checkpoint: it has no image_encoder.trunk.patch_embed.proj.weight") from None
    depth = len({k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")})
    for name, cfg in CONFIGS.items():
        if cfg.embed_dim == width and sum(cfg.stages) == depth:
            return name
    raise WeightsError(f"not a SAM 2.1 checkpoint: trunk width {width} and depth {depth} match no size")


@functools.lru_cache(maxsize=2)
def synthetic_weights(size: str = "tiny") -> dict[str, Tensor]:
    """The synthetic-sam2-v1 state dict of a size (cached; networks built from it share the tensors)."""
    return synthetic_state_dict(template_state_dict(size), SYNTHETIC_FORMULA)


def network_from_state_dict(sd: Mapping[str, Tensor], image_size: int = 1024, what: str = "SAM 2.1 checkpoint",
                            **kwargs: object) -> Sam2:
    """Build the size `sd` describes at `image_size` and load it with strict=True (one-line WeightsError)."""
    size = size_from_state_dict(sd)
    with torch.device("meta"):
        net = Sam2(size, image_size, **kwargs)
    check_state_dict(net.state_dict(), sd, what)
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()},
                            strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{what} does not fit the network: {str(exc).strip().splitlines()[0]}") from exc
    return net.eval()


def load_network(weights: str | Path, size: str = "tiny", image_size: int = 1024,
                 device: str | torch.device = "cpu", **kwargs: object) -> tuple[Sam2, str]:
    """A checkpoint path, or 'synthetic' (then `size` picks the shape) -> (network on device, label)."""
    if str(weights) == "synthetic":
        net = network_from_state_dict(synthetic_weights(size), image_size, "synthetic SAM 2.1 weights", **kwargs)
        label = f"synthetic ({SYNTHETIC_FORMULA}, {size})"
    else:
        path = Path(weights)
        net = network_from_state_dict(load_state_dict_file(path, "SAM 2.1 checkpoint"), image_size,
                                      f"SAM 2.1 checkpoint {path}", **kwargs)
        label = f"{path.name} ({net.size})"
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device), label
