"""`tam`: the command line over the engine (info, track, export, inpaint, matte, eval, demo, weights, bench).

Every command prints one clear line and exits non-zero on bad input; `--debug` shows
the traceback. Long work shows a progress bar with rate and time left; Ctrl-C stops
between frames and keeps everything finished.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path

from .errors import Cancelled, InputError, TamError, as_disk_error
from .progress import Progress, ProgressBar

EXIT_ERROR = 2
EXIT_CANCELLED = 130


# ------------------------------------------------------------------ argument types
def _parse_point(text: str) -> tuple[int, float, float, int]:
    m = re.fullmatch(r"\s*(\d+):(-?[\d.]+),(-?[\d.]+)(?::(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not F:X,Y[:OBJ] (e.g. 0:120,80 or 12:40,33:2)")
    return int(m[1]), float(m[2]), float(m[3]), int(m[4] or 1)


def _parse_box(text: str) -> tuple[int, float, float, float, float, int]:
    m = re.fullmatch(r"\s*(\d+):(-?[\d.]+),(-?[\d.]+),(-?[\d.]+),(-?[\d.]+)(?::(\d+))?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not F:X0,Y0,X1,Y1[:OBJ]")
    return int(m[1]), float(m[2]), float(m[3]), float(m[4]), float(m[5]), int(m[6] or 1)


def _parse_range(text: str) -> tuple[int | None, int | None]:
    m = re.fullmatch(r"\s*(\d*):(\d*)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not A:B (0-based source frames, inclusive)")
    return (int(m[1]) if m[1] else None), (int(m[2]) if m[2] else None)


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of object ids like 1,2") from None
    if not ids:
        raise argparse.ArgumentTypeError("no object ids given")
    return ids


# ------------------------------------------------------------------ helpers
def _run(progress: Iterable[Progress], quiet: bool = False) -> int:
    """Drive an engine generator with a progress bar; Ctrl-C stops between frames."""
    bar = None if quiet else ProgressBar()
    done = 0
    try:
        for p in progress:
            done = p.done
            if bar:
                bar.update(p)
    except KeyboardInterrupt:
        if bar:
            bar.close()
        raise Cancelled(f"interrupted after {done} frames; finished frames are kept") from None
    if bar:
        bar.close()
    return done


def _open_or_create_session(video: str, session_dir: str, backend: str | None):
    from .frames import open_source
    from .session import Session

    sdir = Path(session_dir)
    if Session.exists(sdir):
        session = Session.open(sdir)
        want = str(Path(video).resolve())
        if str(Path(session.source.path).resolve()) != want:
            session.close()
            raise InputError(f"session {sdir} belongs to {session.source.path}, not {video}")
        return session
    with open_source(video) as src:
        info = src.info()
    return Session.create(sdir, info, backend=backend or "classic")


def _make_engine(session, args):
    from .pipeline import Engine

    engine = Engine(
        session,
        backend=args.backend,
        device=getattr(args, "device", "auto"),
        weights=getattr(args, "weights", "official"),
        sam_model=getattr(args, "sam_model", "vit_b"),
        refine=getattr(args, "refine", None),
        weights_dir=getattr(args, "weights_dir", None),
        half=getattr(args, "half", None),
        sam2_model=getattr(args, "sam2_model", None),
        sam2_image_size=getattr(args, "sam2_image_size", 1024),
    )
    if getattr(args, "sam2_model", None) and session.writable and session.settings.get("sam2_model") != args.sam2_model:
        session.settings["sam2_model"] = args.sam2_model  # the session remembers the size its masks were made with
        session.save()
    print(f"backend: {engine.backend_label()}", file=sys.stderr)
    return engine


def _validate_prompts(session, prompts: list) -> None:
    """Check every prompt before writing any, so a bad one leaves the session untouched."""
    src = session.source
    for kind, p in prompts:
        f, obj = p[0], p[-1]
        if not 1 <= obj <= 255:
            raise InputError(f"object id {obj} is not valid: ids are 1..255")
        if not 0 <= f < src.num_frames:
            raise InputError(f"frame {f} is outside the source (frames 0..{src.num_frames - 1})")
        xs, ys = ((p[1], p[3]), (p[2], p[4])) if kind == "box" else ((p[1],), (p[2],))
        for x, y in zip(xs, ys, strict=True):
            if not (0 <= x < src.width and 0 <= y < src.height):
                raise InputError(
                    f"point ({x:g}, {y:g}) on frame {f} is outside the {src.width}x{src.height} frame"
                )


def _ensure_object(session, obj: int) -> None:
    if not 1 <= obj <= 255:
        raise InputError(f"object id {obj} is not valid: ids are 1..255")
    if obj in {o.id for o in session.objects}:
        return
    session.add_object(name=f"object {obj}", obj_id=obj)


# ------------------------------------------------------------------ commands
def cmd_info(args) -> int:
    from .frames import open_source

    with open_source(args.video) as src:
        info = src.info()
    d = {
        "path": info.path,
        "kind": info.kind,
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "frames": info.num_frames,
        "duration_s": round(info.num_frames / info.fps, 3) if info.fps else None,
    }
    if args.json:
        print(json.dumps(d))
    else:
        for k, v in d.items():
            print(f"{k:>10}: {v}")
    return 0


def cmd_track(args) -> int:
    prompts = [("click", p) for p in args.click] + [("neg", p) for p in args.neg_click]
    prompts += [("box", b) for b in args.box]
    session = _open_or_create_session(args.video, args.session, args.backend)
    with session:
        engine = _make_engine(session, args)
        try:
            _validate_prompts(session, prompts)
            frames: set[int] = set()
            for _kind, p in prompts:
                _ensure_object(session, p[-1])
            for kind, p in prompts:
                if kind == "box":
                    f, x0, y0, x1, y1, obj = p
                    session.add_box(f, obj, x0, y0, x1, y1)
                else:
                    f, x, y, obj = p
                    session.add_click(f, obj, x, y, positive=(kind == "click"))
                frames.add(f)
            for f in sorted(frames):
                engine.segment(f)
            start, end = args.range if args.range else (None, None)
            n = _run(engine.track(start, end, direction=args.direction), args.quiet)
            doubtful = engine.doubtful_frames()
        finally:
            engine.close()
    print(f"tracked {n} frames into {args.session}")
    if doubtful:
        frames_txt = ", ".join(str(f) for f in sorted({d[0] for d in doubtful})[:20])
        print(f"doubtful frames (low tracker confidence; check and correct): {frames_txt}")
    if engine.synthetic:
        print("note: SYNTHETIC weights were used: these masks are meaningless (testing only)")
    return 0


def cmd_export(args) -> int:
    from .session import Session

    with Session.open(args.session, writable=False) as session:
        from .pipeline import Engine

        engine = Engine(session, backend=session.backend)
        try:
            n = _run(engine.export(args.format, args.out, hard=args.hard), args.quiet)
        finally:
            engine.close()
    kind = "hard" if args.hard or args.format in ("png", "labels") else "soft"
    print(f"wrote {n} frames of {kind} {args.format} mattes to {args.out}")
    return 0


def cmd_inpaint(args) -> int:
    session = _open_or_create_session(args.video, args.session, args.backend)
    with session:
        engine = _make_engine(session, args)
        try:
            _run(engine.inpaint(args.objects, args.out, dilate=args.dilate, feather=args.feather), args.quiet)
        finally:
            engine.close()
    print(f"wrote the inpainted result to {args.out}")
    if engine.synthetic:
        print("note: SYNTHETIC weights were used: this inpainting is meaningless (testing only)")
    return 0


def cmd_eval(args) -> int:
    from .metrics import evaluate_dirs

    res = evaluate_dirs(args.pred, args.gt)
    if args.json:
        print(json.dumps(res))
        return 0
    from .metrics import ALPHA_KEYS

    keys = ["J", "F", "J&F"] + (list(ALPHA_KEYS) if res.get("soft") else [])
    print(f"{'object':>8} " + " ".join(f"{k:>9}" for k in keys))
    rows = sorted(res["objects"].items(), key=lambda kv: int(kv[0])) + [("mean", res["mean"])]
    for obj, r in rows:
        print(f"{obj:>8} " + " ".join(f"{r[k]:9.4f}" if k != "MSE" else f"{r[k]:9.2e}" for k in keys))
    if res.get("soft"):
        print("soft ground truth: SAD, Grad, Conn in thousands; MSE over the frame; dtSSD x 100")
    return 0


def cmd_matte(args) -> int:
    from .matte import matte_folder

    n = _run(matte_folder(args.video, args.masks, args.out, args.format), args.quiet)
    print(f"wrote {n} frames of soft {args.format} mattes to {args.out}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out, backend=args.backend, weights=args.weights, device=args.device, quiet=args.quiet,
                    sam2_model=args.sam2_model)


def cmd_bench(args) -> int:
    h, w = (int(v) for v in args.size.lower().split("x"))
    if args.model == "xmem":
        from ..models.xmem.bench import run_bench

        res = run_bench(size=(h, w), frames=args.frames, objects=args.objects, device=args.device,
                        weights=args.weights, fast=args.fast)
    elif args.model == "e2fgvi":
        from ..models.e2fgvi.bench import run_bench

        res = run_bench(size=(h, w), frames=args.frames, device=args.device, weights=args.weights, fast=args.fast)
    elif args.model == "sam2":
        from ..models.sam2.bench import run_bench

        res = run_bench(size=(h, w), frames=args.frames, objects=args.objects, device=args.device,
                        weights=args.weights, fast=args.fast, model_size=args.sam2_model or "tiny",
                        image_size=args.image_size)
    else:
        from ..models.sam import embed_bench

        res = embed_bench(args.sam_model, device=args.device, fast=args.fast)
    print(json.dumps(res, indent=1, default=str))
    return 0


# ------------------------------------------------------------------ parser
def _add_backend_args(p: argparse.ArgumentParser) -> None:
    from ..models.backends import BACKENDS, SAM2_MODELS

    p.add_argument("--backend", choices=list(BACKENDS), default=None,
                   help="classic = weight-free OpenCV; neural = SAM + XMem + E2FGVI-HQ; sam2 = SAM 2.1 clicks and "
                   "tracking + E2FGVI-HQ (default: the session's, else classic)")
    p.add_argument("--sam2-model", choices=SAM2_MODELS, default=None,
                   help="SAM 2.1 size for --backend sam2 (default: the session's, else base_plus)")
    p.add_argument("--sam2-image-size", type=int, default=1024, help=argparse.SUPPRESS)  # tests: a small input
    p.add_argument("--weights", choices=["official", "synthetic"], default="official",
                   help="official checkpoints from the weights cache, or synthetic ones (meaningless output, for tests)")
    p.add_argument("--weights-dir", default=None, help="checkpoint folder (default: $TAM_WEIGHTS_DIR or ~/.cache/track-anything)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--sam-model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--half", action="store_true", default=None,
                   help="fp16 XMem and E2FGVI on a GPU: about twice as fast, results within ~1e-2 of fp32")


def _add_track_parser(sub) -> None:
    """`tam track`: prompts on keyframes, then tracking into a session."""
    p = sub.add_parser("track", help="segment from clicks/boxes and track through the clip into a session")
    p.add_argument("video")
    p.add_argument("--session", required=True, help="session folder (created if missing)")
    p.add_argument("--click", action="append", type=_parse_point, default=[], metavar="F:X,Y[:OBJ]",
                   help="positive click on source frame F at pixel X,Y (origin top-left); OBJ defaults to 1")
    p.add_argument("--neg-click", action="append", type=_parse_point, default=[], metavar="F:X,Y[:OBJ]",
                   help="negative click (not the object)")
    p.add_argument("--box", action="append", type=_parse_box, default=[], metavar="F:X0,Y0,X1,Y1[:OBJ]")
    p.add_argument("--range", type=_parse_range, default=None, metavar="A:B", help="frames to track (inclusive)")
    p.add_argument("--direction", choices=["forward", "backward", "both"], default="both")
    p.add_argument("--refine", dest="refine", action="store_true", default=None,
                   help="SAM refinement where tracking confidence drops (default: on for neural)")
    p.add_argument("--no-refine", dest="refine", action="store_false")
    _add_backend_args(p)
    p.set_defaults(func=cmd_track)


def _add_bench_parser(sub) -> None:
    """`tam bench`: speed and memory of one network."""
    from ..models.backends import SAM2_MODELS

    p = sub.add_parser("bench", help="measure speed and memory of a network")
    p.add_argument("model", choices=["xmem", "e2fgvi", "sam", "sam2"])
    p.add_argument("--size", default="480x854", help="HxW")
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--weights", default="synthetic")
    p.add_argument("--device", default="auto")
    p.add_argument("--fast", action="store_true", help="autocast (bf16/fp16) fast path on CUDA")
    p.add_argument("--sam-model", default="vit_h", choices=["vit_b", "vit_l", "vit_h"])
    p.add_argument("--sam2-model", default=None, choices=SAM2_MODELS,
                   help="SAM 2.1 size for `bench sam2` (default tiny); --fast also prints half-vs-fp32 on the fixture")
    p.add_argument("--image-size", type=int, default=1024, help="SAM 2.1 input size for `bench sam2` (default 1024)")
    p.set_defaults(func=cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    """The `tam` argument parser."""
    ap = argparse.ArgumentParser(prog="tam", description="Track Anything: click, track, matte and remove objects in video.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="describe a video file or image sequence")
    p.add_argument("video")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    _add_track_parser(sub)

    p = sub.add_parser("export", help="write the session's mattes")
    p.add_argument("session")
    p.add_argument("--format", choices=["png", "labels", "exr", "alpha", "rgba", "prores"], default="png",
                   help="png = 0/255 masks, labels = id maps, exr = float alpha, alpha = 16-bit PNG alpha, "
                        "rgba = 16-bit premultiplied RGBA PNG, prores = ProRes 4444 .mov per object")
    p.add_argument("--out", required=True)
    p.add_argument("--hard", action="store_true", help="hard 0/1 mattes (the tracker's masks), no soft alpha")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inpaint", help="remove tracked objects from the video")
    p.add_argument("video")
    p.add_argument("--session", required=True)
    p.add_argument("--objects", type=_parse_ids, required=True, help="object ids, e.g. 1,2")
    p.add_argument("--out", required=True, help="OUT.mp4 or a folder for a PNG sequence")
    p.add_argument("--dilate", type=int, default=8, help="grow the masks by this many pixels")
    p.add_argument("--feather", type=int, default=0, help="soften the seam inside the mask (pixels)")
    _add_backend_args(p)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("eval", help="J, F, J&F (DAVIS) and, for 16-bit soft ground truth, alpha errors")
    p.add_argument("pred", help="PRED_DIR/<object_id>/<frame:05d>.png")
    p.add_argument("gt", help="GT_DIR/<object_id>/<frame:05d>.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("matte", help="refine a folder of binary masks into soft alpha at the video's resolution")
    p.add_argument("video")
    p.add_argument("--masks", required=True, help="MASKS_DIR/<object_id>/<frame:05d>.png (0/255)")
    p.add_argument("--out", required=True, help="OUT_DIR/<object_id>/<frame:05d>.png|.exr")
    p.add_argument("--format", choices=["alpha", "exr"], default="alpha",
                   help="alpha = 16-bit PNG, exr = float32 OpenEXR")
    p.set_defaults(func=cmd_matte)

    p = sub.add_parser("demo", help="make a sample clip, click, track, export and inpaint it")
    p.add_argument("--out", default="demo_out")
    _add_backend_args(p)
    p.set_defaults(func=cmd_demo)

    _add_bench_parser(sub)

    from .cli_weights import add_weights_parser

    add_weights_parser(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tam` console script."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Cancelled as exc:
        print(f"tam: cancelled: {exc}", file=sys.stderr)
        return EXIT_CANCELLED
    except TamError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"tam: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tam: interrupted", file=sys.stderr)
        return EXIT_CANCELLED
    except OSError as exc:  # disk full, permission denied: still one line
        if args.debug:
            traceback.print_exc()
        print(f"tam: error: {as_disk_error(exc) or exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: say so in one line, the traceback is one flag away
        if args.debug:
            traceback.print_exc()
        print(f"tam: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
