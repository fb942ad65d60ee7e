"""`tam demo`: the whole product on a generated clip: click -> track -> mattes (hard + soft alpha) -> eval -> remove."""

from __future__ import annotations

import sys
from pathlib import Path

from .progress import ProgressBar


def _drive(gen, quiet: bool) -> None:
    bar = None if quiet else ProgressBar()
    for p in gen:
        if bar:
            bar.update(p)
    if bar:
        bar.close()


def _engine(session, backend: str, weights: str, device: str, sam2_model: str | None):
    """The demo's engine; a neural backend whose official checkpoints are missing runs on synthetic
    weights instead (labelled meaningless), so the demo always runs end to end."""
    from .errors import WeightsError
    from .pipeline import Engine

    engine = Engine(session, backend=backend, weights=weights, device=device, sam2_model=sam2_model)
    if engine.spec.neural and weights != "synthetic":
        try:
            engine.segmenter, engine.propagator, engine.inpainter  # noqa: B018 - builds them, finds the checkpoints
        except WeightsError as exc:
            print(f"no checkpoint ({exc}): using SYNTHETIC weights, meaningless output", file=sys.stderr)
            engine = Engine(session, backend=backend, weights="synthetic", device=device, sam2_model=sam2_model)
    return engine


def run_demo(out: str | Path = "demo_out", backend: str | None = None, weights: str = "official",
             device: str = "auto", quiet: bool = False, sam2_model: str | None = None) -> int:
    """Generate the demo clip, prompt each object with one box on frame 0, track, export, inpaint."""
    from .metrics import evaluate_dirs
    from .session import Session
    from .synth import make_clip, write_clip

    out = Path(out)
    backend = backend or "classic"
    clip = make_clip("demo")
    paths = write_clip(clip, out / "clip")
    video = paths["video"]
    print(f"sample clip: {video} ({clip.width}x{clip.height}, {len(clip)} frames, objects {list(clip.obj_ids)})")
    session_dir = out / "session"
    if session_dir.exists():
        import shutil

        shutil.rmtree(session_dir)
    from .frames import open_source

    with open_source(video) as src:
        info = src.info()
    with Session.create(session_dir, info, backend=backend) as session:
        engine = _engine(session, backend, weights, device, sam2_model)
        print(f"backend: {engine.backend_label()}")
        try:
            for oid in clip.obj_ids:
                box = clip.box(0, oid)
                if box is None:
                    continue
                session.add_object(name=f"object {oid}", obj_id=int(oid))
                x0, y0, x1, y1 = (float(v) for v in box)
                session.add_box(0, int(oid), x0, y0, x1, y1)
                print(f"prompt: box {x0:.0f},{y0:.0f},{x1:.0f},{y1:.0f} on frame 0 for object {oid}")
            engine.segment(0)
            _drive(engine.track(direction="forward"), quiet)
            _drive(engine.export("png", str(out / "mattes")), quiet)
            scores = evaluate_dirs(out / "mattes", paths["gt"])
            _drive(engine.export("alpha", str(out / "alpha")), quiet)  # the soft mattes editors composite with
            remove = [int(clip.obj_ids[0])]
            _drive(engine.inpaint(remove, str(out / "removed.mp4"), dilate=6), quiet)
        finally:
            engine.close()
    m = scores["mean"]
    print(f"quality vs ground truth: J={m['J']:.3f} F={m['F']:.3f} J&F={m['J&F']:.3f}")
    print(f"session:   {session_dir}")
    print(f"mattes:    {out / 'mattes'}/<object_id>/<frame>.png")
    print(f"alpha:     {out / 'alpha'}/<object_id>/<frame>.png (16-bit soft alpha at source resolution)")
    print(f"removed:   {out / 'removed.mp4'} (object {remove[0]} inpainted)")
    if engine.synthetic:
        print("note: SYNTHETIC weights: the neural outputs are meaningless (testing only)", file=sys.stderr)
    return 0
