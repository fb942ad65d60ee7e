"""How long a click keeps Blender busy: `python scripts/click_latency.py [--frames N]`.

Registers the add-on from this checkout inside the bpy wheel, makes a classic session on a
synthetic 320x240 clip and clicks once per frame, first waiting for each answer (what every
click did before requests became futures, and what background scripts still do), then as
the UI does (the operator returns, `runtime.pump` lands the masks). Prints the operator's
return time and the wall time until every mask was in.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    """Run both modes and print one line each."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=12)
    n = ap.parse_args().frames
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp())
    spec = importlib.util.spec_from_file_location("_tam_launch", ROOT / "tam_blender_addon" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()
    import bpy

    import track_anything
    from track_anything.operators import runtime
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    clip = make_clip(ClipSpec(
        name="latency", width=320, height=240, num_frames=n, fps=24.0, seed=5, pan=(0.0, 0.0),
        objects=[ObjectSpec(obj_id=1, size=(80, 60), path=[(0, 100, 120, 1.0), (n - 1, 200, 120, 1.0)],
                            shape="ellipse", texture="stripes", hue=0.6)]))
    video = str(write_clip(clip, Path(tempfile.mkdtemp()), video=True)["video"])
    bpy.ops.wm.read_homefile(use_empty=True)
    track_anything.register()
    try:
        se = bpy.context.scene.sequence_editor_create()
        se.active_strip = se.strips.new_movie("clip", video, 2, 1)
        bpy.ops.tam.session_new(backend="CLASSIC", directory=str(Path(tempfile.mkdtemp()) / "s"))
        bpy.ops.tam.object_add(name="ball")
        for mode in ("waiting", "futures"):
            runtime.RT.block_in_background = mode == "waiting"
            times = []
            t_all = time.perf_counter()
            for i in range(n):
                x0, y0, x1, y1 = clip.box(i, 1)
                t0 = time.perf_counter()
                bpy.ops.tam.prompt_add(object_id=1, frame=1 + i, x=(x0 + x1) / 2, y=(y0 + y1) / 2)
                times.append((time.perf_counter() - t0) * 1000)
            while runtime.pump() is not None:
                time.sleep(0.005)
            total = (time.perf_counter() - t_all) * 1000
            print(f"{mode}: prompt_add returns in median {statistics.median(times):.1f} ms, "
                  f"max {max(times):.1f} ms; {n} clicks segmented in {total:.0f} ms")
    finally:
        runtime.RT.block_in_background = True
        track_anything.unregister()


if __name__ == "__main__":
    main()
