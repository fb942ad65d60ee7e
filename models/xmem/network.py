"""The XMem network (state-dict compatible with XMem.pth) and how to load weights into it."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import WeightsError
from ..checkpoint import check_state_dict, load_state_dict_file
from ..synthetic import synthetic_state_dict
from .modules import Decoder, KeyEncoder, KeyProjection, ValueEncoder

SYNTHETIC_FORMULA = "synthetic-v2"


def aggregate(prob: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Soft aggregation: prepend bg = prod(1 - p), clamp, logit, softmax. Returns (logits, probs)."""
    new_prob = torch.cat([torch.prod(1 - prob, dim=dim, keepdim=True), prob], dim).clamp(1e-7, 1 - 1e-7)
    logits = torch.log(new_prob / (1 - new_prob))
    return logits, F.softmax(logits, dim=dim)


class XMem(nn.Module):
    """Key encoder, value encoder, key projection and decoder, registered in the official order."""

    def __init__(
        self, key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64, single_object: bool = False
    ):
        super().__init__()
        self.key_dim, self.value_dim, self.hidden_dim = key_dim, value_dim, hidden_dim
        self.single_object = single_object
        self.key_encoder = KeyEncoder()
        self.value_encoder = ValueEncoder(value_dim, hidden_dim, single_object)
        self.key_proj = KeyProjection(1024, key_dim)
        self.decoder = Decoder(value_dim, hidden_dim)

    def encode_key(
        self, frame: Tensor, need_sk: bool = True, need_ek: bool = True
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor, Tensor, Tensor]:
        """Image (B, 3, H, W) -> key, shrinkage, selection, f16, f8, f4."""
        f16, f8, f4 = self.key_encoder(frame)
        key, shrinkage, selection = self.key_proj(f16, need_sk, need_ek)
        return key, shrinkage, selection, f16, f8, f4

    def encode_value(
        self, frame: Tensor, f16: Tensor, h16: Tensor | None, masks: Tensor, is_deep_update: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """Masks (B, K, H, W) -> values (B, K, value_dim, h, w); 'others' = sum of the other objects' masks."""
        k = masks.shape[1]
        if k != 1:
            others = torch.cat(
                [torch.sum(masks[:, [j for j in range(k) if i != j]], dim=1, keepdim=True) for i in range(k)],
                1,
            )
        else:
            others = torch.zeros_like(masks)
        return self.value_encoder(frame, f16, h16, masks, others, is_deep_update)

    def segment(
        self,
        features: tuple[Tensor, Tensor, Tensor],
        readout: Tensor,
        hidden: Tensor | None,
        h_out: bool = True,
    ) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        """Decode: returns (new hidden or None, decoder logits, aggregated logits, aggregated probs with bg)."""
        new_hidden, logits = self.decoder(*features, hidden, readout, h_out=h_out)
        prob = torch.sigmoid(logits)
        agg_logits, agg_prob = aggregate(prob, dim=1)
        return new_hidden, logits, agg_logits, agg_prob


def dims_from_state_dict(sd: Mapping[str, Tensor]) -> dict:
    """Read key/value/hidden dims and single-object mode the way the official loader does."""
    try:
        key_dim = int(sd["key_proj.key_proj.weight"].shape[0])
        value_dim = int(sd["value_encoder.fuser.block2.conv2.weight"].shape[0])
    except KeyError as exc:
        raise WeightsError(f"not an XMem checkpoint: it has no {exc.args[0]}") from None
    t = sd.get("decoder.hidden_update.transform.weight")
    hidden_dim = int(t.shape[0]) // 3 if t is not None else 0
    return {"key_dim": key_dim, "value_dim": value_dim, "hidden_dim": hidden_dim}


def to_multi_object(sd: dict) -> dict:
    """Convert a single-object checkpoint (4-channel value conv1) by appending a zero 5th input channel."""
    w = sd.get("value_encoder.conv1.weight")
    if w is not None and w.ndim == 4 and w.shape[1] == 4:
        sd = dict(sd)
        sd["value_encoder.conv1.weight"] = torch.cat([w, torch.zeros_like(w[:, :1])], 1)
    return sd


def empty_network(
    key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64, single_object: bool = False
) -> XMem:
    """An XMem on the meta device (no memory, no random init), to be filled by `load_state_dict(assign=True)`."""
    with torch.device("meta"):
        return XMem(key_dim, value_dim, hidden_dim, single_object)


def template_state_dict(
    key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64, single_object: bool = False
) -> dict[str, Tensor]:
    """The network's state dict (meta tensors): keys, shapes and dtypes, in registration order."""
    return empty_network(key_dim, value_dim, hidden_dim, single_object).state_dict()


@functools.lru_cache(maxsize=1)
def synthetic_weights(
    key_dim: int = 64, value_dim: int = 512, hidden_dim: int = 64, single_object: bool = False
) -> dict[str, Tensor]:
    """The synthetic-v2 state dict for these dims (see tests/fixtures/xmem/README.md).

    Cached (it takes seconds to compute): networks built from it share these read-only tensors.
    """
    return synthetic_for_template(
        template_state_dict(key_dim, value_dim, hidden_dim, single_object), SYNTHETIC_FORMULA
    )


def synthetic_for_template(
    template: Mapping[str, Tensor], formula: str = SYNTHETIC_FORMULA
) -> dict[str, Tensor]:
    """models.synthetic's state dict for `template` (the XMem formula by default)."""
    return synthetic_state_dict(template, formula)


def network_from_state_dict(
    sd: Mapping[str, Tensor], what: str = "XMem checkpoint", single_object: bool = False
) -> XMem:
    """Build the network that `sd` describes and load it strictly (WeightsError in one line on a mismatch)."""
    sd = dict(sd)
    if not single_object:
        sd = to_multi_object(sd)
    dims = dims_from_state_dict(sd)
    net = empty_network(**dims, single_object=single_object)
    check_state_dict(net.state_dict(), sd, what)
    try:
        net.load_state_dict(
            {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}, strict=True, assign=True
        )
    except RuntimeError as exc:  # dtype/shape surprises check_state_dict cannot see
        raise WeightsError(f"{what} does not fit the network: {str(exc).strip().splitlines()[0]}") from exc
    return net.eval()


def load_network(weights: str | Path, device: str | torch.device = "cpu") -> tuple[XMem, str]:
    """Load XMem from a checkpoint path or the word 'synthetic'; returns (network on device, label)."""
    if str(weights) == "synthetic":
        net = network_from_state_dict(synthetic_weights(), "synthetic XMem weights")
        label = f"synthetic ({SYNTHETIC_FORMULA})"
    else:
        path = Path(weights)
        sd = load_state_dict_file(path, "XMem checkpoint")
        net = network_from_state_dict(sd, f"XMem checkpoint {path}")
        label = path.name
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device), label
