"""The neural path (SAM ViT-B + XMem) end to end on CPU with synthetic weights."""

from __future__ import annotations

import numpy as np
import pytest

from track_anything.tam_blender_addon.frames import open_source
from track_anything.tam_blender_addon.pipeline import Engine
from track_anything.tam_blender_addon.session import Session


@pytest.mark.slow
def test_neural_track_with_forced_refinement_runs_and_is_labelled_synthetic(tmp_path):
    from track_anything.tam_blender_addon.synth import make_clip, preset_spec, write_clip

    clip = make_clip(preset_spec("demo", seed=2, num_frames=3))
    paths = write_clip(clip, tmp_path / "clip")
    with open_source(paths["video"]) as src:
        info = src.info()
    with Session.create(tmp_path / "s", info, backend="neural") as s:
        oid = next(o for o in clip.obj_ids if clip.box(0, o) is not None)
        s.add_object(obj_id=oid)
        x0, y0, x1, y1 = (float(v) for v in clip.box(0, oid))
        s.add_click(0, oid, (x0 + x1) / 2, (y0 + y1) / 2)
        eng = Engine(s, weights="synthetic", device="cpu")
        assert eng.synthetic and "SYNTHETIC" in eng.backend_label()
        eng.refine_below = 1.01  # every frame is "weak": exercise SAM refinement on each
        progress = list(eng.track(direction="forward"))
        assert [p.frame for p in progress] == [1, 2]
        assert s.mask_frames() == [0, 1, 2]
        log = s.read_log()
        start = next(e for e in log if e["event"] == "track_start")
        assert "SYNTHETIC" in start["backend"]
        done = next(e for e in log if e["event"] == "track_done")
        assert done["frames"] == 2 and done["refine_tried"] >= 1
        for f in range(3):
            rec = s.read_mask(f)
            assert rec.labels.shape == (clip.height, clip.width) and rec.labels.dtype == np.uint8
            assert set(np.unique(rec.labels)) <= {0, oid}
        eng.close()
