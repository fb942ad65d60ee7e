"""XMem long-term memory, checked transition by transition against the official rules restated here.

Each readout and each memory write of a real run (synthetic weights, 64x96, HW = 24) is
recomputed independently from the state just before it:

* readout (official ``MemoryManager.match_memory``): similarity over [long-term, working]
  keys, top-k softmax of the raw values; the column sums of that affinity are added to
  the use counts of both stores and every life count grows by one;
* write (official ``add_memory`` / ``compress_features`` / ``consolidation`` and
  ``KeyValueMemoryStore.remove_obsolete_features``): the frame is appended to working
  memory; once that holds ``max_mid_term_frames`` frames, long-term memory at or above
  ``max_long_term_elements - num_prototypes`` first drops every element whose usage
  (use / life) is <= the (size - limit)-th smallest, then the frames between the first
  one and the newest ``min_mid_term_frames - 1`` become ``num_prototypes`` prototypes:
  the most used candidates' keys, with values and shrinkage read from all candidates by
  a plain softmax (no top-k) of their similarity to the prototypes.
"""

from __future__ import annotations

import pytest
import torch
from golden import XMEM_SMALL_MEMORY

from track_anything.models.xmem.bench import MovingTexture
from track_anything.models.xmem.inference import InferenceCore
from track_anything.models.xmem.memory import do_softmax, get_similarity
from track_anything.models.xmem.network import network_from_state_dict, synthetic_weights
from track_anything.models.xmem.parity import normalise, one_hot

HW = 4 * 6  # 64x96 frames, stride 16
CFG = dict(XMEM_SMALL_MEMORY, max_long_term_elements=44)


def _snapshot(store) -> dict | None:
    if not store.engaged():
        return None
    return {
        "k": store.k.clone(),
        "s": store.s.clone() if store.s is not None else None,
        "e": store.e.clone() if store.e is not None else None,
        "v": store.v[0].clone(),
        "use": store.use_count.clone() if store.count_usage else None,
        "life": store.life_count.clone() if store.count_usage else None,
    }


def _cat(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
    return b if a is None else torch.cat([a, b], -1)


def _expected_write(work: dict | None, long: dict | None, key, shrink, value, sel) -> tuple:
    """The official transition for one memory frame (one object group): (work, long, consolidated, pruned)."""
    n_new = key.shape[-1]
    zeros, lives = torch.zeros(1, 1, n_new), torch.zeros(1, 1, n_new) + 1e-7
    w = {
        "k": _cat(work and work["k"], key),
        "s": _cat(work and work["s"], shrink),
        "e": _cat(work and work["e"], sel),
        "v": _cat(work and work["v"], value),
        "use": _cat(work and work["use"], zeros),
        "life": _cat(work and work["life"], lives),
    }
    max_work, min_work = CFG["max_mid_term_frames"] * HW, CFG["min_mid_term_frames"] * HW
    if w["k"].shape[-1] < max_work:
        return w, long, False, False
    p, limit = CFG["num_prototypes"], CFG["max_long_term_elements"] - CFG["num_prototypes"]
    pruned = False
    # the official code prunes at >= limit; at exactly the limit its top-k of 0 elements raises IndexError
    if long is not None and long["k"].shape[-1] > limit:
        pruned = True
        usage = (long["use"] / long["life"]).flatten()
        cut = usage.sort().values[long["k"].shape[-1] - limit - 1]
        keep = usage > cut
        long = {name: (t[:, :, keep] if t is not None else None) for name, t in long.items()}
    lo, hi = HW, w["k"].shape[-1] - min_work + HW
    cand = {name: t[:, :, lo:hi] for name, t in w.items()}
    usage = (cand["use"] / cand["life"]).flatten()
    idx = torch.topk(usage, k=p).indices
    proto_k, proto_e = cand["k"][:, :, idx], cand["e"][:, :, idx]
    aff = torch.softmax(get_similarity(cand["k"], cand["s"], proto_k, proto_e), dim=1)
    protos = {
        "k": proto_k,
        "s": cand["s"] @ aff,
        "e": None,
        "v": cand["v"] @ aff,
        "use": torch.zeros(1, 1, p),
        "life": torch.zeros(1, 1, p) + 1e-7,
    }
    if long is not None:
        protos = {n: (_cat(long[n], t) if t is not None else None) for n, t in protos.items()}
    long = protos
    w = {name: torch.cat([t[:, :, :lo], t[:, :, hi:]], -1) for name, t in w.items()}
    return w, long, True, pruned


def _assert_store(store, want: dict, what: str) -> None:
    assert store.size == want["k"].shape[-1], what
    torch.testing.assert_close(store.k, want["k"], msg=what)
    torch.testing.assert_close(store.v[0], want["v"], rtol=1e-5, atol=1e-5, msg=what)
    torch.testing.assert_close(store.s, want["s"], rtol=1e-5, atol=1e-5, msg=what)
    torch.testing.assert_close(store.use_count, want["use"], msg=what)
    torch.testing.assert_close(store.life_count, want["life"], msg=what)


@pytest.fixture(scope="module")
def run_log() -> dict:
    """Run 9 frames, checking every readout and write against the restated rules; return the sizes."""
    net = network_from_state_dict(synthetic_weights())
    core = InferenceCore(net, CFG)
    core.set_all_labels([1, 2])
    mem = core.memory
    log: dict = {"readouts": 0, "prunes": 0, "consolidations": 0, "work": [], "long": []}
    real_match, real_add = mem.match_memory, mem.add_memory

    def match(query_key, selection, objects, capture=None):
        work, long = _snapshot(mem.work_mem), _snapshot(mem.long_mem)
        keys = _cat(long and long["k"], work["k"])
        shrink = _cat(long and long["s"], work["s"])
        sim = get_similarity(keys, shrink, query_key.flatten(2), selection.flatten(2))
        usage = do_softmax(sim, top_k=CFG["top_k"]).sum(2, keepdim=True).transpose(1, 2)
        out = real_match(query_key, selection, objects, capture)
        n_long = 0 if long is None else long["k"].shape[-1]
        if long is not None:
            torch.testing.assert_close(mem.long_mem.use_count, long["use"] + usage[:, :, :n_long])
            torch.testing.assert_close(mem.long_mem.life_count, long["life"] + 1)
        torch.testing.assert_close(mem.work_mem.use_count, work["use"] + usage[:, :, n_long:])
        torch.testing.assert_close(mem.work_mem.life_count, work["life"] + 1)
        log["readouts"] += 1
        return out

    def add(key, shrinkage, value, objects, selection=None, permanent=False):
        work, long = _snapshot(mem.work_mem), _snapshot(mem.long_mem)
        want_w, want_l, consolidated, pruned = _expected_write(
            work, long, key.flatten(2), shrinkage.flatten(2), value[0].flatten(2), selection.flatten(2)
        )
        real_add(key, shrinkage, value, objects, selection=selection, permanent=permanent)
        log["consolidations"] += consolidated
        log["prunes"] += pruned
        _assert_store(mem.work_mem, want_w, "working memory")
        if want_l is not None:
            _assert_store(mem.long_mem, want_l, "long-term memory")

    mem.match_memory, mem.add_memory = match, add
    video = MovingTexture((64, 96), objects=2, seed=3)
    for t in range(9):
        image = normalise(video.frame(t))
        if t == 0:
            core.step(image, one_hot(video.labels(0), [1, 2]), valid_labels=[1, 2])
        else:
            core.step(image)
        log["work"].append(mem.work_mem.size)
        log["long"].append(mem.long_mem.size)
    return log


def test_every_readout_and_write_follows_the_official_rules(run_log):
    assert run_log["readouts"] == 8
    assert run_log["consolidations"] == 7
    assert run_log["prunes"] >= 2  # frames 7 and 8 start above 44 - 8 = 36 elements


def test_sizes_follow_the_official_schedule(run_log):
    # working memory: first frame + newest (min_mid_term_frames - 1) after each consolidation at 3 frames
    assert run_log["work"] == [HW, 2 * HW] + [2 * HW] * 7
    # long-term memory: 8 prototypes per frame until 36 is reached, then pruned below 36 before adding 8
    assert run_log["long"][:7] == [0, 0, 8, 16, 24, 32, 40]
    assert all(33 <= n <= 44 for n in run_log["long"][7:])
