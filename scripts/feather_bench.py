"""Time the Mask feather (`matte_shapes.add_feather`) inside `write_shapes` on a soft motion-blur clip.

Usage: python scripts/feather_bench.py [WIDTH HEIGHT FRAMES]  (default 1920 1080 6). The session
holds the clip's exact coverage as its alpha and coverage >= 0.5 as its masks (2 objects).
"""

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tam_blender_addon"))
import launch  # noqa: E402 - beside the engine: loads this checkout as track_anything

launch.register_root()

from track_anything.tam_blender_addon import matte_shapes  # noqa: E402
from track_anything.tam_blender_addon.matte_clips import soft_clip_spec, soft_session  # noqa: E402
from track_anything.tam_blender_addon.synth import make_clip  # noqa: E402


def main() -> None:
    """Build the session, time write_shapes with the feather and with it switched off."""
    w, h, n = (int(v) for v in sys.argv[1:4]) if len(sys.argv) >= 4 else (1920, 1080, 6)
    clip = make_clip(soft_clip_spec("motion_blur", w, h, n, seed=2))
    root = Path(tempfile.mkdtemp())
    s, _ = soft_session(root / "s", clip)
    t = time.perf_counter()
    matte_shapes.write_shapes(s, root / "feathered.json")
    with_feather = time.perf_counter() - t
    matte_shapes.add_feather = lambda *a, **k: None
    t = time.perf_counter()
    matte_shapes.write_shapes(s, root / "plain.json")
    without = time.perf_counter() - t
    print(f"{w}x{h}, {n} frames, 2 objects: write_shapes {with_feather:.2f} s with feather, {without:.2f} s "
          f"without ({(with_feather - without) / n * 1000:.0f} ms per frame for the feather)")


if __name__ == "__main__":
    main()
