"""Checkpoint registry: official URLs, sizes and hashes; resumable download, verification, cache.

Every network the product runs on real weights (SAM ViT-B/L/H, XMem, E2FGVI-HQ) is listed
in CHECKPOINTS with the URL its authors publish. Downloads go to a ``.part`` file (resumed
with an HTTP Range request after an interruption) and are hashed while they arrive; the file
is moved into place only once its size and sha256 match. Where no sha256 is published the
size is checked and the sha256 seen on first download is written to a sidecar file
(``<file>.sha256.json``) so that later corruption is still caught. Standard library only
(urllib); loading is left to ``checkpoint.load_state_dict_file`` (weights_only=True).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write
from ..errors import Cancelled, InputError, WeightsError

ENV_DIR = "TAM_WEIGHTS_DIR"
CHUNK = 1 << 20
TIMEOUT_S = 30.0
USER_AGENT = "track-anything-blender/0.1 (+urllib)"
NO_SHA256_NOTE = "no published sha256; size checked, sha256 recorded on first download into a sidecar file"


@dataclass(frozen=True)
class Checkpoint:
    """One official checkpoint: where it comes from and how to recognise it."""

    name: str  # registry key, used on the command line
    filename: str  # the official file name
    url: str  # a URL urllib can fetch directly
    size: int | None  # bytes; None when no trustworthy figure was found
    sha256: str | None  # hex; None when none is published
    kind: str  # "sam" | "sam2" | "xmem" | "e2fgvi"
    md5: str | None = None  # hex, where the authors' file name encodes it (SAM)
    page: str = ""  # the official page a person would download from
    source: str = ""  # where size / sha256 were found
    note: str = ""  # caveats shown by `tam weights list`


_SAM = "https://dl.fbaipublicfiles.com/segment_anything/"
_SAM_PAGE = "https://github.com/facebookresearch/segment-anything#model-checkpoints"
_SAM_SRC = (
    "sha256 and size as recorded by several independent projects that verify the official file; "
    "md5 is the hash whose first 6 hex digits are in the official file name"
)
_XMEM = "https://github.com/hkchengrex/XMem/releases/download/v1.0/"
_XMEM_PAGE = "https://github.com/hkchengrex/XMem/releases/tag/v1.0"
_E2FGVI_GDRIVE_ID = "10wGdKSUOie0XmCr8SQ2A2FeDe-mfn5w3"
_SAM2 = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_SAM2_PAGE = "https://github.com/facebookresearch/sam2#model-description"

CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        Checkpoint(
            "sam_vit_b", "sam_vit_b_01ec64.pth", _SAM + "sam_vit_b_01ec64.pth", 375042383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", "sam",
            md5="01ec64d29a2fca3f0661936605ae66f8", page=_SAM_PAGE, source=_SAM_SRC,
        ),
        Checkpoint(
            "sam_vit_l", "sam_vit_l_0b3195.pth", _SAM + "sam_vit_l_0b3195.pth", 1249524607,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", "sam",
            md5="0b3195507c641ddb6910d2bb5adee89c", page=_SAM_PAGE, source=_SAM_SRC,
        ),
        Checkpoint(
            "sam_vit_h", "sam_vit_h_4b8939.pth", _SAM + "sam_vit_h_4b8939.pth", 2564550879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", "sam",
            md5="4b8939a88964f0f4ff5f5b2642c598a6", page=_SAM_PAGE, source=_SAM_SRC,
        ),
        Checkpoint(
            "xmem", "XMem.pth", _XMEM + "XMem.pth", None, None, "xmem", page=_XMEM_PAGE,
            source="official GitHub release v1.0; no size or hash published",
            note=NO_SHA256_NOTE,
        ),
        Checkpoint(
            "xmem_s012", "XMem-s012.pth", _XMEM + "XMem-s012.pth", None, None, "xmem", page=_XMEM_PAGE,
            source="official GitHub release v1.0 (the file Track-Anything uses); no size or hash published",
            note=NO_SHA256_NOTE,
        ),
        Checkpoint(
            "e2fgvi_hq", "E2FGVI-HQ-CVPR22.pth",
            f"https://drive.usercontent.google.com/download?id={_E2FGVI_GDRIVE_ID}&export=download&confirm=t",
            164535938, "afff989d41205598a79ce24630b9c83af4b0a06f45b137979a25937d94c121a5", "e2fgvi",
            page=f"https://drive.google.com/file/d/{_E2FGVI_GDRIVE_ID}/view?usp=sharing",
            source=(
                "the authors publish only a Google Drive / Baidu Disk link (MCG-NKU/E2FGVI README; "
                "Track-Anything fetches the same Drive id with gdown); size and sha256 from the Git LFS "
                "pointer of the Track-Anything Hugging Face mirror (camenduru/Track-Anything-hf)"
            ),
            note=(
                "no direct URL from the authors: the Google Drive download endpoint is used; if Drive "
                "answers with a web page, download the file from the page by hand (or Baidu Disk "
                "https://pan.baidu.com/s/1jfm1oFU1eIy-IRfuHP8YXw?pwd=ssb3) and run "
                "`tam weights download e2fgvi_hq --url file:///path/to/E2FGVI-HQ-CVPR22.pth`"
            ),
        ),
        *(
            Checkpoint(
                f"sam2.1_{size}", f"sam2.1_hiera_{size}.pt", f"{_SAM2}sam2.1_hiera_{size}.pt", None, None, "sam2",
                page=_SAM2_PAGE,
                source="official download list (checkpoints/download_ckpts.sh, release 09/28/2024); no size or hash published",
                note=f"about {mb} MB by third-party download pages (no exact size published); {NO_SHA256_NOTE}",
            )
            for size, mb in (("tiny", 149), ("small", 176), ("base_plus", 309), ("large", 857))
        ),
    )
}

SAM_NAMES = {"vit_b": "sam_vit_b", "vit_l": "sam_vit_l", "vit_h": "sam_vit_h"}
SAM2_NAMES = {size: f"sam2.1_{size}" for size in ("tiny", "small", "base_plus", "large")}


@dataclass
class VerifyResult:
    """What `verify` found for one checkpoint."""

    name: str
    path: Path
    ok: bool
    status: str  # "ok" | "recorded" | "missing" | "size-mismatch" | "sha256-mismatch" | "md5-mismatch"
    message: str  # one line for the user
    size: int | None = None  # actual bytes on disk
    sha256: str | None = None  # actual sha256 (None when the file is missing)


def get(name: str) -> Checkpoint:
    """The registry entry for `name` (registry key or official file name); InputError if unknown."""
    if name in CHECKPOINTS:
        return CHECKPOINTS[name]
    for ckpt in CHECKPOINTS.values():
        if ckpt.filename == name:
            return ckpt
    raise InputError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where checkpoints live: `override`, else $TAM_WEIGHTS_DIR, else ~/.cache/track-anything."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "track-anything"


def path(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The path checkpoint `name` has (or will have) in the cache."""
    return _dir(cache_dir) / get(name).filename


def sidecar_path(file: Path) -> Path:
    """The JSON file beside a checkpoint that records the sha256 and size seen on download."""
    return file.with_name(file.name + ".sha256.json")


def _dir(override: str | os.PathLike | None) -> Path:
    # for functions whose `cache_dir` parameter (the public API name) shadows cache_dir()
    return cache_dir(override)


def _download_cmd(name: str, cache_dir: str | os.PathLike | None) -> str:
    extra = f" --dir {Path(cache_dir).expanduser()}" if cache_dir else ""
    return f"tam weights download {name}{extra}"


def resolve(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of an installed checkpoint; WeightsError (one line, with the fix) if missing or wrong size.

    Cheap (no hashing): `verify` does the full check.
    """
    ckpt = get(name)
    p = path(name, cache_dir)
    if not p.is_file():
        raise WeightsError(
            f"checkpoint {ckpt.filename} not found (looked in {p.parent}); "
            f"get it with: {_download_cmd(name, cache_dir)}"
        )
    size = p.stat().st_size
    if ckpt.size is not None and size != ckpt.size:
        raise WeightsError(
            f"checkpoint {p} is {size} bytes, expected {ckpt.size} (incomplete or a different file); "
            f"fetch it again with: {_download_cmd(name, cache_dir)}"
        )
    return p


def _hash_file(p: Path, hashers: list) -> None:
    with open(p, "rb") as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                return
            for h in hashers:
                h.update(block)


def _read_sidecar(p: Path) -> dict | None:
    try:
        data = json.loads(sidecar_path(p).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("sha256"), str) else None


def _write_sidecar(p: Path, sha256: str, size: int, url: str, published: bool) -> None:
    data = {"sha256": sha256, "size": size, "url": url, "published": published, "recorded": time.time()}
    atomic_write(sidecar_path(p), json.dumps(data, indent=1).encode("utf-8"))


def _check_hashes(ckpt: Checkpoint, size: int, sha256: str, md5: str | None) -> tuple[str, str] | None:
    """(status, message) for the first published fact the file contradicts, or None if it fits."""
    if ckpt.size is not None and size != ckpt.size:
        return "size-mismatch", f"{ckpt.filename} is {size} bytes, expected {ckpt.size}"
    if ckpt.sha256 is not None and sha256 != ckpt.sha256:
        return "sha256-mismatch", f"{ckpt.filename} has sha256 {sha256[:12]}..., expected {ckpt.sha256[:12]}..."
    if ckpt.md5 is not None and md5 is not None and md5 != ckpt.md5:
        return "md5-mismatch", f"{ckpt.filename} has md5 {md5[:12]}..., expected {ckpt.md5[:12]}..."
    return None


def verify(name: str, cache_dir: str | os.PathLike | None = None) -> VerifyResult:
    """Hash the installed file and compare it with the registry (or with its sidecar record).

    A file with no published sha256 that has no sidecar yet (placed by hand) gets one now,
    so that later changes to it are detected.
    """
    ckpt = get(name)
    p = path(name, cache_dir)
    if not p.is_file():
        return VerifyResult(
            name, p, False, "missing",
            f"{ckpt.filename} not found in {p.parent}; get it with: {_download_cmd(name, cache_dir)}",
        )
    size = p.stat().st_size
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    _hash_file(p, [sha, md5])
    digest = sha.hexdigest()
    bad = _check_hashes(ckpt, size, digest, md5.hexdigest())
    if bad:
        status, msg = bad
        return VerifyResult(name, p, False, status, f"{msg}; fetch it again with: {_download_cmd(name, cache_dir)}",
                            size, digest)
    if ckpt.sha256 is not None:
        return VerifyResult(name, p, True, "ok", f"{ckpt.filename}: size and sha256 match the published values",
                            size, digest)
    record = _read_sidecar(p)
    if record is None:
        _write_sidecar(p, digest, size, ckpt.url, published=False)
        return VerifyResult(name, p, True, "recorded", f"{ckpt.filename}: {NO_SHA256_NOTE} (recorded now)",
                            size, digest)
    if record["sha256"] != digest:
        return VerifyResult(
            name, p, False, "sha256-mismatch",
            f"{ckpt.filename} changed since it was downloaded (sha256 {digest[:12]}... != recorded "
            f"{record['sha256'][:12]}...); fetch it again with: {_download_cmd(name, cache_dir)}",
            size, digest,
        )
    return VerifyResult(name, p, True, "recorded", f"{ckpt.filename}: {NO_SHA256_NOTE} (matches the record)",
                        size, digest)


def _open(url: str, start: int, timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if start > 0:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def download(
    name: str,
    cache_dir: str | os.PathLike | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    url: str | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Fetch checkpoint `name` into the cache and return its path; a verified file is kept as is.

    Resumes a previous ``.part`` with an HTTP Range request. The size and sha256 (and md5 for
    SAM) are checked before the file is moved into place; a mismatch removes the bad file and
    raises WeightsError. `progress(done, total)` is called as bytes arrive (total None if
    unknown); `should_stop()` returning True raises Cancelled and keeps the ``.part``.
    `url` overrides the registry URL (a mirror, or ``file://`` for a copy fetched by hand).
    """
    ckpt = get(name)
    dest = path(name, cache_dir)
    src = url or ckpt.url
    if dest.is_file():
        res = verify(name, cache_dir)
        if res.ok:
            if progress:
                progress(res.size or 0, res.size)
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    if ckpt.size is not None and have > ckpt.size:
        part.unlink()
        have = 0
    hashers = [hashlib.sha256(), hashlib.md5(usedforsecurity=False)]
    if have:
        _hash_file(part, hashers)
    total = ckpt.size
    if ckpt.size is None or have < ckpt.size:
        total = _fetch(src, part, have, hashers, total, progress, should_stop, timeout, ckpt)
    elif progress:
        progress(have, total)
    size = part.stat().st_size
    digest = hashers[0].hexdigest()
    bad = _check_hashes(ckpt, size, digest, hashers[1].hexdigest())
    if bad is None and total is not None and size != total:
        bad = ("size-mismatch", f"{ckpt.filename} is {size} bytes, the server announced {total}")
    if bad:
        part.unlink(missing_ok=True)
        raise WeightsError(f"download of {ckpt.filename} from {src} rejected: {bad[1]}; the bad file was removed")
    os.replace(part, dest)
    _write_sidecar(dest, digest, size, src, published=ckpt.sha256 is not None)
    return dest


def _fetch(src, part, have, hashers, total, progress, should_stop, timeout, ckpt) -> int | None:
    """Stream `src` into `part` from byte `have`, updating `hashers`; returns the total announced."""
    try:
        resp = _open(src, have, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the .part is already whole
            return total
        raise WeightsError(f"download of {ckpt.filename} failed: HTTP {exc.code} from {src}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(f"download of {ckpt.filename} failed: cannot reach {src} ({reason})") from exc
    with resp:
        status = getattr(resp, "status", None) or 200
        ctype = (resp.headers.get("Content-Type") or "").lower()
        if ctype.startswith("text/html"):
            raise WeightsError(
                f"download of {ckpt.filename}: {src} answered with a web page, not the file; "
                f"download it by hand from {ckpt.page or src} and pass it with --url file:///PATH"
            )
        mode = "wb"
        if have and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start is not None and start != have:
                raise WeightsError(f"download of {ckpt.filename}: server resumed at byte {start}, not {have}")
            mode = "ab"
        elif have:  # the server ignored the Range request: start again from byte 0
            have = 0
            hashers[:] = [hashlib.sha256(), hashlib.md5(usedforsecurity=False)]
        length = resp.headers.get("Content-Length")
        if length is not None and length.strip().isdigit():
            total = have + int(length)
        done = have
        with open(part, mode) as f:
            while True:
                if should_stop is not None and should_stop():
                    raise Cancelled(f"download of {ckpt.filename} cancelled at {done} bytes; run it again to resume")
                try:
                    block = resp.read(CHUNK)
                except (OSError, ValueError) as exc:
                    raise WeightsError(
                        f"download of {ckpt.filename} interrupted at {done} bytes ({exc}); run it again to resume"
                    ) from exc
                if not block:
                    break
                f.write(block)
                for h in hashers:
                    h.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
    if total is not None and done < total:
        raise WeightsError(f"download of {ckpt.filename} stopped at {done} of {total} bytes; run it again to resume")
    return total


# ----------------------------------------------------------------------------- state


def registry_state(cache_dir: str | os.PathLike | None = None) -> dict:
    """Every known checkpoint and whether it is installed (cheap: no hashing), as plain JSON.

    What `tam weights list` prints and what the worker's ``weights`` command answers, so
    the Blender side learns it without importing this module.
    """
    folder = _dir(cache_dir)
    rows = []
    for ckpt in CHECKPOINTS.values():
        p = folder / ckpt.filename
        rows.append({
            "name": ckpt.name, "filename": ckpt.filename, "kind": ckpt.kind, "size": ckpt.size,
            "sha256": ckpt.sha256, "installed": p.is_file(), "path": str(p), "page": ckpt.page,
            "note": ckpt.note,
        })
    return {"folder": str(folder), "checkpoints": rows, "sam_names": dict(SAM_NAMES)}


def load(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> dict:
    """State dict of a registry checkpoint (resolved in the cache) or of a file path, weights_only."""
    from .checkpoint import load_state_dict_file

    text = str(name_or_path)
    if text in CHECKPOINTS:
        return load_state_dict_file(resolve(text, cache_dir), what=f"checkpoint {text}")
    return load_state_dict_file(Path(text).expanduser(), what="checkpoint")
