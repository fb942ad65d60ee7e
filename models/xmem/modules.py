"""XMem's network blocks, written so that their state-dict names match the released XMem.pth.

Conventions (as in the official code): ``x`` features depend on the image only; ``g``
features also depend on a mask and carry an object axis, shape (B, K, C, H, W). The
ResNet trunks are cut after layer3 and use the official parameter names (the key
encoder calls its first stage ``res2``). Weights are never initialised randomly here:
every module is meant to be filled from a checkpoint or the synthetic formula.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------- ResNet trunks


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (stride on the 3x3 conv), eval-mode BatchNorm."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Residual bottleneck: 1x1 -> 3x3 -> 1x1 plus the (projected) input, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class BasicBlock(nn.Module):
    """ResNet-18 basic block, eval-mode BatchNorm."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """Two 3x3 convs plus the (projected) input, then ReLU."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


def make_stage(
    block: type, inplanes: int, planes: int, blocks: int, stride: int
) -> tuple[nn.Sequential, int]:
    """One ResNet stage (torchvision layout: a 1x1 conv + BN projection when the shape changes)."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


# --------------------------------------------------------------------------- group helpers


def interpolate_groups(g: Tensor, ratio: float, mode: str, align_corners: bool | None) -> Tensor:
    """Resize (B, K, C, H, W) features by `ratio`, objects folded into the batch."""
    b, k = g.shape[:2]
    out = F.interpolate(g.flatten(0, 1), scale_factor=ratio, mode=mode, align_corners=align_corners)
    return out.view(b, k, *out.shape[1:])


def upsample_groups(g: Tensor, ratio: float = 2) -> Tensor:
    """Bilinear upsampling (align_corners=False), as in the official decoder."""
    return interpolate_groups(g, ratio, "bilinear", False)


def downsample_groups(g: Tensor, ratio: float = 0.5) -> Tensor:
    """Area (average) downsampling, as in the official hidden updater."""
    return interpolate_groups(g, ratio, "area", None)


class GConv2D(nn.Conv2d):
    """A Conv2d applied to every object of (B, K, C, H, W) features."""

    def forward(self, g: Tensor) -> Tensor:  # type: ignore[override]
        """Fold objects into the batch, convolve, unfold."""
        b, k = g.shape[:2]
        out = super().forward(g.flatten(0, 1))
        return out.view(b, k, *out.shape[1:])


class GroupResBlock(nn.Module):
    """out = conv2(relu(conv1(relu(g)))) + (downsample(g) if in != out else g); no normalisation."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # registration order matters for the state dict: downsample first
        self.downsample = GConv2D(in_dim, out_dim, 3, padding=1) if in_dim != out_dim else None
        self.conv1 = GConv2D(in_dim, out_dim, 3, padding=1)
        self.conv2 = GConv2D(out_dim, out_dim, 3, padding=1)

    def forward(self, g: Tensor) -> Tensor:
        """Pre-activation residual block over object features."""
        out = self.conv2(F.relu(self.conv1(F.relu(g))))
        skip = g if self.downsample is None else self.downsample(g)
        return out + skip


def distribute_cat(x: Tensor, g: Tensor) -> Tensor:
    """Concatenate image features (B, C, H, W) in front of every object's features."""
    k = g.shape[1]
    return torch.cat([x.unsqueeze(1).expand(-1, k, -1, -1, -1), g], 2)


# --------------------------------------------------------------------------- CBAM


class _Flatten(nn.Module):
    """Flatten (B, C, 1, 1) to (B, C); index 0 of the channel-gate MLP (keeps key names)."""

    def forward(self, x: Tensor) -> Tensor:
        """Flatten all but the batch axis."""
        return x.view(x.size(0), -1)


class _ChannelGate(nn.Module):
    """sigmoid(MLP(avgpool) + MLP(maxpool)) * x."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(
            _Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Gate each channel by its pooled statistics."""
        size = (x.size(2), x.size(3))
        att = self.mlp(F.avg_pool2d(x, size, stride=size)) + self.mlp(F.max_pool2d(x, size, stride=size))
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class _SpatialConv(nn.Module):
    """Holds the 7x7 conv under the official name ``spatial.conv``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the 7x7 conv."""
        return self.conv(x)


class _SpatialGate(nn.Module):
    """sigmoid(conv7x7([max_c x, mean_c x])) * x."""

    def __init__(self):
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: Tensor) -> Tensor:
        """Gate each position by its channel statistics."""
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Channel gate followed by spatial gate."""

    def __init__(self, channels: int):
        super().__init__()
        self.ChannelGate = _ChannelGate(channels)
        self.SpatialGate = _SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        """Channel then spatial attention."""
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusionBlock(nn.Module):
    """g = block1([x, g]); g = block2(g + CBAM(g))."""

    def __init__(self, x_in_dim: int, g_in_dim: int, g_mid_dim: int, g_out_dim: int):
        super().__init__()
        self.block1 = GroupResBlock(x_in_dim + g_in_dim, g_mid_dim)
        self.attention = CBAM(g_mid_dim)
        self.block2 = GroupResBlock(g_mid_dim, g_out_dim)

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """Fuse image features into every object's features."""
        b, k = g.shape[:2]
        g = self.block1(distribute_cat(x, g))
        r = self.attention(g.flatten(0, 1)).view(b, k, *g.shape[2:])
        return self.block2(g + r)


# --------------------------------------------------------------------------- GRU-like updates


def gru_like(values: Tensor, h: Tensor, hidden_dim: int) -> Tensor:
    """XMem's hidden update: gates [forget, update, candidate]; h' = f*h*(1-u) + u*n."""
    forget = torch.sigmoid(values[:, :, :hidden_dim])
    update = torch.sigmoid(values[:, :, hidden_dim : hidden_dim * 2])
    new_value = torch.tanh(values[:, :, hidden_dim * 2 :])
    return forget * h * (1 - update) + update * new_value


class HiddenUpdater(nn.Module):
    """Decoder GRU: multi-scale features (16, 8 and 4 with the logit) -> new hidden."""

    def __init__(self, g_dims: tuple[int, int, int], mid_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.g16_conv = GConv2D(g_dims[0], mid_dim, 1)
        self.g8_conv = GConv2D(g_dims[1], mid_dim, 1)
        self.g4_conv = GConv2D(g_dims[2], mid_dim, 1)
        self.transform = GConv2D(mid_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g16: Tensor, g8: Tensor, g4: Tensor, h: Tensor) -> Tensor:
        """Sum the 1x1 projections at 1/16, concatenate the hidden, gate."""
        g = (
            self.g16_conv(g16)
            + self.g8_conv(downsample_groups(g8, 1 / 2))
            + self.g4_conv(downsample_groups(g4, 1 / 4))
        )
        return gru_like(self.transform(torch.cat([g, h], 2)), h, self.hidden_dim)


class HiddenReinforcer(nn.Module):
    """Value-encoder GRU ("deep update"): [value, hidden] -> new hidden."""

    def __init__(self, g_dim: int, hidden_dim: int):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.transform = GConv2D(g_dim + hidden_dim, hidden_dim * 3, 3, padding=1)

    def forward(self, g: Tensor, h: Tensor) -> Tensor:
        """Gate the hidden with the freshly encoded value."""
        return gru_like(self.transform(torch.cat([g, h], 2)), h, self.hidden_dim)


# --------------------------------------------------------------------------- encoders / decoder


class KeyEncoder(nn.Module):
    """ResNet-50 up to layer3: returns f16 (1024), f8 (512), f4 (256)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.res2, n = make_stage(Bottleneck, 64, 64, 3, 1)
        self.layer2, n = make_stage(Bottleneck, n, 128, 4, 2)
        self.layer3, n = make_stage(Bottleneck, n, 256, 6, 2)

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Image (B, 3, H, W) -> (f16, f8, f4)."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(f))), 3, stride=2, padding=1)
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class KeyProjection(nn.Module):
    """f16 -> key, shrinkage (d^2 + 1) and selection (sigmoid(e))."""

    def __init__(self, in_dim: int, key_dim: int):
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        self.d_proj = nn.Conv2d(in_dim, 1, 3, padding=1)
        self.e_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)

    def forward(self, x: Tensor, need_s: bool, need_e: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Key always; shrinkage/selection only when asked (as the official code does)."""
        shrinkage = self.d_proj(x) ** 2 + 1 if need_s else None
        selection = torch.sigmoid(self.e_proj(x)) if need_e else None
        return self.key_proj(x), shrinkage, selection


class ValueEncoder(nn.Module):
    """ResNet-18 up to layer3 over [RGB, mask, others], fused with f16, plus the deep-update GRU."""

    def __init__(self, value_dim: int, hidden_dim: int, single_object: bool = False):
        super().__init__()
        self.single_object = single_object
        self.conv1 = nn.Conv2d(4 if single_object else 5, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, n = make_stage(BasicBlock, 64, 64, 2, 1)
        self.layer2, n = make_stage(BasicBlock, n, 128, 2, 2)
        self.layer3, n = make_stage(BasicBlock, n, 256, 2, 2)
        self.fuser = FeatureFusionBlock(1024, 256, value_dim, value_dim)
        self.hidden_reinforce = HiddenReinforcer(value_dim, hidden_dim) if hidden_dim > 0 else None

    def forward(
        self,
        image: Tensor,
        f16: Tensor,
        h: Tensor | None,
        masks: Tensor,
        others: Tensor,
        is_deep_update: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Encode each object's value (B, K, value_dim, H/16, W/16); deep-update the hidden if asked."""
        g = masks.unsqueeze(2) if self.single_object else torch.stack([masks, others], 2)
        g = distribute_cat(image, g)
        b, k = g.shape[:2]
        g = self.bn1(self.conv1(g.flatten(0, 1)))
        g = F.relu(F.max_pool2d(g, 3, stride=2, padding=1))
        g = self.layer3(self.layer2(self.layer1(g)))
        g = self.fuser(f16, g.view(b, k, *g.shape[1:]))
        if is_deep_update and self.hidden_reinforce is not None and h is not None:
            h = self.hidden_reinforce(g, h)
        return g, h


class UpsampleBlock(nn.Module):
    """skip_conv(f) + bilinear x2 of g, then a GroupResBlock."""

    def __init__(self, skip_dim: int, g_up_dim: int, g_out_dim: int):
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, g_up_dim, 3, padding=1)
        self.out_conv = GroupResBlock(g_up_dim, g_out_dim)

    def forward(self, skip_f: Tensor, up_g: Tensor) -> Tensor:
        """Upsample object features and add the encoder skip features."""
        skip = self.skip_conv(skip_f)
        g = upsample_groups(up_g, 2)
        return self.out_conv(skip.unsqueeze(1).expand(-1, g.shape[1], -1, -1, -1) + g)


class Decoder(nn.Module):
    """Memory readout (+ hidden) and the multi-scale image features -> per-object logits (+ new hidden)."""

    def __init__(self, value_dim: int, hidden_dim: int):
        super().__init__()
        self.fuser = FeatureFusionBlock(1024, value_dim + hidden_dim, 512, 512)
        self.hidden_update = HiddenUpdater((512, 256, 256 + 1), 256, hidden_dim) if hidden_dim > 0 else None
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(
        self, f16: Tensor, f8: Tensor, f4: Tensor, hidden: Tensor | None, readout: Tensor, h_out: bool = True
    ) -> tuple[Tensor | None, Tensor]:
        """Return (new hidden or None, logits (B, K, H, W) at full padded resolution)."""
        b, k = readout.shape[:2]
        if self.hidden_update is not None:
            g16 = self.fuser(f16, torch.cat([readout, hidden], 2))
        else:
            g16 = self.fuser(f16, readout)
        g8 = self.up_16_8(f8, g16)
        g4 = self.up_8_4(f4, g8)
        logits = self.pred(F.relu(g4.flatten(0, 1)))
        new_hidden = None
        if h_out and self.hidden_update is not None:
            g4 = torch.cat([g4, logits.view(b, k, 1, *logits.shape[-2:])], 2)
            new_hidden = self.hidden_update(g16, g8, g4, hidden)
        logits = F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
        return new_hidden, logits.view(b, k, *logits.shape[-2:])
