"""SAM 2.1 video inference with an explicit state: the official video predictor's semantics
(init_state / add_new_points_or_box / add_new_mask / propagate_in_video / reset_state), written anew.

Frames come from a callable (`get_image(i) -> normalised float32 (3, S, S)`), so nothing requires the
whole video in memory; image features are cached for the last `feature_cache` frames only. What the
official code does and we must match (tests/fixtures/sam2/README.md §7): memory features stored in
bfloat16; absent objects get −1024 logits; multimask for 0–1 prompt points with the dynamic-stability
rule otherwise; clicks on a tracked frame go to the non-conditioning outputs; no hole filling.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import InputError
from .network import NO_OBJ_SCORE, Features, Sam2

COND, NON_COND = "cond", "non_cond"
Tap = Callable[[str, Tensor], None]


@dataclass
class ObjectTrack:
    """Prompts and per-frame outputs of one object (the official per-object slices of the state)."""

    points: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)  # frame -> (coords, labels)
    masks: dict[int, Tensor] = field(default_factory=dict)  # frame -> (1, 1, S, S) float mask prompt
    out: dict[str, dict[int, dict]] = field(default_factory=lambda: {COND: {}, NON_COND: {}})
    temp: dict[str, dict[int, dict]] = field(default_factory=lambda: {COND: {}, NON_COND: {}})
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse


@dataclass
class VideoState:
    """Everything one video's tracking needs besides the network."""

    get_image: Callable[[int], Tensor]
    num_frames: int
    video_height: int
    video_width: int
    device: torch.device
    feature_cache: int = 1
    objects: OrderedDict[int, ObjectTrack] = field(default_factory=OrderedDict)  # obj id -> track
    features: OrderedDict[int, Features] = field(default_factory=OrderedDict)
    maskmem_pos: Tensor | None = None

    @property
    def obj_ids(self) -> list[int]:
        return list(self.objects)


def _first_cond_frame(state: VideoState) -> int:
    return min(t for o in state.objects.values() for t in o.out[COND])


class VideoPredictor:
    """The official SAM 2.1 video-predictor procedure on our network (float32 unless autocast is on)."""

    max_cond_frames_in_attn = -1
    memory_temporal_stride = 1

    def __init__(self, net: Sam2, tap: Tap | None = None, corrections_as_cond: bool = False):
        self.net = net
        self.tap = tap  # called with (name, tensor) at the points the parity fixtures record
        # the official add_all_frames_to_correct_as_cond: prompts on tracked frames become conditioning frames
        self.corrections_as_cond = corrections_as_cond

    @property
    def image_size(self) -> int:
        return self.net.image_size

    # --- state -----------------------------------------------------------------------------------
    def init_state(self, get_image: Callable[[int], Tensor], num_frames: int, video_height: int,
                   video_width: int, feature_cache: int = 1) -> VideoState:
        """A fresh state over `num_frames` frames read on demand from `get_image`."""
        if num_frames < 1:
            raise InputError("the video has no frames")
        device = next(self.net.parameters()).device
        return VideoState(get_image, int(num_frames), int(video_height), int(video_width), device,
                          max(1, int(feature_cache)))

    def reset_state(self, state: VideoState) -> None:
        """Forget all objects, prompts and outputs; keep the frames (and cached features)."""
        state.objects.clear()

    def _object(self, state: VideoState, obj_id: int) -> ObjectTrack:
        return state.objects.setdefault(int(obj_id), ObjectTrack())

    def _check_frame(self, state: VideoState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise InputError(f"frame {frame_idx} is outside the video (0..{state.num_frames - 1})")

    # --- features --------------------------------------------------------------------------------
    def features(self, state: VideoState, frame_idx: int) -> Features:
        """Image features of a frame, from the bounded cache or computed."""
        feats = state.features.get(frame_idx)
        if feats is None:
            image = state.get_image(frame_idx).to(state.device).float().unsqueeze(0)
            fpn, pos = self.net.image_encoder(image)
            if self.tap:
                for i, (f, p) in enumerate(zip(fpn, pos, strict=True)):
                    self.tap(f"backbone_fpn{i}", f)
                    self.tap(f"vision_pos_enc{i}", p)
            fpn = list(fpn)
            fpn[0] = self.net.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.net.sam_mask_decoder.conv_s1(fpn[1])
            if self.tap:
                self.tap("backbone_fpn0_after_conv_s0", fpn[0])
                self.tap("backbone_fpn1_after_conv_s1", fpn[1])
            feats = Features(fpn, list(pos))
            state.features[frame_idx] = feats
            while len(state.features) > state.feature_cache:
                state.features.popitem(last=False)
        else:
            state.features.move_to_end(frame_idx)
        return feats

    # --- prompts ---------------------------------------------------------------------------------
    def add_new_points_or_box(self, state: VideoState, frame_idx: int, obj_id: int, points=None, labels=None,
                              clear_old_points: bool = True, normalize_coords: bool = True,
                              box=None, cond: bool | None = None) -> tuple[int, list[int], Tensor]:
        """Clicks (label 1/0) and/or a box on one frame for one object -> (frame, obj ids, video-res logits).
        `cond` forces the frame into (True) or out of (False) the conditioning memory; None = official rule."""
        self._check_frame(state, frame_idx)
        if (points is None) != (labels is None):
            raise InputError("points and labels must be given together")
        if points is None and box is None:
            raise InputError("give at least one point or a box")
        pts = torch.zeros(0, 2, dtype=torch.float32) if points is None else torch.as_tensor(points, dtype=torch.float32)
        lab = torch.zeros(0, dtype=torch.int32) if labels is None else torch.as_tensor(labels, dtype=torch.int32)
        pts = pts.reshape(1, -1, 2)
        lab = lab.reshape(1, -1)
        if pts.shape[1] != lab.shape[1]:
            raise InputError(f"{pts.shape[1]} points but {lab.shape[1]} labels")
        if box is not None:
            if not clear_old_points:
                raise InputError("a box replaces earlier clicks: use clear_old_points=True with a box")
            box_t = torch.as_tensor(box, dtype=torch.float32).reshape(1, 2, 2)
            pts = torch.cat([box_t, pts], dim=1)
            lab = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), lab], dim=1)
        if normalize_coords:
            pts = pts / torch.tensor([state.video_width, state.video_height])
        pts = (pts * self.image_size).to(state.device)
        lab = lab.to(state.device)
        obj = self._object(state, obj_id)
        old = None if clear_old_points else obj.points.get(frame_idx)
        if old is not None:
            pts, lab = torch.cat([old[0], pts], dim=1), torch.cat([old[1], lab], dim=1)
        obj.points[frame_idx] = (pts, lab)
        obj.masks.pop(frame_idx, None)
        return self._add_prompt(state, obj, frame_idx, points=(pts, lab), mask=None, cond=cond)

    def add_new_mask(self, state: VideoState, frame_idx: int, obj_id: int, mask,
                     cond: bool | None = None) -> tuple[int, list[int], Tensor]:
        """A binary (H, W) mask for one object on one frame -> (frame, obj ids, video-res logits)."""
        self._check_frame(state, frame_idx)
        m = torch.as_tensor(mask)
        if m.dim() != 2:
            raise InputError(f"a mask prompt must be 2-D (H, W), got shape {tuple(m.shape)}")
        m = m.to(torch.bool)[None, None].float().to(state.device)
        s = self.image_size
        if m.shape[-2:] != (s, s):
            m = F.interpolate(m, size=(s, s), align_corners=False, mode="bilinear", antialias=True)
            m = (m >= 0.5).float()
        obj = self._object(state, obj_id)
        obj.masks[frame_idx] = m
        obj.points.pop(frame_idx, None)
        return self._add_prompt(state, obj, frame_idx, points=None, mask=m, cond=cond)

    def _add_prompt(self, state: VideoState, obj: ObjectTrack, frame_idx: int,
                    points: tuple[Tensor, Tensor] | None, mask: Tensor | None,
                    cond: bool | None = None) -> tuple[int, list[int], Tensor]:
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        is_cond = (is_init or self.corrections_as_cond) if cond is None else bool(cond)
        if not is_cond and not obj.out[COND] and not obj.temp[COND]:
            is_cond = True  # an object's first prompt is always a conditioning frame
        if is_cond and not is_init and not obj.out[COND] and not obj.temp[COND]:
            is_init = True  # no memory to condition on yet
        key = COND if is_cond else NON_COND
        prev_logits = None
        if points is not None:
            prev = self.frame_output(obj, frame_idx, key)
            if prev is not None and prev["pred_masks"] is not None:
                prev_logits = torch.clamp(prev["pred_masks"].to(state.device), -32.0, 32.0)
        out, _ = self._run_frame(state, obj, frame_idx, is_init, points, mask, reverse, False, prev_logits)
        obj.temp[key][frame_idx] = out
        if is_cond:  # a frame is in one of the two stores, never both
            obj.temp[NON_COND].pop(frame_idx, None)
        return frame_idx, state.obj_ids, self.consolidated(state, frame_idx, is_cond=is_cond)

    def consolidated(self, state: VideoState, frame_idx: int, is_cond: bool) -> Tensor:
        """(n_obj, 1, H, W) video-res logits of every object on a frame (−1024 where it has no output)."""
        key = COND if is_cond else NON_COND
        h, w = state.video_height, state.video_width
        res = torch.full((len(state.objects), 1, h, w), NO_OBJ_SCORE, dtype=torch.float32, device=state.device)
        for i, obj in enumerate(state.objects.values()):
            out = self.frame_output(obj, frame_idx, key)
            if out is None:
                continue
            res[i: i + 1] = self.to_video_res(state, out["pred_masks"])
        return res

    @staticmethod
    def frame_output(obj: ObjectTrack, frame_idx: int, key: str | None = COND) -> dict | None:
        """An object's newest output on a frame: pending prompt output of store `key` first (none
        when `key` is None), then the stored conditioning and non-conditioning outputs."""
        out = obj.temp[key].get(frame_idx) if key is not None else None
        if out is None:
            out = obj.out[COND].get(frame_idx)
        if out is None:
            out = obj.out[NON_COND].get(frame_idx)
        return out

    # --- propagation -----------------------------------------------------------------------------
    def _preflight(self, state: VideoState) -> None:
        """Move prompt outputs into the stored outputs, encoding their memory (masks binarised)."""
        if not state.objects:
            raise InputError("add clicks, a box or a mask for an object before tracking")
        for obj_id, obj in state.objects.items():
            for key in (NON_COND, COND):
                for frame_idx, out in obj.temp[key].items():
                    if out["maskmem_features"] is None:
                        high = F.interpolate(out["pred_masks"].to(state.device), size=(self.image_size,) * 2,
                                             mode="bilinear", align_corners=False)
                        mem = self._encode_memory(state, frame_idx, high, out["object_score_logits"], True)
                        out["maskmem_features"] = mem
                    obj.out[key][frame_idx] = out
                obj.temp[key].clear()
            if not obj.out[COND]:
                raise InputError(f"object {obj_id} has no clicks, box or mask on any frame; add some first")
            for frame_idx in obj.out[COND]:
                obj.out[NON_COND].pop(frame_idx, None)

    def propagate_in_video(self, state: VideoState, start_frame_idx: int | None = None,
                           max_frame_num_to_track: int | None = None,
                           reverse: bool = False) -> Iterator[tuple[int, list[int], Tensor]]:
        """Yield (frame, obj ids, (n_obj, 1, H, W) video-res logits) frame by frame, forwards or backwards."""
        self._preflight(state)
        obj_ids = state.obj_ids
        for frame_idx in self.processing_order(state, start_frame_idx, max_frame_num_to_track, reverse):
            low = torch.cat([self.track_frame(state, obj, frame_idx, reverse) for obj in state.objects.values()])
            yield frame_idx, obj_ids, self.to_video_res(state, low)

    def processing_order(self, state: VideoState, start: int | None, max_num: int | None,
                         reverse: bool) -> range:
        """Frames a propagation visits: start … start ± max (clipped to the video), inclusive."""
        n = state.num_frames
        start = _first_cond_frame(state) if start is None else int(start)
        self._check_frame(state, start)
        max_num = n if max_num is None else int(max_num)
        if reverse:
            end = max(start - max_num, 0)
            return range(start, end - 1, -1) if start > 0 else range(0)
        return range(start, min(start + max_num, n - 1) + 1)

    def track_frame(self, state: VideoState, obj: ObjectTrack, frame_idx: int, reverse: bool) -> Tensor:
        """One object on one frame during propagation -> its (1, 1, g4, g4) low-res logits; stores the output."""
        if frame_idx in obj.out[COND]:
            low = obj.out[COND][frame_idx]["pred_masks"].to(state.device)
        else:
            out, low = self._run_frame(state, obj, frame_idx, False, None, None, reverse, True, None)
            obj.out[NON_COND][frame_idx] = out
        obj.tracked[frame_idx] = reverse
        return low

    def to_video_res(self, state: VideoState, low: Tensor) -> Tensor:
        h, w = state.video_height, state.video_width
        return low if low.shape[-2:] == (h, w) else F.interpolate(low, size=(h, w), mode="bilinear",
                                                                  align_corners=False)

    # --- one object, one frame -------------------------------------------------------------------
    def _run_frame(self, state: VideoState, obj: ObjectTrack, frame_idx: int, is_init: bool,
                   points: tuple[Tensor, Tensor] | None, mask: Tensor | None, reverse: bool,
                   run_mem_encoder: bool, prev_logits: Tensor | None) -> tuple[dict, Tensor]:
        feats = self.features(state, frame_idx)
        net = self.net
        high_res = net.high_res_features(feats)
        if mask is not None:
            heads = net.mask_as_output(feats.top_map(), high_res, mask)
        else:
            pix = self._conditioned(state, obj, frame_idx, is_init, feats, reverse)
            n_pts = 0 if points is None else points[1].size(1)
            multimask = n_pts <= 1
            heads = net.sam_heads(pix, high_res, *(points or (None, None)), mask_input=prev_logits,
                                  multimask=multimask)
            if self.tap:
                self.tap("click_low_res_multimasks", heads.low_res_multimasks)
                self.tap("click_low_res_masks", heads.low_res_masks)
                self.tap("click_ious", heads.ious)
                self.tap("click_obj_ptr", heads.obj_ptr)
                self.tap("click_object_score_logits", heads.object_score_logits)
        mem = None
        if run_mem_encoder:
            mem = self._encode_memory(state, frame_idx, heads.high_res_masks, heads.object_score_logits,
                                         points is not None)
        out = {"maskmem_features": mem, "pred_masks": heads.low_res_masks, "obj_ptr": heads.obj_ptr,
               "object_score_logits": heads.object_score_logits, "iou": heads.ious}
        return out, heads.low_res_masks

    def _encode_memory(self, state: VideoState, frame_idx: int, high_res_masks: Tensor, scores: Tensor,
                       from_points: bool) -> Tensor:
        feats = self.features(state, frame_idx)
        mem, pos = self.net.encode_memory(feats, high_res_masks, scores, from_points)
        if self.tap:
            self.tap("maskmem_features", mem)
            self.tap("maskmem_pos_enc", pos)
        if state.maskmem_pos is None:
            state.maskmem_pos = pos[0:1].clone()
        return mem.to(torch.bfloat16)  # the official code stores memory features in bf16

    def _conditioned(self, state: VideoState, obj: ObjectTrack, frame_idx: int, is_init: bool,
                     feats: Features, reverse: bool) -> Tensor:
        """Top-level features fused with the object's memory (or + no_mem_embed on a first prompt frame)."""
        net = self.net
        if is_init:
            return net.no_memory_features(feats)
        if not obj.out[COND]:
            raise InputError("this object has no conditioning frame yet")
        device = feats.fpn[-1].device
        num_mem = net.num_maskmem
        cond = obj.out[COND]  # max_cond_frames_in_attn = -1: every conditioning frame is used
        entries: list[tuple[int, dict | None]] = [(0, out) for out in cond.values()]
        stride = self.memory_temporal_stride
        for t_pos in range(1, num_mem):
            t_rel = num_mem - t_pos
            if t_rel == 1:
                prev = frame_idx + 1 if reverse else frame_idx - 1
            elif not reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            entries.append((t_pos, obj.out[NON_COND].get(prev)))
        mems, mem_pos = [], []
        base_pos = state.maskmem_pos.to(device).flatten(2).permute(2, 0, 1)
        for t_pos, out in entries:
            if out is None:
                continue
            mems.append(out["maskmem_features"].to(device).flatten(2).permute(2, 0, 1))
            mem_pos.append(base_pos + net.maskmem_tpos_enc[num_mem - t_pos - 1])
        max_ptrs = min(state.num_frames, net.max_obj_ptrs)
        sign = -1 if reverse else 1
        ptrs = [((frame_idx - t) * sign, out["obj_ptr"]) for t, out in cond.items()
                if (t >= frame_idx if reverse else t <= frame_idx)]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if reverse else frame_idx - t_diff
            if t < 0 or t >= state.num_frames:
                break
            out = obj.out[NON_COND].get(t)
            if out is not None:
                ptrs.append((t_diff, out["obj_ptr"]))
        num_ptr_tokens = 0
        b = feats.fpn[-1].size(0)
        if ptrs:
            offsets, vecs = zip(*ptrs, strict=True)
            obj_ptrs = torch.stack(vecs, dim=0)
            obj_pos = net.obj_ptr_pos(list(offsets), state.num_frames, device)
            obj_pos = obj_pos.unsqueeze(1).expand(-1, b, net.mem_dim)
            split = net.hidden_dim // net.mem_dim
            obj_ptrs = obj_ptrs.reshape(-1, b, split, net.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(split, dim=0)
            mems.append(obj_ptrs)
            mem_pos.append(obj_pos)
            num_ptr_tokens = obj_ptrs.shape[0]
        memory = torch.cat(mems, dim=0)
        if memory.dtype == torch.bfloat16:  # no pointer tokens: the official code fails here on CPU
            memory = memory.float()
        out = net.attend_memory(feats, memory, torch.cat(mem_pos, dim=0), num_ptr_tokens)
        if self.tap:
            self.tap("memattn_out", out.flatten(2).permute(2, 0, 1))
        return out
