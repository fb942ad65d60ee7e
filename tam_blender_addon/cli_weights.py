"""`tam weights list|download|verify|path`: the command line over the checkpoint registry.

The registry itself (URLs, hashes, download, verification) is `models.weights`; this is
only its command line, so that `models/` holds no CLI and Blender never imports it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from ..models import weights
from .errors import InputError, WeightsError


def add_weights_parser(subparsers) -> argparse.ArgumentParser:
    """Add `weights list|download|verify|path [--dir DIR]` to an argparse subparsers object."""
    parser = subparsers.add_parser("weights", help="list, download, verify or locate the official checkpoints")
    sub = parser.add_subparsers(dest="weights_cmd", required=True)
    dir_help = f"checkpoint folder (default: ${weights.ENV_DIR} or ~/.cache/track-anything)"
    p_list = sub.add_parser("list", help="show every known checkpoint and whether it is installed")
    p_dl = sub.add_parser("download", help="download (resumable) and verify checkpoints")
    p_dl.add_argument("names", nargs="+", metavar="NAME", help=f"checkpoint name(s) or 'all': {', '.join(weights.CHECKPOINTS)}")
    p_dl.add_argument("--url", default=None, help="fetch from this URL instead (a mirror, or file:///path)")
    p_dl.add_argument("--quiet", action="store_true", help="no progress output")
    p_ver = sub.add_parser("verify", help="hash installed checkpoints and compare with the registry")
    p_ver.add_argument("names", nargs="*", metavar="NAME", help="checkpoint name(s); default: every installed one")
    p_path = sub.add_parser("path", help="print where a checkpoint is (or would be) stored")
    p_path.add_argument("name", metavar="NAME")
    for p in (p_list, p_dl, p_ver, p_path):
        p.add_argument("--dir", default=None, help=dir_help)
    parser.set_defaults(func=run_weights)
    return parser


def _human(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _progress_printer(name: str, out) -> Callable[[int, int | None], None]:
    last = [0.0]

    def show(done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done != total:
            return
        last[0] = now
        pct = f" {100 * done / total:5.1f}%" if total else ""
        out.write(f"\r{name}: {_human(done)} / {_human(total)}{pct}")
        out.flush()
        if done == total:
            out.write("\n")

    return show


def run_weights(args: argparse.Namespace, out=None, err=None) -> int:
    """Carry out a parsed `weights` command; returns the process exit code (0 = all good)."""
    out = out or sys.stdout
    err = err or sys.stderr
    d = getattr(args, "dir", None)
    cmd = args.weights_cmd
    if cmd == "list":
        state = weights.registry_state(d)
        for row in state["checkpoints"]:
            sha = row["sha256"][:12] + "..." if row["sha256"] else "unpublished"
            installed = "installed" if row["installed"] else "missing"
            out.write(f"{row['name']:10s} {row['filename']:24s} {_human(row['size']):>9s}  sha256 {sha:15s} "
                      f"{installed}\n")
        out.write(f"folder: {state['folder']}\n")
        return 0
    if cmd == "path":
        try:
            out.write(f"{weights.path(args.name, d)}\n")
        except InputError as exc:
            err.write(f"error: {exc}\n")
            return 2
        return 0
    if cmd == "download":
        names = list(weights.CHECKPOINTS) if args.names == ["all"] else args.names
        if args.url and len(names) != 1:
            err.write("error: --url needs exactly one checkpoint name\n")
            return 2
        code = 0
        for name in names:
            try:
                show = None if args.quiet else _progress_printer(name, err)
                p = weights.download(name, d, progress=show, url=args.url)
                out.write(f"{name}: {p}\n")
            except (WeightsError, InputError) as exc:
                err.write(f"\nerror: {exc}\n")
                code = 1
        return code
    if cmd == "verify":
        names = args.names or [c.name for c in weights.CHECKPOINTS.values() if weights.path(c.name, d).is_file()]
        if not names:
            err.write(f"no checkpoints installed in {weights.cache_dir(d)}\n")
            return 1
        code = 0
        for name in names:
            try:
                res = weights.verify(name, d)
            except InputError as exc:
                err.write(f"error: {exc}\n")
                code = 2
                continue
            out.write(f"{name}: {'OK' if res.ok else 'FAILED'} ({res.status}) {res.message}\n")
            code = code or (0 if res.ok else 1)
        return code
    err.write(f"error: unknown weights command {cmd!r}\n")
    return 2
