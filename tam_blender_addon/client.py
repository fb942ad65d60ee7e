"""The client side of the worker: spawn it, send requests, resolve their futures (stdlib only).

Every request is a `Future` returned at once by `WorkerClient.request`. The worker's
events are read by a thread into a queue; `WorkerClient.pump` (called from a
``bpy.app.timers`` callback inside Blender, directly by tests and background scripts)
takes them off the queue and resolves the futures, so their callbacks run on the thread
that pumps - Blender's main thread. `Future.result` pumps until its answer is in (the
CLI's and background mode's blocking `call`). The worker is a separate Python with
torch, started with `subprocess.Popen` as ``PYTHON <root>/tam_blender_addon/launch.py
worker --events-fd N`` (Windows: ``--events-handle H``).

Threads: one reads the events pipe into the queue, one drains the worker's stderr (which
also receives its stdout) into the log file, keeping the last lines for error messages.
End-of-file on the events pipe means the worker has ended: an ``exited`` event carries
its return code and last output, and every pending future fails with TamError.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from . import errors
from .errors import TamError
from .protocol import (
    PROTOCOL_VERSION,
    Event,
    LineReader,
    ProtocolError,
    ProtocolVersionError,
    decode_event,
    encode_request,
)

__all__ = ["Event", "Future", "WorkerClient", "check_hello", "error_from_event"]

LOG = logging.getLogger(__name__)
LAUNCH = Path(__file__).resolve().with_name("launch.py")
STDERR_TAIL_LINES = 200
STDERR_LINE_LIMIT = 8192  # longer stderr lines are cut (bounded memory)
_EXITED = "exited"
_PUMP_SLICE_S = 0.05  # how often a blocked `result` looks whether another thread resolved it
# Interpreter settings of the parent (Blender's Python) that would break another Python.
_DROP_ENV = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE")


def error_from_event(event: Event) -> TamError:
    """The TamError (subclass named by the worker, when known) an error event stands for."""
    message = str(event.data.get("message") or "the worker reported an error without a message")
    name = event.data.get("error")
    cls = getattr(errors, name, None) if isinstance(name, str) else None
    if name == "ProtocolError":
        exc: TamError = ProtocolError(message, event.req)
    elif isinstance(cls, type) and issubclass(cls, TamError):
        exc = cls(message)
    else:
        exc = TamError(message)
    exc.event = event  # type: ignore[attr-defined] - the traceback etc. for the log / a report
    return exc


def check_hello(info: dict[str, Any], python: str = "") -> None:
    """TamError unless the hello answer comes from a worker speaking our protocol version."""
    version = info.get("protocol")
    if version != PROTOCOL_VERSION:
        where = f" at {python}" if python else ""
        raise TamError(
            f"the worker{where} speaks protocol {version!r} but this add-on speaks {PROTOCOL_VERSION}: "
            "update the worker environment to this version of the extension"
        )


class Future:
    """The answer to one request: resolved by `WorkerClient.pump`, callbacks run on the pumping thread.

    `add_event_callback` receives the request's progress/warning/log events, `add_done_callback`
    the future itself once its result or error is in. `result` blocks (pumping) until then.
    """

    def __init__(self, client: WorkerClient, req: int, cmd: str) -> None:
        self.client = client
        self.req = req
        self.cmd = cmd
        self._data: dict[str, Any] | None = None
        self._error: TamError | None = None
        self._done = threading.Event()
        self._done_callbacks: list[Callable[[Future], None]] = []
        self._event_callbacks: list[Callable[[Event], None]] = []

    def __repr__(self) -> str:
        state = "pending" if not self.done() else ("error" if self._error else "done")
        return f"<Future {self.cmd} #{self.req} {state}>"

    def done(self) -> bool:
        """True once the result or the error is in."""
        return self._done.is_set()

    def add_done_callback(self, fn: Callable[[Future], None]) -> Future:
        """Call `fn(self)` when resolved (at once, here, if it already is); returns self."""
        if self.done():
            fn(self)
        else:
            self._done_callbacks.append(fn)
        return self

    def add_event_callback(self, fn: Callable[[Event], None]) -> Future:
        """Call `fn(event)` for each progress/warning/log event of this request; returns self."""
        self._event_callbacks.append(fn)
        return self

    def exception(self) -> TamError | None:
        """The error the request ended with (None while pending or on success)."""
        return self._error

    def result(self, timeout: float | None = None) -> dict[str, Any]:
        """The result data, pumping the client until it is in; TamError (the worker's) on failure.

        After `timeout` seconds without an answer: TamError, and the request is let go (a
        job keeps running in the worker: `cancel` it; its later events go to `poll`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.client._forget(self)
                raise TamError(f"the worker did not answer {self.cmd} within {timeout:g} s")
            self.client._pump_once(_PUMP_SLICE_S if left is None else min(left, _PUMP_SLICE_S))
        if self._error is not None:
            raise self._error
        assert self._data is not None
        return self._data

    def cancel(self) -> None:
        """Ask the worker to stop this request's job between frames (a short request just runs)."""
        self.client.cancel(self.req)

    def _event(self, event: Event) -> bool:
        """Apply one event of this request; True once it resolved the future."""
        if event.kind == "result":
            self._resolve(event.data, None)
            return True
        if event.kind == "error":
            self._resolve(None, error_from_event(event))
            return True
        if event.kind == _EXITED:
            self._resolve(None, TamError(self.client._exit_message()))
            return True
        for fn in list(self._event_callbacks):
            self._run(fn, event)
        if not self._event_callbacks and event.kind != "progress":
            self.client._unclaimed.append(event)  # warnings and logs stay visible to poll()
        return False

    def _resolve(self, data: dict[str, Any] | None, error: TamError | None) -> None:
        if self.done():
            return
        self._data, self._error = data, error
        self._done.set()
        callbacks, self._done_callbacks = self._done_callbacks, []
        for fn in callbacks:
            self._run(fn, self)

    def _run(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run one callback; its failure is logged and never stops the pump or the other callbacks."""
        try:
            fn(arg)
        except Exception:  # noqa: BLE001 - one bad follow-up must not lose the other answers
            LOG.exception("a callback of %r failed", self)


class WorkerClient:
    """One worker process and the conversation with it."""

    def __init__(
        self,
        python: str | None = None,
        *,
        env: dict[str, str] | None = None,
        log_path: str | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        """`python`: the worker interpreter (default: this one); `env`: extra environment
        variables for it; `log_path`: file that receives the worker's stderr/stdout;
        `worker_args`: extra command-line options for the worker (e.g. ``--log PATH``)."""
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.log_path = log_path
        self.worker_args = list(worker_args or [])
        self.info: dict[str, Any] = {}
        self.returncode: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._events_in: IO[bytes] | None = None
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._route_lock = threading.Lock()
        self._queue: queue.Queue[Event] = queue.Queue()
        self._pending: dict[int, Future] = {}
        self._unclaimed: collections.deque[Event] = collections.deque()
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._threads: list[threading.Thread] = []
        self._exited: Event | None = None
        self._stopping = False

    # ---------------------------------------------------------------- life cycle
    def command(self, events_arg: list[str]) -> list[str]:
        """The worker's command line."""
        return [self.python, str(LAUNCH), "worker", *events_arg, *self.worker_args]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        env["PYTHONUNBUFFERED"] = "1"  # the last lines before a crash reach the log
        env["PYTHONIOENCODING"] = "utf-8"
        env.update(self.env)
        return env

    def spawn(self) -> None:
        """Start the worker process and the reader threads (no handshake; see `start`)."""
        if self._proc is not None:
            raise TamError("the worker was already started")
        read_fd, write_fd = os.pipe()
        kwargs: dict[str, Any] = {}
        if os.name == "nt":  # pragma: no cover - exercised on Windows only
            import msvcrt

            handle = msvcrt.get_osfhandle(write_fd)
            os.set_handle_inheritable(handle, True)
            info = subprocess.STARTUPINFO()
            info.lpAttributeList = {"handle_list": [handle]}
            kwargs.update(startupinfo=info, close_fds=True,
                          creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
            events_arg = ["--events-handle", str(handle)]
        else:
            kwargs.update(pass_fds=(write_fd,), start_new_session=True)
            events_arg = ["--events-fd", str(write_fd)]
        try:
            self._proc = subprocess.Popen(
                self.command(events_arg),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._environment(),  # same working folder as ours: relative paths agree
                **kwargs,
            )
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            raise TamError(f"could not start the worker Python {self.python!r}: {exc}") from None
        os.close(write_fd)  # only the worker holds the write end: EOF == worker gone
        self._events_in = os.fdopen(read_fd, "rb", buffering=1 << 16)
        for target, name in ((self._read_events, "events"), (self._drain_output, "output")):
            t = threading.Thread(target=target, name=f"tam-worker-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def start(self, timeout: float = 60) -> dict[str, Any]:
        """Spawn the worker and shake hands; its hello info. TamError if it cannot serve us."""
        self.spawn()
        try:
            info = self.call("hello", timeout=timeout)
        except TamError as exc:
            self._abort()
            raise TamError(f"the worker did not start: {exc}") from None
        try:
            check_hello(info, self.python)
        except TamError:
            self._abort()
            raise
        self.info = info
        return info

    def shutdown(self, timeout: float = 5) -> None:
        """Ask the worker to stop (its job ends between frames), then make sure it has."""
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        if proc.poll() is None:
            try:
                self.send("shutdown")
            except TamError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._close()

    def _abort(self) -> None:
        """Kill the worker at once (a failed start)."""
        self._stopping = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._close()

    def _close(self) -> None:
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)
        if self.returncode is None and proc is not None:
            self.returncode = proc.poll()

    def __enter__(self) -> WorkerClient:
        if self._proc is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def alive(self) -> bool:
        """True while the worker process runs and its events channel is open."""
        return self._proc is not None and self._exited is None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The worker's process id (None before `spawn`)."""
        return self._proc.pid if self._proc is not None else None

    def output_tail(self, lines: int = 20) -> list[str]:
        """The last lines the worker wrote to stderr/stdout."""
        return list(self._tail)[-lines:]

    # ---------------------------------------------------------------- requests
    def request(self, cmd: str, **params: Any) -> Future:
        """Send `cmd`; its Future, at once (resolved by `pump`, or by waiting on `Future.result`)."""
        req = next(self._ids)
        future = Future(self, req, cmd)
        with self._route_lock:
            if self._exited is not None:
                raise TamError(self._exit_message())
            self._pending[req] = future
        try:
            self._send(req, cmd, params)
        except TamError:
            self._forget(future)
            raise
        return future

    def send(self, cmd: str, **params: Any) -> int:
        """Send `cmd` without a future; its id (its events are left for `poll`)."""
        return self._send(next(self._ids), cmd, params)

    def _send(self, req: int, cmd: str, params: dict[str, Any]) -> int:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise TamError("the worker is not started")
        if self._exited is not None:
            raise TamError(self._exit_message())
        line = encode_request(req, cmd, params)
        if cmd == "shutdown":
            self._stopping = True  # its exit is then the expected one
        with self._send_lock:
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                if self._stopping:
                    raise TamError("the worker has been shut down") from None
                self._wait_exit(2.0)  # a broken pipe: the worker is dying, learn its exit code
                raise TamError(self._exit_message()) from None
        return req

    def _forget(self, future: Future) -> None:
        """Stop routing events to `future` (its later events go to `poll`)."""
        with self._route_lock:
            if self._pending.get(future.req) is future:
                del self._pending[future.req]

    @property
    def pending(self) -> int:
        """How many futures still wait for their answer."""
        return len(self._pending)

    def _dispatch(self, event: Event) -> None:
        """Resolve the future `event` belongs to, or keep it for `poll`."""
        if event.kind == _EXITED:
            with self._route_lock:
                futures, self._pending = list(self._pending.values()), {}
            for future in futures:
                future._event(event)
            self._unclaimed.append(event)
            return
        future = self._pending.get(event.req) if event.req is not None else None
        if future is None:
            self._unclaimed.append(event)
        elif future._event(event):
            self._forget(future)

    def _pump_once(self, timeout: float) -> None:
        """Wait up to `timeout` s for one event and dispatch it."""
        try:
            event = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return
        self._dispatch(event)

    def pump(self) -> list[Event]:
        """Dispatch every event that has arrived (running the futures' callbacks here); never blocks.

        Returns the events no future claimed: ``exited``, warnings without a request,
        events of requests sent with `send` or given up on.
        """
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                break
            self._dispatch(event)
        out = list(self._unclaimed)
        self._unclaimed.clear()
        return out

    poll = pump  # the name the long-job code and tests know

    def wait_event(self, timeout: float | None = None) -> Event | None:
        """The next unclaimed event, pumping up to `timeout` seconds (None if none came)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._unclaimed:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._pump_once(_PUMP_SLICE_S if left is None else min(left, _PUMP_SLICE_S))
        return self._unclaimed.popleft()

    def call(
        self,
        cmd: str,
        timeout: float | None = None,
        on_event: Callable[[Event], None] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Send `cmd` and wait for its result (`request(...).result(timeout)`); progress and
        warnings go to `on_event` (without one, warnings and logs are left for `poll`).

        Raises TamError (the subclass the worker named) on an error event, when the
        worker exits, or after `timeout` seconds without an answer.
        """
        future = self.request(cmd, **params)
        if on_event is not None:
            future.add_event_callback(on_event)
        return future.result(timeout)

    def cancel(self, req_id: int | None = None) -> None:
        """Ask the running job (or job `req_id`) to stop between frames; does not wait."""
        params = {} if req_id is None else {"req": req_id}
        if self.alive:
            self.send("cancel", **params)

    # ---------------------------------------------------------------- readers
    def _route(self, event: Event) -> None:
        self._queue.put(event)

    def _read_events(self) -> None:
        """Events pipe -> queue/waiters until end-of-file, then the `exited` event."""
        assert self._events_in is not None
        reader = LineReader(self._events_in)
        while True:
            try:
                line = reader.read()
            except ProtocolError as exc:
                self._route(Event("warning", None, {"message": f"bad message from the worker: {exc}"}))
                continue
            except (OSError, ValueError):
                break
            if not line:
                break
            try:
                event = decode_event(line)
            except ProtocolVersionError as exc:  # answer the request it was meant for
                self._route(Event("error", exc.req, {"message": f"the worker {exc}", "error": "ProtocolError",
                                                     "worker_protocol": exc.version}))
                continue
            except ProtocolError as exc:
                self._route(Event("warning", None, {"message": f"bad message from the worker: {exc}"}))
                continue
            self._route(event)
        try:
            self._events_in.close()
        except OSError:
            pass
        self._wait_exit(5.0)
        self._on_exit()

    def _wait_exit(self, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # channel closed but the process lingers: end it
            proc.kill()
            proc.wait()

    def _on_exit(self) -> None:
        proc = self._proc
        code = proc.poll() if proc is not None else None
        self.returncode = code
        for t in self._threads:  # let the output drain catch the last lines (a traceback)
            if t is not threading.current_thread():
                t.join(1.0)
        expected = self._stopping and code == 0
        data = {"returncode": code, "expected": expected, "output_tail": self.output_tail(20)}
        with self._route_lock:
            self._exited = Event(_EXITED, None, data)
        self._queue.put(self._exited)

    def _exit_message(self) -> str:
        code = self.returncode
        if code is None and self._proc is not None:
            code = self._proc.poll()
        tail = [ln for ln in self.output_tail(5) if ln.strip()]
        what = "worker exited" if self._stopping and code == 0 else "worker exited unexpectedly"
        msg = f"{what} (code {code})"
        if tail:
            msg += "; last output: " + " | ".join(tail)
        return msg

    def _drain_output(self) -> None:
        """Worker stderr+stdout -> log file and the bounded tail kept for error messages."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        log = None
        if self.log_path:
            try:
                Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
                log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
            except OSError:
                log = None
        try:
            while True:
                raw = proc.stdout.readline(STDERR_LINE_LIMIT)
                if not raw:
                    break
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._tail.append(text)
                if log is not None:
                    log.write(text + "\n")
                    log.flush()
        except (OSError, ValueError):
            pass
        finally:
            if log is not None:
                log.close()
