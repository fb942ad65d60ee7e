"""Frame-by-frame XMem inference, step for step the official ``InferenceCore``.

Images are normalised float tensors (3, H, W) on the network's device; masks are
one-hot float tensors (K, H, W) whose rows follow ``all_labels`` (the object ids the
core knows, in the order they were added). Each step pads to a multiple of 16 (centred
split), decides memory / deep-update frames exactly as the official code does, and
returns the un-padded probabilities (K+1, H, W), background first.

Beyond the official core (and unused by the parity path): references can be stored
as *permanent* memory, objects can be removed, and ``correct`` re-encodes the last
frame with a given mask, replacing what that frame put into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .memory import MemoryManager
from .network import XMem, aggregate

DEFAULT_CONFIG: dict = {
    # Track-Anything's tracker/config/config.yaml (XMem section), as in tests/fixtures/xmem/config.json
    "top_k": 30,
    "mem_every": 5,
    "deep_update_every": -1,
    "enable_long_term": True,
    "enable_long_term_count_usage": True,
    "max_mid_term_frames": 10,
    "min_mid_term_frames": 5,
    "num_prototypes": 128,
    "max_long_term_elements": 1000,
}


def pad_divide_by(x: Tensor, d: int = 16) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two axes up to multiples of `d`, split centred (extra row/col at the bottom/right)."""
    h, w = x.shape[-2:]
    new_h = h + (d - h % d) % d
    new_w = w + (d - w % d) % d
    lh, lw = (new_h - h) // 2, (new_w - w) // 2
    pad = (lw, new_w - w - lw, lh, new_h - h - lh)
    return F.pad(x, pad), pad


def unpad(x: Tensor, pad: tuple[int, int, int, int]) -> Tensor:
    """Crop what `pad_divide_by` added."""
    lw, uw, lh, uh = pad
    if lh + uh > 0:
        x = x[..., lh : x.shape[-2] - uh, :]
    if lw + uw > 0:
        x = x[..., lw : x.shape[-1] - uw]
    return x


@dataclass
class _LastStep:
    """What `correct` needs from the previous step."""

    image: Tensor
    f16: Tensor
    key: Tensor
    shrinkage: Tensor | None
    selection: Tensor | None
    hidden_before: Tensor | None
    pad: tuple[int, int, int, int]
    added_memory: bool
    permanent: bool
    deep_update_if_memory: bool


class InferenceCore:
    """One video's XMem state: memory, hidden state, frame counter, object list."""

    def __init__(self, network: XMem, config: dict):
        cfg = dict(DEFAULT_CONFIG)
        cfg.update(config)
        cfg["hidden_dim"] = network.hidden_dim
        self.config = cfg
        self.network = network
        self.mem_every = int(cfg["mem_every"])
        self.deep_update_every = int(cfg["deep_update_every"])
        self.enable_long_term = bool(cfg["enable_long_term"])
        self.deep_update_sync = self.deep_update_every < 0
        self.all_labels: list[int] = []
        self.clear_memory()

    def clear_memory(self) -> None:
        """Forget all memory and restart the frame counter (objects stay declared)."""
        self.curr_ti = -1
        self.last_mem_ti = 0
        self.last_deep_update_ti = -self.deep_update_every
        self.memory = MemoryManager(self.config)
        self.last: _LastStep | None = None
        self.reference_keys: list[object] = []  # one per frame in permanent memory, in store order

    def set_all_labels(self, all_labels: Sequence[int]) -> None:
        """Declare the objects (ids); masks and outputs follow this order."""
        self.all_labels = list(all_labels)

    def has_memory(self) -> bool:
        """True when any memory store holds something."""
        m = self.memory
        return m.work_mem.engaged() or m.long_mem.engaged() or m.perm_mem.engaged()

    def remove_object(self, obj: int) -> None:
        """Forget object `obj` everywhere (memory values, hidden state, object list)."""
        if obj not in self.all_labels:
            return
        row = self.all_labels.index(obj)
        self.memory.remove_object(obj, row)
        self.all_labels.remove(obj)
        self.last = None

    def remove_reference(self, ref_key: object) -> bool:
        """Take the permanent-memory frame stored under `ref_key` out again; False if there is none."""
        if ref_key is None or ref_key not in self.reference_keys:
            return False
        i = self.reference_keys.index(ref_key)
        hw = self.memory.HW
        self.memory.perm_mem.remove_range(i * hw, (i + 1) * hw)
        del self.reference_keys[i]
        if self.last is not None and self.last.permanent:
            self.last = None
        return True

    @torch.no_grad()
    def step(
        self,
        image: Tensor,
        mask: Tensor | None = None,
        valid_labels: Sequence[int] | None = None,
        end: bool = False,
        permanent: bool = False,
        capture: dict | None = None,
        ref_key: object = None,
    ) -> Tensor:
        """Process one frame; `mask` (K, H, W) makes it a reference. Returns probabilities (K+1, H, W).

        With `permanent`, the frame's memory goes to the permanent store (under `ref_key`,
        replacing an earlier reference with the same key) instead of working memory.
        """
        net = self.network
        if permanent:
            self.remove_reference(ref_key)
        self.curr_ti += 1
        image, pad = pad_divide_by(image, 16)
        image = image.unsqueeze(0)
        if capture is not None:
            capture["image_padded"] = image

        is_mem_frame = ((self.curr_ti - self.last_mem_ti >= self.mem_every) or (mask is not None)) and not end
        need_segment = (
            self.curr_ti > 0
            and (valid_labels is None or len(self.all_labels) != len(valid_labels))
            and any(self.memory.has_object(o) for o in self.all_labels)
        )
        deep_due = self.deep_update_sync or (
            self.curr_ti - self.last_deep_update_ti >= self.deep_update_every
        )
        is_deep_update = (
            (self.deep_update_sync and is_mem_frame)
            or (
                not self.deep_update_sync
                and self.curr_ti - self.last_deep_update_ti >= self.deep_update_every
            )
        ) and not end
        is_normal_update = (not self.deep_update_sync or not is_deep_update) and not end

        key, shrinkage, selection, f16, f8, f4 = net.encode_key(
            image, need_ek=(self.enable_long_term or need_segment), need_sk=is_mem_frame
        )
        if capture is not None:
            capture.update(key=key, shrinkage=shrinkage, selection=selection, f16=f16, f8=f8, f4=f4)
        hidden_before = self.memory.hidden

        pred_prob_with_bg = pred_prob_no_bg = None
        if need_segment:
            # objects that entered with this very frame have no memory yet: decode only the others
            mem_objs = [o for o in self.all_labels if self.memory.has_object(o)]
            rows = [self.all_labels.index(o) for o in mem_objs]
            subset = len(mem_objs) != len(self.all_labels)
            if subset:
                self.memory.create_hidden_state(len(self.all_labels), key)
            hidden_in = self.memory.hidden
            if subset and hidden_in is not None:
                hidden_in = hidden_in[:, rows]
            readout = self.memory.match_memory(key, selection, mem_objs, capture)
            if capture is not None:
                capture.update(memory_readout=readout, dec_hidden_in=hidden_in)
            hidden, logits, agg_logits, agg_prob = net.segment(
                (f16, f8, f4), readout, hidden_in, h_out=is_normal_update
            )
            if capture is not None:
                capture.update(decoder_logits=logits, decoder_prob=torch.sigmoid(logits))
                capture.update(agg_logits=agg_logits, agg_prob=agg_prob, dec_hidden_out=hidden)
            pred_prob_with_bg = agg_prob[0]
            if subset:
                full = pred_prob_with_bg.new_zeros((len(self.all_labels) + 1, *pred_prob_with_bg.shape[1:]))
                full[[0] + [r + 1 for r in rows]] = pred_prob_with_bg
                pred_prob_with_bg = full
            pred_prob_no_bg = pred_prob_with_bg[1:]
            if is_normal_update:
                if subset and hidden is not None:
                    new_hidden = self.memory.hidden.clone()
                    new_hidden[:, rows] = hidden
                    hidden = new_hidden
                self.memory.hidden = hidden

        if mask is not None:
            mask, _ = pad_divide_by(mask, 16)
            if pred_prob_no_bg is not None:
                mask_regions = mask.sum(0) > 0.5
                pred_prob_no_bg[:, mask_regions] = 0
                mask = mask.type_as(pred_prob_no_bg)
                if valid_labels is not None:
                    others = [i for i, obj in enumerate(self.all_labels) if obj not in valid_labels]
                    mask[others] = pred_prob_no_bg[others]
            pred_prob_with_bg = aggregate(mask, dim=0)[1]
            self.memory.create_hidden_state(len(self.all_labels), key)

        if pred_prob_with_bg is None:  # nothing to read from and no mask: everything is background
            pred_prob_with_bg = torch.zeros(
                (len(self.all_labels) + 1, *image.shape[-2:]), device=image.device
            )
            pred_prob_with_bg[0] = 1

        if is_mem_frame and len(self.all_labels) > 0:
            masks_in = pred_prob_with_bg[1:].unsqueeze(0)
            if capture is not None:
                capture.update(value_mask_in=masks_in, val_hidden_in=self.memory.hidden)
            value, hidden = net.encode_value(
                image, f16, self.memory.hidden, masks_in, is_deep_update=is_deep_update
            )
            if capture is not None:
                capture.update(value=value, val_hidden_out=hidden)
            self.memory.add_memory(
                key,
                shrinkage,
                value,
                self.all_labels,
                selection=selection if self.enable_long_term else None,
                permanent=permanent,
            )
            if permanent:
                self.reference_keys.append(ref_key)
            self.last_mem_ti = self.curr_ti
            if is_deep_update:
                self.memory.hidden = hidden
                self.last_deep_update_ti = self.curr_ti
        if capture is not None:
            capture["hidden_after"] = self.memory.hidden

        self.last = _LastStep(
            image=image,
            f16=f16,
            key=key,
            shrinkage=shrinkage,
            selection=selection,
            hidden_before=hidden_before,
            pad=pad,
            added_memory=bool(is_mem_frame and len(self.all_labels) > 0),
            permanent=permanent,
            deep_update_if_memory=bool(deep_due),
        )
        return unpad(pred_prob_with_bg, pad)

    @torch.no_grad()
    def correct(self, mask: Tensor) -> Tensor:
        """Replace the last frame's memory by an encoding of `mask` (K, H, W); returns its probabilities."""
        last = self.last
        if last is None:
            raise RuntimeError("nothing to correct: no frame was processed since the last reset")
        net = self.network
        mem = self.memory
        if last.added_memory:
            store = mem.perm_mem if last.permanent else mem.work_mem
            store.remove_last(mem.HW)
        shrinkage = last.shrinkage
        if shrinkage is None:
            shrinkage = net.key_proj.d_proj(last.f16) ** 2 + 1
        selection = last.selection
        if selection is None and self.enable_long_term:
            selection = torch.sigmoid(net.key_proj.e_proj(last.f16))
        mem.hidden = last.hidden_before
        mask, _ = pad_divide_by(mask, 16)
        prob = aggregate(mask, dim=0)[1]
        mem.create_hidden_state(len(self.all_labels), last.key)
        if len(self.all_labels) > 0:
            value, hidden = net.encode_value(
                last.image,
                last.f16,
                mem.hidden,
                prob[1:].unsqueeze(0),
                is_deep_update=last.deep_update_if_memory,
            )
            mem.add_memory(
                last.key,
                shrinkage,
                value,
                self.all_labels,
                selection=selection if self.enable_long_term else None,
                permanent=last.permanent,
            )
            if last.permanent and not last.added_memory:
                self.reference_keys.append(None)
            if last.deep_update_if_memory:
                mem.hidden = hidden
                self.last_deep_update_ti = self.curr_ti
            self.last_mem_ti = self.curr_ti
            self.last.added_memory = True
        self.last.shrinkage, self.last.selection = shrinkage, selection
        return unpad(prob, last.pad)
