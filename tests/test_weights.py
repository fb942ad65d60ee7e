"""Checkpoint registry: download (resume, restart, reject), verify, resolve, CLI — against a local HTTP server."""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from track_anything.models import weights
from track_anything.models.weights import Checkpoint
from track_anything.tam_blender_addon import cli_weights
from track_anything.tam_blender_addon.errors import Cancelled, InputError, WeightsError


class _Server:
    """A tiny HTTP file server whose behaviour each test can set (Range support written here)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.honour_range = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.content_type = "application/octet-stream"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                data = outer.files.get(self.path)
                rng = self.headers.get("Range")
                outer.requests.append({"path": self.path, "range": rng})
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and outer.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Type", outer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    body = body[: outer.cut_after]
                outer.requests[-1]["sent"] = len(body)
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    srv = _Server()
    yield srv
    srv.close()


def _payload(n: int = 200_000, seed: int = 0) -> bytes:
    return np.random.RandomState(seed).randint(0, 256, n, dtype=np.uint8).tobytes()


def _register(monkeypatch, server: _Server, data: bytes, *, name: str = "test_ckpt", sha256: str | None = "auto",
              size: int | None | str = "auto", md5: str | None = None) -> Checkpoint:
    filename = f"{name}.pth"
    server.files[f"/{filename}"] = data
    ckpt = Checkpoint(
        name=name, filename=filename, url=f"{server.url}/{filename}",
        size=len(data) if size == "auto" else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256,
        kind="test", md5=md5,
    )
    monkeypatch.setitem(weights.CHECKPOINTS, name, ckpt)
    return ckpt


def test_download_fetches_verifies_and_records_sidecar(tmp_path, server, monkeypatch):
    data = _payload()
    _register(monkeypatch, server, data)
    seen = []
    p = weights.download("test_ckpt", tmp_path, progress=lambda done, total: seen.append((done, total)))
    assert p == tmp_path / "test_ckpt.pth"
    assert p.read_bytes() == data
    assert not (tmp_path / "test_ckpt.pth.part").exists()
    assert seen[-1] == (len(data), len(data))
    record = json.loads(weights.sidecar_path(p).read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["published"] is True
    # a second call finds the verified file and does not touch the network
    n = len(server.requests)
    assert weights.download("test_ckpt", tmp_path) == p
    assert len(server.requests) == n


def test_download_resumes_truncated_part_with_range_request(tmp_path, server, monkeypatch):
    data = _payload(300_000, seed=1)
    _register(monkeypatch, server, data)
    (tmp_path / "test_ckpt.pth.part").write_bytes(data[:123_456])
    p = weights.download("test_ckpt", tmp_path)
    assert p.read_bytes() == data
    assert server.requests[-1]["range"] == "bytes=123456-"
    assert server.requests[-1]["sent"] == len(data) - 123_456


def test_download_restarts_when_server_ignores_range(tmp_path, server, monkeypatch):
    data = _payload(100_000, seed=2)
    _register(monkeypatch, server, data)
    server.honour_range = False
    (tmp_path / "test_ckpt.pth.part").write_bytes(b"\0" * 5_000)  # wrong bytes: must not be kept
    p = weights.download("test_ckpt", tmp_path)
    assert p.read_bytes() == data


def test_complete_part_is_verified_without_refetching(tmp_path, server, monkeypatch):
    data = _payload(50_000, seed=3)
    _register(monkeypatch, server, data)
    (tmp_path / "test_ckpt.pth.part").write_bytes(data)
    p = weights.download("test_ckpt", tmp_path)
    assert p.read_bytes() == data
    assert server.requests == []


def test_sha256_mismatch_is_rejected_and_bad_file_removed(tmp_path, server, monkeypatch):
    data = _payload(80_000, seed=4)
    _register(monkeypatch, server, data, sha256="0" * 64)
    with pytest.raises(WeightsError, match="rejected: .*sha256"):
        weights.download("test_ckpt", tmp_path)
    assert not (tmp_path / "test_ckpt.pth").exists()
    assert not (tmp_path / "test_ckpt.pth.part").exists()


def test_md5_mismatch_is_rejected(tmp_path, server, monkeypatch):
    data = _payload(10_000, seed=5)
    _register(monkeypatch, server, data, sha256=None, md5="f" * 32)
    with pytest.raises(WeightsError, match="md5"):
        weights.download("test_ckpt", tmp_path)
    assert not (tmp_path / "test_ckpt.pth").exists()


def test_interrupted_transfer_keeps_part_and_next_call_resumes(tmp_path, server, monkeypatch):
    data = _payload(150_000, seed=6)
    _register(monkeypatch, server, data)
    server.cut_after = 60_000
    with pytest.raises(WeightsError, match="run it again to resume"):
        weights.download("test_ckpt", tmp_path, timeout=5)
    part = tmp_path / "test_ckpt.pth.part"
    assert part.stat().st_size == 60_000
    server.cut_after = None
    p = weights.download("test_ckpt", tmp_path)
    assert p.read_bytes() == data
    assert server.requests[-1]["range"] == "bytes=60000-"


def test_cancel_raises_cancelled_and_keeps_part(tmp_path, server, monkeypatch):
    data = _payload(100_000, seed=7)
    _register(monkeypatch, server, data)
    monkeypatch.setattr(weights, "CHUNK", 8192)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        weights.download("test_ckpt", tmp_path, should_stop=stop)
    assert (tmp_path / "test_ckpt.pth.part").stat().st_size == 3 * 8192
    assert weights.download("test_ckpt", tmp_path).read_bytes() == data


def test_web_page_instead_of_file_is_rejected(tmp_path, server, monkeypatch):
    _register(monkeypatch, server, b"<html>virus scan warning</html>", sha256=None, size=None)
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(WeightsError, match="web page"):
        weights.download("test_ckpt", tmp_path)
    assert not (tmp_path / "test_ckpt.pth").exists()


def test_unreachable_server_is_one_line_weights_error(tmp_path, server, monkeypatch):
    _register(monkeypatch, server, b"x")
    with pytest.raises(WeightsError, match="HTTP 404"):
        weights.download("test_ckpt", tmp_path, url=f"{server.url}/nothing-here.pth")


def test_unpublished_sha256_is_recorded_and_later_change_detected(tmp_path, server, monkeypatch):
    data = _payload(40_000, seed=8)
    _register(monkeypatch, server, data, sha256=None, size=None)
    p = weights.download("test_ckpt", tmp_path)
    record = json.loads(weights.sidecar_path(p).read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest() and record["published"] is False
    res = weights.verify("test_ckpt", tmp_path)
    assert res.ok and res.status == "recorded"
    assert "no published sha256" in res.message
    p.write_bytes(data[:-1] + b"\x00")
    res = weights.verify("test_ckpt", tmp_path)
    assert not res.ok and res.status == "sha256-mismatch"


def test_verify_reports_ok_missing_and_wrong_size(tmp_path, monkeypatch, server):
    data = _payload(20_000, seed=9)
    _register(monkeypatch, server, data)
    res = weights.verify("test_ckpt", tmp_path)
    assert not res.ok and res.status == "missing" and "tam weights download test_ckpt" in res.message
    (tmp_path / "test_ckpt.pth").write_bytes(data)
    res = weights.verify("test_ckpt", tmp_path)
    assert res.ok and res.status == "ok" and res.sha256 == hashlib.sha256(data).hexdigest()
    (tmp_path / "test_ckpt.pth").write_bytes(data[:100])
    res = weights.verify("test_ckpt", tmp_path)
    assert not res.ok and res.status == "size-mismatch"


def test_resolve_missing_says_file_folder_and_command(tmp_path):
    with pytest.raises(WeightsError) as info:
        weights.resolve("sam_vit_b", tmp_path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "sam_vit_b_01ec64.pth" in msg and str(tmp_path) in msg
    assert f"tam weights download sam_vit_b --dir {tmp_path}" in msg


def test_resolve_rejects_wrong_size_without_hashing(tmp_path):
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"short")
    with pytest.raises(WeightsError, match="5 bytes, expected 375042383"):
        weights.resolve("sam_vit_b", tmp_path)


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TAM_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights.cache_dir() == tmp_path / "env"
    assert weights.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("TAM_WEIGHTS_DIR")
    assert weights.cache_dir().parts[-2:] == (".cache", "track-anything")
    assert weights.path("xmem", tmp_path) == tmp_path / "XMem.pth"


def test_registry_is_consistent():
    assert {"sam_vit_b", "sam_vit_l", "sam_vit_h", "xmem", "xmem_s012", "e2fgvi_hq"} <= set(weights.CHECKPOINTS)
    for ckpt in weights.CHECKPOINTS.values():
        assert ckpt.url.startswith("https://") and ckpt.url
        assert ckpt.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", ckpt.sha256)
        assert ckpt.note or ckpt.sha256, f"{ckpt.name}: an unpublished sha256 must be explained"
    for model_type, name in weights.SAM_NAMES.items():
        ckpt = weights.CHECKPOINTS[name]
        # the 6 hex digits in SAM's official file names are the start of the file's md5
        assert ckpt.filename == f"sam_{model_type}_{ckpt.md5[:6]}.pth"
        assert ckpt.url.endswith(ckpt.filename)
    assert weights.get("XMem-s012.pth").name == "xmem_s012"
    with pytest.raises(InputError, match="unknown checkpoint"):
        weights.get("nope")


def _cli(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="tam")
    cli_weights.add_weights_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    return args.func(args, out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_download_verify_list_path(tmp_path, server, monkeypatch):
    data = _payload(30_000, seed=10)
    _register(monkeypatch, server, data)
    code, out, err = _cli(["weights", "download", "test_ckpt", "--dir", str(tmp_path)])
    assert code == 0 and str(tmp_path / "test_ckpt.pth") in out and "100.0%" in err
    code, out, _ = _cli(["weights", "verify", "--dir", str(tmp_path)])
    assert code == 0 and "test_ckpt: OK" in out
    code, out, _ = _cli(["weights", "list", "--dir", str(tmp_path)])
    assert code == 0 and "sam_vit_h_4b8939.pth" in out and "missing" in out and "installed" in out
    code, out, _ = _cli(["weights", "path", "e2fgvi_hq", "--dir", str(tmp_path)])
    assert code == 0 and out.strip() == str(tmp_path / "E2FGVI-HQ-CVPR22.pth")
    (tmp_path / "test_ckpt.pth").write_bytes(b"broken")
    code, out, _ = _cli(["weights", "verify", "test_ckpt", "--dir", str(tmp_path)])
    assert code == 1 and "FAILED" in out


def test_cli_download_from_file_url(tmp_path, monkeypatch, server):
    data = _payload(5_000, seed=11)
    _register(monkeypatch, server, data)
    src = tmp_path / "by-hand.pth"
    src.write_bytes(data)
    code, out, _ = _cli(["weights", "download", "test_ckpt", "--dir", str(tmp_path / "c"),
                         "--url", src.as_uri(), "--quiet"])
    assert code == 0
    assert (tmp_path / "c" / "test_ckpt.pth").read_bytes() == data
    assert server.requests == []


def test_load_reads_state_dict_with_weights_only(tmp_path):
    import torch

    good = tmp_path / "good.pth"
    torch.save({"model": {"module.w": torch.ones(2)}}, good)
    sd = weights.load(good)
    assert list(sd) == ["w"] and torch.equal(sd["w"], torch.ones(2))
    evil = tmp_path / "evil.pth"
    torch.save({"w": argparse.Namespace(a=1)}, evil)  # arbitrary objects need full unpickling
    with pytest.raises(WeightsError, match="could not be read"):
        weights.load(evil)


def test_worker_weights_command_reports_the_registry_state(tmp_path):
    """The Blender side asks the worker (it never imports models.weights)."""
    from track_anything.tam_blender_addon.protocol import Request, decode_event
    from track_anything.tam_blender_addon.worker import EventChannel, Worker

    (tmp_path / weights.CHECKPOINTS["xmem"].filename).write_bytes(b"x")
    stream = io.BytesIO()
    Worker(EventChannel(stream)).handle(Request(7, "weights", {"dir": str(tmp_path)}))
    event = decode_event(stream.getvalue())
    assert (event.req, event.kind) == (7, "result")
    state = event.data
    assert state["folder"] == str(tmp_path) and state["sam_names"]["vit_b"] == "sam_vit_b"
    rows = {r["name"]: r for r in state["checkpoints"]}
    assert set(rows) == set(weights.CHECKPOINTS)
    assert rows["xmem"]["installed"] is True and rows["sam_vit_b"]["installed"] is False
    assert rows["sam_vit_b"]["size"] == 375042383 and rows["xmem"]["path"] == str(tmp_path / "XMem.pth")
