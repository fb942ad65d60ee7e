"""Message encoding and checking of the worker protocol (no process involved)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from track_anything.tam_blender_addon import errors
from track_anything.tam_blender_addon.client import check_hello, error_from_event
from track_anything.tam_blender_addon.progress import Progress
from track_anything.tam_blender_addon.protocol import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Event,
    LineReader,
    ProtocolError,
    ProtocolVersionError,
    decode_event,
    decode_request,
    encode_event,
    encode_request,
    progress_data,
)


def test_request_round_trips_as_one_line():
    line = encode_request(7, "track", {"start": 0, "end": 9, "direction": "both", "name": "ü\nx"})
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # the newline inside the value is escaped
    req = decode_request(line)
    assert (req.id, req.cmd, req.params) == (7, "track", {"start": 0, "end": 9, "direction": "both", "name": "ü\nx"})
    assert json.loads(line)["v"] == PROTOCOL_VERSION


def test_event_round_trips_with_null_req():
    ev = decode_event(encode_event(None, "log", {"message": "hi"}))
    assert ev == Event("log", None, {"message": "hi"})
    ev = decode_event(encode_event(3, "result", {"a": [1, 2]}))
    assert ev == Event("result", 3, {"a": [1, 2]})


def test_request_without_params_means_empty_params():
    assert decode_request(b'{"v":1,"id":0,"cmd":"hello"}\n').params == {}


@pytest.mark.parametrize(
    "line, match",
    [
        (b"not json\n", "malformed message"),
        (b'{"v":1,"id":1,"cmd":"hel\n', "malformed message"),
        (b"[1, 2]\n", "expected a JSON object"),
        (b'{"v":1,"id":1,"cmd":"hello"}', "truncated message"),
        (b'\xff\xfe{"v":1}\n', "not UTF-8"),
        (b'{"id":1,"cmd":"hello"}\n', "no protocol version"),
        (b'{"v":1,"id":-1,"cmd":"hello"}\n', "'id' must be a non-negative integer"),
        (b'{"v":1,"id":true,"cmd":"hello"}\n', "'id' must be a non-negative integer"),
        (b'{"v":1,"id":"4","cmd":"hello"}\n', "'id' must be a non-negative integer"),
        (b'{"v":1,"id":4,"cmd":""}\n', "'cmd' must be a non-empty string"),
        (b'{"v":1,"id":4,"cmd":5}\n', "'cmd' must be a non-empty string"),
        (b'{"v":1,"id":4,"cmd":"track","params":[1]}\n', "'params' must be an object"),
    ],
)
def test_bad_request_lines_raise_protocol_error(line, match):
    with pytest.raises(ProtocolError, match=match):
        decode_request(line)


def test_broken_request_still_names_its_id_when_readable():
    with pytest.raises(ProtocolError) as info:
        decode_request(b'{"v":1,"id":4,"cmd":"track","params":"all"}\n')
    assert info.value.req == 4


def test_wrong_version_request_is_refused_with_both_versions_named():
    with pytest.raises(ProtocolVersionError, match=r"protocol version 2 not supported \(worker speaks 1\)") as info:
        decode_request(b'{"v":2,"id":9,"cmd":"hello"}\n')
    assert info.value.req == 9 and info.value.version == 2


def test_oversized_message_is_refused_on_both_ends():
    big = b'{"v":1,"id":1,"cmd":"x","params":{"s":"' + b"a" * MAX_MESSAGE_BYTES + b'"}}\n'
    with pytest.raises(ProtocolError, match="too large"):
        decode_request(big)
    with pytest.raises(ProtocolError, match="too large"):
        encode_event(1, "result", {"s": "a" * MAX_MESSAGE_BYTES})


def test_event_checks_version_kind_req_and_data():
    with pytest.raises(ProtocolVersionError, match=r"client speaks 1") as info:
        decode_event(b'{"v":2,"req":3,"kind":"result","data":{}}\n')
    assert info.value.req == 3
    with pytest.raises(ProtocolError, match="unknown kind"):
        decode_event(b'{"v":1,"req":3,"kind":"exited","data":{}}\n')
    with pytest.raises(ProtocolError, match="'req' must be"):
        decode_event(b'{"v":1,"req":"3","kind":"result","data":{}}\n')
    with pytest.raises(ProtocolError, match="'data' must be an object"):
        decode_event(b'{"v":1,"req":3,"kind":"result","data":[]}\n')


def test_encoders_refuse_what_json_cannot_carry():
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        encode_event(1, "result", {"x": math.nan})
    with pytest.raises(ProtocolError, match="cannot be encoded"):
        encode_request(1, "x", {"o": object()})
    with pytest.raises(ProtocolError, match="unknown event kind"):
        encode_event(1, "exited", {})
    with pytest.raises(ProtocolError, match="request id"):
        encode_request(-2, "hello")


def test_line_reader_skips_an_oversized_line_and_stays_in_step():
    stream = io.BytesIO(b"x" * 100 + b"\n" + b"ok\n" + b"cut")
    reader = LineReader(stream, limit=10)
    with pytest.raises(ProtocolError, match=r"too large \(101 bytes, limit 10\)"):
        reader.read()
    assert reader.read() == b"ok\n"
    with pytest.raises(ProtocolError, match="truncated"):
        reader.read()
    assert reader.read() == b""


def test_progress_data_has_every_field_and_is_json_safe():
    data = progress_data(Progress("track", 3, 10, frame=5, fps=math.inf, eta_s=math.nan, message="0->[1..9]"))
    assert data == {"stage": "track", "done": 3, "total": 10, "frame": 5, "fps": 0.0, "eta_s": None,
                    "message": "0->[1..9]"}
    assert decode_event(encode_event(1, "progress", data)).data == data


def test_hello_from_another_protocol_version_is_refused_clearly():
    check_hello({"protocol": PROTOCOL_VERSION})
    with pytest.raises(errors.TamError, match=r"speaks protocol 2 but this add-on speaks 1"):
        check_hello({"protocol": 2}, "/opt/py")


def test_error_events_become_the_named_error_class():
    exc = error_from_event(Event("error", 4, {"message": "frame 99 is outside", "error": "InputError"}))
    assert type(exc) is errors.InputError and str(exc) == "frame 99 is outside"
    assert type(error_from_event(Event("error", 4, {"message": "m", "error": "Cancelled"}))) is errors.Cancelled
    assert type(error_from_event(Event("error", 4, {"message": "m", "error": "ProtocolError"}))) is ProtocolError
    crash = error_from_event(Event("error", 4, {"message": "boom", "error": "ZeroDivisionError", "traceback": "tb"}))
    assert type(crash) is errors.TamError and crash.event.data["traceback"] == "tb"


def test_client_side_imports_neither_numpy_nor_torch():
    # client.py and protocol.py run inside Blender's Python, which has no torch.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import conftest, track_anything.tam_blender_addon.client; "
        "heavy = sorted(m for m in ('numpy', 'torch', 'cv2') if m in sys.modules); print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
