"""Streaming: tracking RAM does not grow with clip length (200 vs 2,000 frames)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import resource, sys
    sys.path.insert(0, {tests!r})
    import conftest  # registers track_anything
    from track_anything.tam_blender_addon.frames import open_source
    from track_anything.tam_blender_addon.session import Session
    from track_anything.tam_blender_addon.pipeline import Engine
    video, n, sdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open_source(video) as src:
        info = src.info()
    with Session.create(sdir, info) as s:
        s.add_object(obj_id=1)
        s.add_box(0, 1, 20, 20, 40, 40)
        eng = Engine(s)
        for _ in eng.track(0, n - 1, direction="forward"):
            pass
        eng.close()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


@pytest.mark.slow
def test_tracking_ram_is_flat_between_200_and_2000_frames(tmp_path):
    from track_anything.tam_blender_addon.synth import ClipSpec, ObjectSpec, make_clip, write_clip

    spec = ClipSpec(name="long", width=96, height=64, num_frames=2000, seed=5, pan=(0.05, 0.0),
                    objects=[ObjectSpec(1, (20, 20), [(0, 30, 30, 1.0), (1000, 60, 34, 1.1), (1999, 30, 30, 1.0)])])
    paths = write_clip(make_clip(spec), tmp_path / "clip")
    script = tmp_path / "run.py"
    from pathlib import Path

    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    peaks = {}
    for n in (200, 2000):
        out = subprocess.run([sys.executable, str(script), str(paths["video"]), str(n), str(tmp_path / f"s{n}")],
                             capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-2000:]
        peaks[n] = int(out.stdout.strip().splitlines()[-1])
    assert peaks[2000] <= peaks[200] * 1.15, peaks
