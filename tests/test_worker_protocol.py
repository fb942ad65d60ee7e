"""The real worker process behind the protocol: handshake, fuzzing, noise, death, clean exit.

These start `launch.py worker` with this interpreter; no session or engine is needed.
One worker is shared by the fuzz tests (each ends by checking it still answers hello).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from worker_raw import send_raw  # beside the tests (conftest)

from track_anything.tam_blender_addon.client import WorkerClient
from track_anything.tam_blender_addon.errors import SessionError, TamError
from track_anything.tam_blender_addon.protocol import MAX_MESSAGE_BYTES, PROTOCOL_VERSION, ProtocolError

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    client = WorkerClient(log_path=str(log))
    client.start(timeout=120)
    yield client
    client.shutdown()


def _error_events(client: WorkerClient, n: int = 1, timeout: float = 20) -> list:
    """The next `n` unclaimed events (they must be errors)."""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        ev = client.wait_event(timeout=0.2)
        if ev is not None:
            out.append(ev)
    assert len(out) == n, out
    assert all(ev.kind == "error" for ev in out), out
    return out


def _still_answers(client: WorkerClient) -> None:
    assert client.call("hello", timeout=30)["protocol"] == PROTOCOL_VERSION
    assert client.alive


def test_hello_reports_protocol_versions_python_torch_and_devices(worker):
    info = worker.info
    assert info["protocol"] == PROTOCOL_VERSION
    assert info["python"].count(".") == 2 and info["worker"]
    assert info["torch"] and isinstance(info["cuda"], bool)
    assert {"id": "cpu", "name": info["devices"][0]["name"]} == info["devices"][0]
    assert len(info["devices"]) >= 1 + int(info["cuda"])
    assert info["pid"] == worker.pid


@pytest.mark.parametrize(
    "raw, req, match",
    [
        (b"this is not json\n", None, "malformed message"),
        (b'{"v":1,"id":500,"cmd":"hel\n', None, "malformed message"),
        (b'{"v":2,"id":501,"cmd":"hello"}\n', 501, r"protocol version 2 not supported \(worker speaks 1\)"),
        (b'{"v":"1","id":502,"cmd":"hello"}\n', 502, r"protocol version '1' not supported"),
        (b'{"v":1,"id":503,"cmd":"fly_to_the_moon"}\n', 503, "unknown command 'fly_to_the_moon'"),
        (b'{"v":1,"id":504,"cmd":"segment","params":{"frame":"3"}}\n', 504,
         "segment: parameter 'frame' must be an integer, got '3'"),
        (b'{"v":1,"id":505,"cmd":"inpaint","params":{"objects":[1,"a"],"out":"x"}}\n', 505,
         "parameter 'objects' must be a list of integers"),
        (b'{"v":1,"id":506,"cmd":"track","params":{"direction":"both","speed":2}}\n', 506,
         "track: unknown parameter 'speed'"),
        (b'{"v":1,"id":507,"cmd":"export","params":{"format":"png"}}\n', 507, "export: missing parameter 'out'"),
        (b'{"v":1,"id":508,"cmd":"track","params":[0,10]}\n', 508, "'params' must be an object"),
        (b'{"v":1,"id":509,"cmd":"embed","params":{"frame":true}}\n', 509, "'frame' must be an integer"),
        (b"\n", None, "malformed message"),
    ],
)
def test_bad_requests_get_an_error_event_and_the_worker_keeps_answering(worker, raw, req, match):
    send_raw(worker, raw)
    (ev,) = _error_events(worker)
    assert ev.req == req
    assert ev.data["error"] == "ProtocolError"
    assert re.search(match, ev.data["message"]), ev.data["message"]
    _still_answers(worker)


def test_oversized_request_is_refused_whole_and_the_next_one_is_read(worker):
    big = b'{"v":1,"id":600,"cmd":"hello","params":{"pad":"' + b"x" * (MAX_MESSAGE_BYTES + 10) + b'"}}\n'
    send_raw(worker, big + b'{"v":1,"id":601,"cmd":"cancel"}\n')
    (ev,) = _error_events(worker)
    assert "too large" in ev.data["message"] and ev.req is None
    nxt = worker.wait_event(timeout=20)
    assert nxt is not None and (nxt.req, nxt.kind) == (601, "result") and nxt.data["cancelled"] is False
    _still_answers(worker)


def test_call_raises_protocol_error_with_the_workers_message(worker):
    with pytest.raises(ProtocolError, match="unknown parameter 'frame'"):
        worker.call("hello", frame=1, timeout=30)
    _still_answers(worker)


def test_engine_commands_without_a_session_say_open_session_first(worker):
    with pytest.raises(SessionError, match="no session is open"):
        worker.call("segment", frame=0, timeout=30)
    with pytest.raises(SessionError, match="no session is open"):
        worker.call("track", direction="both", timeout=30)
    assert worker.call("cancel", timeout=30) == {"cancelled": False, "req": None}


def test_noise_on_stdout_and_stderr_never_reaches_the_events(worker):
    before = len(worker.output_tail(200))
    result = worker.call("_noise", lines=5, timeout=30)
    assert result == {"printed": 5}
    time.sleep(0.3)
    assert worker.poll() == []  # the fake result lines printed to stdout were not taken for events
    tail = worker.output_tail(200)
    assert len(tail) > before
    assert any('"fake":true' in line for line in tail)  # the noise went to the log instead
    _still_answers(worker)


def test_noise_printed_before_the_worker_starts_is_harmless(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        "print('{\"v\":1,\"req\":1,\"kind\":\"result\",\"data\":{\"fake\":true}}')\n"
        "sys.stdout.flush()\n"
        "os.write(1, b'half a line without newline')\n"
        "print('startup noise on stderr', file=sys.stderr)\n"
    )
    log = tmp_path / "w.log"
    client = WorkerClient(env={"PYTHONPATH": str(tmp_path)}, log_path=str(log))
    try:
        info = client.start(timeout=120)
        assert info["protocol"] == PROTOCOL_VERSION and "fake" not in info
        _still_answers(client)
    finally:
        client.shutdown()
    text = log.read_text()
    assert "startup noise on stderr" in text and '"fake":true' in text


def test_truncated_last_request_is_reported_and_the_worker_exits_cleanly():
    client = WorkerClient()
    client.start(timeout=120)
    send_raw(client, b'{"v":1,"id":9,"cmd":"hello"')  # no newline, then the pipe closes
    client._proc.stdin.close()
    events = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(e.kind == "exited" for e in events):
        events.extend(client.poll())
        time.sleep(0.05)
    kinds = [(e.kind, e.req) for e in events]
    assert kinds[0] == ("error", None) and "truncated" in events[0].data["message"]
    assert events[-1].kind == "exited" and events[-1].data["returncode"] == 0
    client.shutdown()


def test_kill_9_is_reported_as_exited_and_fails_pending_calls():
    client = WorkerClient()
    client.start(timeout=120)
    os.kill(client.pid, signal.SIGKILL)
    with pytest.raises(TamError, match=r"worker exited unexpectedly \(code -9\)"):
        client.call("hello", timeout=30)
    events = client.poll()
    exited = [e for e in events if e.kind == "exited"]
    assert len(exited) == 1 and exited[0].data["returncode"] == -9 and exited[0].data["expected"] is False
    assert not client.alive
    with pytest.raises(TamError, match="worker exited unexpectedly"):
        client.request("hello")
    client.shutdown()


def test_shutdown_ends_the_worker_with_code_0_and_an_expected_exit():
    client = WorkerClient()
    client.start(timeout=120)
    client.shutdown(timeout=30)
    events = client.poll()
    assert events[-1].kind == "exited" and events[-1].data == {**events[-1].data, "returncode": 0, "expected": True}
    assert client.returncode == 0 and not client.alive


def test_worker_exits_when_its_client_disappears(tmp_path):
    # The client process dies without a word: the worker sees end of input and leaves.
    script = tmp_path / "parent.py"
    script.write_text(
        "from track_anything.tam_blender_addon.client import WorkerClient\n"
        "c = WorkerClient()\n"
        "c.start(timeout=120)\n"
        "print(c.pid, flush=True)\n"
        "import os; os._exit(0)\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    pid = int(out.stdout.strip())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the worker outlived its client")


def test_start_reports_a_python_that_cannot_run_the_worker(tmp_path):
    with pytest.raises(TamError, match="could not start the worker Python"):
        WorkerClient(python=str(tmp_path / "no-such-python")).start(timeout=10)
    bad = WorkerClient(python=sys.executable, env={"PYTHONHOME": str(tmp_path)})
    with pytest.raises(TamError, match=r"the worker did not start: worker exited unexpectedly \(code 1\)"):
        bad.start(timeout=60)
