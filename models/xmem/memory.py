"""XMem's memory: similarity, top-k readout, working / long-term memory and their consolidation.

This follows the official XMem ``MemoryManager`` / ``KeyValueMemoryStore`` rules:

* keys, shrinkage, selection and usage counters are one tensor per store (N along the
  last axis, chronological); values are kept per *object group*: objects that entered
  memory together share a group, whose values cover the last N_g keys of the store;
* readout is the top-k softmax of exp(raw similarity) per group, usage (summed affinity)
  is counted for working memory, and for long-term memory when
  ``enable_long_term_count_usage`` is set;
* when working memory holds ``max_mid_term_frames`` frames, everything but the first
  frame and the newest ``min_mid_term_frames - 1`` frames is consolidated into
  ``num_prototypes`` prototypes (the most used elements, "potentiated" by a softmax over
  their similarity to the candidates) that go to long-term memory; before that,
  long-term memory above ``max_long_term_elements - num_prototypes`` drops its least
  used elements (usage / life), ties included.

Additions for the product, which leave the official path untouched when unused: a
*permanent* store (user keyframes; always read, never consolidated or pruned), object
removal, taking the newest frame back out of working memory (corrections), and a
per-object readout that works when the stores' groups differ. Where the official code
would crash (top-k larger than the memory, fewer candidates than prototypes, pruning
with several groups) this code degrades gracefully instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def get_similarity(mk: Tensor, ms: Tensor | None, qk: Tensor, qe: Tensor | None) -> Tensor:
    """Negative shrinkage-weighted, selection-weighted squared distance: (B, N, HW)."""
    ck = mk.shape[1]
    mk = mk.flatten(start_dim=2)
    ms = ms.flatten(start_dim=1).unsqueeze(2) if ms is not None else None
    qk = qk.flatten(start_dim=2)
    qe = qe.flatten(start_dim=2) if qe is not None else None
    if qe is not None:
        mk = mk.transpose(1, 2)
        a_sq = mk.pow(2) @ qe
        two_ab = 2 * (mk @ (qk * qe))
        b_sq = (qe * qk.pow(2)).sum(1, keepdim=True)
        similarity = -a_sq + two_ab - b_sq
    else:
        a_sq = mk.pow(2).sum(1).unsqueeze(2)
        two_ab = 2 * (mk.transpose(1, 2) @ qk)
        similarity = -a_sq + two_ab
    if ms is not None:
        return similarity * ms / math.sqrt(ck)
    return similarity / math.sqrt(ck)


def do_softmax(similarity: Tensor, top_k: int | None = None) -> Tensor:
    """Softmax over the memory axis; with top_k: exp of the raw top-k values (no max shift), scattered.

    Returns float32 (the official code keeps fp16 under autocast, where it can underflow to NaN).
    """
    if top_k is not None:
        k = min(int(top_k), similarity.shape[1])
        values, indices = torch.topk(similarity, k=k, dim=1)
        # in float32 even under fp16 autocast: exp() of similarities below about -17 underflows in fp16
        x_exp = values.float().exp_()
        x_exp /= torch.sum(x_exp, dim=1, keepdim=True)
        return torch.zeros_like(similarity, dtype=x_exp.dtype).scatter_(1, indices, x_exp)
    maxes = torch.max(similarity, dim=1, keepdim=True)[0]
    x_exp = torch.exp(similarity - maxes)
    return x_exp / torch.sum(x_exp, dim=1, keepdim=True)


class KVStore:
    """Keys/shrinkage/selection/usage as (1, C, N) tensors; values per object group (n_g, CV, N_g)."""

    def __init__(self, count_usage: bool):
        self.count_usage = count_usage
        self.k: Tensor | None = None
        self.s: Tensor | None = None
        self.e: Tensor | None = None
        self.use_count: Tensor | None = None
        self.life_count: Tensor | None = None
        self.v: list[Tensor] = []
        self.groups: list[list[int]] = []  # object ids of each value group, in value-row order

    # ------------------------------------------------------------------ basics
    @property
    def size(self) -> int:
        """Number of memory elements (keys)."""
        return 0 if self.k is None else int(self.k.shape[-1])

    def engaged(self) -> bool:
        """True once anything was added."""
        return self.k is not None

    def v_size(self, gi: int) -> int:
        """How many of the newest keys group `gi` has values for."""
        return int(self.v[gi].shape[2])

    def find(self, obj: int) -> tuple[int, int] | None:
        """(group index, row) of object `obj`, or None."""
        for gi, group in enumerate(self.groups):
            if obj in group:
                return gi, group.index(obj)
        return None

    def get_usage(self) -> Tensor:
        """Usage normalised by life time, (1, 1, N)."""
        if not self.count_usage or self.use_count is None:
            raise RuntimeError("usage is not counted in this memory store")
        return self.use_count / self.life_count

    # ------------------------------------------------------------------ adding
    def _add_keys(self, key: Tensor, shrinkage: Tensor | None, selection: Tensor | None) -> None:
        n = key.shape[2]
        new_count = torch.zeros((key.shape[0], 1, n), device=key.device, dtype=torch.float32)
        new_life = torch.zeros((key.shape[0], 1, n), device=key.device, dtype=torch.float32) + 1e-7
        if self.k is None:
            self.k, self.s, self.e = key, shrinkage, selection
            if self.count_usage:
                self.use_count, self.life_count = new_count, new_life
            return
        self.k = torch.cat([self.k, key], -1)
        if shrinkage is not None:
            self.s = torch.cat([self.s, shrinkage], -1)
        if selection is not None:
            self.e = torch.cat([self.e, selection], -1)
        if self.count_usage:
            self.use_count = torch.cat([self.use_count, new_count], -1)
            self.life_count = torch.cat([self.life_count, new_life], -1)

    def add(
        self,
        key: Tensor,
        value: Tensor,
        shrinkage: Tensor | None,
        selection: Tensor | None,
        objects: Sequence[int],
    ) -> None:
        """Add one frame: key (1, CK, HW), value (K, CV, HW) with rows in `objects` order.

        Objects already in a group extend that group; the others form a new group.
        """
        self._add_keys(key, shrinkage, selection)
        pos = {o: i for i, o in enumerate(objects)}
        remaining = [o for o in objects]
        for gi, group in enumerate(self.groups):
            rows = [pos[o] for o in group]
            for o in group:
                remaining.remove(o)
            part = value if rows == list(range(value.shape[0])) else value[rows]
            self.v[gi] = torch.cat([self.v[gi], part], -1)
        if remaining:
            rows = [pos[o] for o in remaining]
            self.v.append(value if rows == list(range(value.shape[0])) else value[rows])
            self.groups.append(list(remaining))

    def add_groups(
        self, key: Tensor, values: list[Tensor | None], groups: list[list[int]], shrinkage: Tensor | None
    ) -> None:
        """Add prototypes (long-term memory): `values[i]` belongs to object group `groups[i]` (None = skip)."""
        self._add_keys(key, shrinkage, None)
        for gv, group in zip(values, groups, strict=True):
            if gv is None:
                continue
            if group in self.groups:
                gi = self.groups.index(group)
                self.v[gi] = torch.cat([self.v[gi], gv], -1)
            else:
                self.v.append(gv)
                self.groups.append(list(group))

    def update_usage(self, usage: Tensor) -> None:
        """Add `usage` (N,) to the use counts and one to every life count."""
        if not self.count_usage:
            return
        self.use_count += usage.view_as(self.use_count)
        self.life_count += 1

    # ------------------------------------------------------------------ removing
    def _slice_keys(self, index: slice | Tensor) -> None:
        self.k = self.k[:, :, index]
        if self.s is not None:
            self.s = self.s[:, :, index]
        if self.e is not None:
            self.e = self.e[:, :, index]
        if self.count_usage:
            self.use_count = self.use_count[:, :, index]
            self.life_count = self.life_count[:, :, index]

    def sieve_by_range(self, start: int, end: int, min_size: int) -> None:
        """Keep only elements outside [start, end) (end <= 0 counts from the end); values under min_size are kept."""

        def cut(t: Tensor) -> Tensor:
            if end == 0:
                return t[:, :, :start]
            return torch.cat([t[:, :, :start], t[:, :, end:]], -1)

        self.k = cut(self.k)
        if self.count_usage:
            self.use_count = cut(self.use_count)
            self.life_count = cut(self.life_count)
        if self.s is not None:
            self.s = cut(self.s)
        if self.e is not None:
            self.e = cut(self.e)
        for gi in range(len(self.v)):
            if self.v[gi].shape[-1] >= min_size:
                self.v[gi] = cut(self.v[gi])

    def remove_obsolete_features(self, max_size: int) -> None:
        """Drop the least used elements (all whose usage <= the (size - max_size)-th smallest).

        Without usage counts (the official code fails there) the oldest elements go instead.
        """
        n = self.size
        k = n - max_size
        if k <= 0:
            return
        if not self.count_usage:
            self.remove_range(0, k)
            return
        usage = self.get_usage().flatten()
        values, _ = torch.topk(usage, k=k, largest=False, sorted=True)
        survived = usage > values[-1]
        self._slice_keys(survived)
        for gi in range(len(self.v)):
            ng = self.v[gi].shape[2]
            self.v[gi] = self.v[gi][:, :, survived[n - ng :]]
        self._drop_empty_groups()

    def remove_range(self, start: int, stop: int) -> None:
        """Take elements [start, stop) out (keys and the matching values of every group)."""
        n = self.size
        start, stop = max(0, start), min(n, stop)
        if stop <= start:
            return
        keep = torch.ones(n, dtype=torch.bool)
        keep[start:stop] = False
        idx = torch.nonzero(keep).flatten().to(self.k.device)
        self._slice_keys(idx)
        for gi in range(len(self.v)):
            ng = self.v[gi].shape[2]
            self.v[gi] = self.v[gi][:, :, idx[idx >= n - ng] - (n - ng)]
        self._drop_empty_groups()
        if self.size == 0:
            self.clear()

    def remove_last(self, n: int) -> None:
        """Take the newest `n` elements back out."""
        self.remove_range(self.size - n, self.size)

    def remove_object(self, obj: int) -> None:
        """Forget object `obj`'s values (its keys stay: they serve the other objects)."""
        hit = self.find(obj)
        if hit is None:
            return
        gi, row = hit
        keep = [r for r in range(len(self.groups[gi])) if r != row]
        self.v[gi] = self.v[gi][keep]
        self.groups[gi] = [o for o in self.groups[gi] if o != obj]
        self._drop_empty_groups()

    def _drop_empty_groups(self) -> None:
        keep = [i for i, g in enumerate(self.groups) if g and self.v[i].shape[2] > 0]
        self.v = [self.v[i] for i in keep]
        self.groups = [self.groups[i] for i in keep]

    def clear(self) -> None:
        """Forget everything."""
        self.__init__(self.count_usage)


class MemoryManager:
    """Permanent, long-term and working memory plus the hidden state, with the official transition rules."""

    def __init__(self, config: dict):
        self.hidden_dim = int(config["hidden_dim"])
        self.top_k = config["top_k"]
        self.enable_long_term = bool(config["enable_long_term"])
        self.enable_long_term_usage = bool(config["enable_long_term_count_usage"])
        if self.enable_long_term:
            self.max_mt_frames = int(config["max_mid_term_frames"])
            self.min_mt_frames = int(config["min_mid_term_frames"])
            self.num_prototypes = int(config["num_prototypes"])
            self.max_long_elements = int(config["max_long_term_elements"])
        self.CV: int | None = None
        self.H: int | None = None
        self.W: int | None = None
        self.HW = 0
        self.hidden: Tensor | None = None  # (1, K, hidden_dim, h, w), rows in the core's object order
        self.work_mem = KVStore(count_usage=self.enable_long_term)
        self.long_mem = KVStore(count_usage=self.enable_long_term_usage)
        self.perm_mem = KVStore(count_usage=False)

    # ------------------------------------------------------------------ readout
    def match_memory(
        self, query_key: Tensor, selection: Tensor | None, objects: Sequence[int], capture: dict | None = None
    ) -> Tensor:
        """Read every object's value for the query: (1, K, CV, h, w) in `objects` order; counts usage."""
        h, w = query_key.shape[-2:]
        qk = query_key.flatten(start_dim=2)
        qe = selection.flatten(start_dim=2) if selection is not None else None
        stores = [s for s in (self.perm_mem, self.long_mem, self.work_mem) if s.engaged()]
        if len(stores) == 1:
            mem_key, mem_shrink = stores[0].k, stores[0].s
        else:
            mem_key = torch.cat([s.k for s in stores], -1)
            mem_shrink = torch.cat([s.s for s in stores], -1)
        similarity = get_similarity(mem_key, mem_shrink, qk, qe)
        if capture is not None:
            capture["similarity"] = similarity.clone()
        offsets, start = [], 0
        for s in stores:
            offsets.append(start)
            start += s.size

        # each object reads the store groups it has values in; objects with equal extents share one softmax
        signatures: dict[tuple[int, ...], list[int]] = {}
        where: dict[int, list[tuple[int, int] | None]] = {}
        for obj in objects:
            hits = [s.find(obj) for s in stores]
            where[obj] = hits
            sig = tuple(stores[i].v_size(hit[0]) if hit is not None else 0 for i, hit in enumerate(hits))
            signatures.setdefault(sig, []).append(obj)

        def sliced(sig: tuple[int, ...]) -> Tensor:
            parts = [
                similarity[:, offsets[i] + stores[i].size - n : offsets[i] + stores[i].size]
                for i, n in enumerate(sig)
                if n > 0
            ]
            return parts[0] if len(parts) == 1 else torch.cat(parts, 1)

        full = tuple(s.size for s in stores)
        counts_usage = self.work_mem.count_usage or self.long_mem.count_usage
        readout = None
        for sig, objs in signatures.items():
            if sum(sig) == 0:
                continue  # an object with no memory at all reads zeros
            affinity = do_softmax(sliced(sig), top_k=self.top_k)
            if sig == full and counts_usage:
                self._count_usage(affinity, stores)
                counts_usage = False
            if capture is not None and "affinity" not in capture:
                capture["affinity"] = affinity
            values = []
            for i, n in enumerate(sig):
                if n == 0:
                    continue
                rows = [where[o][i] for o in objs]
                gi = rows[0][0]
                if all(r[0] == gi for r in rows) and [r[1] for r in rows] == list(
                    range(len(stores[i].groups[gi]))
                ):
                    values.append(stores[i].v[gi])
                else:
                    values.append(torch.stack([stores[i].v[r[0]][r[1]] for r in rows]))
            mem_value = values[0] if len(values) == 1 else torch.cat(values, -1)
            out = mem_value @ affinity  # (n_objs, CV, HW)
            if len(signatures) == 1 and objs == list(objects):
                readout = out
                continue
            if readout is None:
                readout = out.new_zeros((len(objects), out.shape[1], out.shape[2]))
            readout[[list(objects).index(o) for o in objs]] = out
        if counts_usage and sum(full) > 0:  # no object spans all memory (objects were removed): count anyway
            self._count_usage(do_softmax(similarity, top_k=self.top_k), stores)
        if readout is None:
            cv = self.CV or 0
            readout = similarity.new_zeros((len(objects), cv, h * w))
        return readout.view(1, len(objects), readout.shape[1], h, w)

    def _count_usage(self, affinity: Tensor, stores: list[KVStore]) -> None:
        usage = affinity.sum(dim=2)
        start = 0
        for s in stores:
            if s is not self.perm_mem:
                s.update_usage(usage[:, start : start + s.size].flatten())
            start += s.size

    # ------------------------------------------------------------------ writing
    def _set_hw(self, key: Tensor) -> None:
        if self.H is None:
            self.H, self.W = key.shape[-2:]
            self.HW = self.H * self.W
            if self.enable_long_term:
                self.min_work_elements = self.min_mt_frames * self.HW
                self.max_work_elements = self.max_mt_frames * self.HW

    def add_memory(
        self,
        key: Tensor,
        shrinkage: Tensor,
        value: Tensor,
        objects: Sequence[int],
        selection: Tensor | None = None,
        permanent: bool = False,
    ) -> None:
        """Add one frame (value (1, K, CV, h, w) in `objects` order); consolidate working memory if it is full."""
        self._set_hw(key)
        key = key.flatten(start_dim=2)
        shrinkage = shrinkage.flatten(start_dim=2)
        value = value[0].flatten(start_dim=2)
        self.CV = int(value.shape[1])
        if permanent:
            self.perm_mem.add(key, value, shrinkage, None, objects)
            return
        if selection is not None:
            selection = selection.flatten(start_dim=2)
        self.work_mem.add(key, value, shrinkage, selection if self.enable_long_term else None, objects)
        if self.enable_long_term and self.work_mem.size >= self.max_work_elements:
            if self.long_mem.size >= (self.max_long_elements - self.num_prototypes):
                self.long_mem.remove_obsolete_features(self.max_long_elements - self.num_prototypes)
            self.compress_features()

    def compress_features(self) -> None:
        """Consolidate the middle of working memory (not the first frame, not the newest ones) into long-term."""
        hw = self.HW
        total = self.work_mem.size
        end = -self.min_work_elements + hw
        candidate_value: list[Tensor | None] = []
        for gv in self.work_mem.v:
            n = gv.shape[-1]
            if n == total or n > self.min_work_elements + hw:
                candidate_value.append(gv[:, :, hw:end] if end != 0 else gv[:, :, hw:])
            else:
                candidate_value.append(None)
        k, sk, ek, usage = self._sliced(hw, end)
        proto_key, proto_value, proto_shrink = self.consolidation(k, sk, ek, usage, candidate_value)
        groups = [list(g) for g in self.work_mem.groups]
        self.work_mem.sieve_by_range(hw, end, min_size=self.min_work_elements + hw)
        self.long_mem.add_groups(proto_key, proto_value, groups, proto_shrink)

    def _sliced(self, start: int, end: int) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor]:
        w = self.work_mem
        sl = slice(start, None) if end == 0 else slice(start, end)
        return (
            w.k[:, :, sl],
            w.s[:, :, sl] if w.s is not None else None,
            w.e[:, :, sl] if w.e is not None else None,
            w.get_usage()[:, :, sl],
        )

    def consolidation(
        self,
        candidate_key: Tensor,
        candidate_shrinkage: Tensor | None,
        candidate_selection: Tensor | None,
        usage: Tensor,
        candidate_value: list[Tensor | None],
    ) -> tuple[Tensor, list[Tensor | None], Tensor | None]:
        """Pick the most used candidates as prototypes and read their values/shrinkage out of the candidates."""
        n = candidate_key.shape[-1]
        k = min(self.num_prototypes, n)
        _, max_usage_indices = torch.topk(usage, k=k, dim=-1, sorted=True)
        proto_idx = max_usage_indices.flatten()
        validity = [proto_idx >= (n - gv.shape[2]) if gv is not None else None for gv in candidate_value]
        proto_key = candidate_key[:, :, proto_idx]
        proto_sel = candidate_selection[:, :, proto_idx] if candidate_selection is not None else None
        similarity = get_similarity(candidate_key, candidate_shrinkage, proto_key, proto_sel)
        affinity: list[Tensor | None] = []
        for gi, gv in enumerate(candidate_value):
            if gv is None or gv.shape[2] == 0:
                affinity.append(None)
                continue
            aff = do_softmax(similarity[:, -gv.shape[2] :, validity[gi]])
            affinity.append(aff if aff.shape[-1] > 0 else None)
        proto_value = [
            gv @ affinity[gi] if affinity[gi] is not None else None for gi, gv in enumerate(candidate_value)
        ]
        proto_shrink = None
        if candidate_shrinkage is not None and affinity and affinity[0] is not None:
            proto_shrink = candidate_shrinkage @ affinity[0]
        return proto_key, proto_value, proto_shrink

    # ------------------------------------------------------------------ hidden and objects
    def create_hidden_state(self, n: int, sample_key: Tensor) -> None:
        """Make sure there is a hidden state row for each of `n` objects (new rows are zeros)."""
        h, w = sample_key.shape[-2:]
        if self.hidden is None:
            self.hidden = torch.zeros((1, n, self.hidden_dim, h, w), device=sample_key.device)
        elif self.hidden.shape[1] < n:
            extra = torch.zeros(
                (1, n - self.hidden.shape[1], self.hidden_dim, h, w), device=sample_key.device
            )
            self.hidden = torch.cat([self.hidden, extra], 1)

    def has_object(self, obj: int) -> bool:
        """True when some store holds values for object `obj`."""
        return any(s.find(obj) is not None for s in (self.perm_mem, self.long_mem, self.work_mem))

    def remove_object(self, obj: int, row: int) -> None:
        """Forget object `obj` (hidden row `row`) in every store."""
        for s in (self.perm_mem, self.long_mem, self.work_mem):
            s.remove_object(obj)
        if self.hidden is not None and row < self.hidden.shape[1]:
            keep = [i for i in range(self.hidden.shape[1]) if i != row]
            self.hidden = self.hidden[:, keep]
