"""Resume cost of a track: `Engine._span_state` on a session whose log holds N tracked frames.

`python scripts/bench_resume.py [--frames 20000] [--root REPO]`: logs N ``track_frame``
events the way `Engine._run_span` does (ledger compaction included, when the tree has
one), then times the state a resumed Track reads first. Runs against any checkout via
--root, so an older tree can be measured with the same script.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    """Print the median of five `_span_state` calls on an N-frame log."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20_000)
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("_launch", args.root / "tam_blender_addon" / "launch.py")
    launch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch)
    launch.register_root()
    from track_anything.tam_blender_addon import pipeline
    from track_anything.tam_blender_addon.session import Session, SourceInfo

    n = args.frames
    with tempfile.TemporaryDirectory() as tmp:
        s = Session.create(Path(tmp) / "s", SourceInfo("long.mp4", "video", 8, 8, 25.0, n + 1))
        eng = pipeline.Engine(s)
        every = getattr(pipeline, "LEDGER_EVERY", None)
        real_fsync, os.fsync = os.fsync, (lambda fd: None)  # only to write the log quickly
        try:
            for f in range(1, n + 1):
                s.log("track_frame", job="j", sig="A", frame=f, doubtful=[])
                if every and f % every == 0:
                    eng._span_state(compact=True)
        finally:
            os.fsync = real_fsync
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            state = eng._span_state()
            times.append(time.perf_counter() - t0)
        s.close()
    print(f"{args.root}: resume state at {n} logged frames: median {statistics.median(times) * 1e3:.2f} ms "
          f"(state {state})")


if __name__ == "__main__":
    main()
