"""WorkerClient futures against the real worker: nothing resolves until someone pumps, callbacks
run on the pumping thread in answer order, a failing callback loses nothing, an exit fails them."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from track_anything.tam_blender_addon.client import WorkerClient
from track_anything.tam_blender_addon.errors import SessionError, TamError
from track_anything.tam_blender_addon.protocol import PROTOCOL_VERSION

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="uses POSIX signals")


@pytest.fixture(scope="module")
def worker():
    client = WorkerClient()
    client.start(timeout=120)
    yield client
    client.shutdown()


def _pump_until(client: WorkerClient, done, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, "no answer"
        client.pump()
        time.sleep(0.01)


def test_futures_resolve_only_when_pumped_on_the_pumping_thread_in_request_order(worker):
    seen: list[tuple[int, int, str]] = []

    def note(f) -> None:
        seen.append((f.req, threading.get_ident(), "error" if f.exception() else "result"))

    futures = [worker.request("hello"), worker.request("hello"),
               worker.request("segment", frame=0),  # no session: answered with an error
               worker.request("hello")]
    for f in futures:
        f.add_done_callback(note)
    time.sleep(0.5)  # the answers are in the queue by now, yet nothing is resolved behind our back
    assert not any(f.done() for f in futures) and worker.pending == 4
    _pump_until(worker, lambda: all(f.done() for f in futures))
    assert [r for r, _, _ in seen] == [f.req for f in futures]
    assert {t for _, t, _ in seen} == {threading.get_ident()}
    assert [k for _, _, k in seen] == ["result", "result", "error", "result"]
    assert isinstance(futures[2].exception(), SessionError)
    with pytest.raises(SessionError, match="no session is open"):
        futures[2].result()
    assert futures[0].result()["protocol"] == PROTOCOL_VERSION and worker.pending == 0


def test_a_failing_callback_does_not_stop_the_others(worker):
    got = []
    first = worker.request("hello").add_done_callback(lambda f: 1 / 0)
    second = worker.request("hello").add_done_callback(lambda f: got.append(f.req))
    _pump_until(worker, second.done)
    assert first.done() and got == [second.req]


def test_result_waits_by_pumping_and_times_out_with_a_clear_error(worker):
    assert worker.request("hello").result(timeout=30)["protocol"] == PROTOCOL_VERSION
    with pytest.raises(TamError, match="did not answer hello within 0 s"):
        worker.request("hello").result(timeout=0)
    time.sleep(0.3)
    assert any(e.kind == "result" for e in worker.poll())  # the late answer is left for poll


def test_the_workers_death_fails_every_pending_future():
    client = WorkerClient()
    client.start(timeout=120)
    os.kill(client.pid, signal.SIGSTOP)  # it cannot answer what follows
    futures = [client.request("hello") for _ in range(2)]
    os.kill(client.pid, signal.SIGKILL)
    _pump_until(client, lambda: all(f.done() for f in futures))
    for f in futures:
        assert "worker exited unexpectedly (code -9)" in str(f.exception())
    client.shutdown()
