"""A hostile or careless client against the speech service (issue 16), end to end on tiny converted
checkpoints: a table of bad input organised by class (each class one distinct kind of bad input),
hostile reference recordings in a voices directory, an overload, stalled and half-closed
connections and memory over mixed good and bad requests. The same server process must answer
/health and a good request after all of it (the crash canary). Servers bind 127.0.0.1 and are
always stopped."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from q3build import cli

from ..conftest import REPO
from ..wav import wav_bytes
from .conftest import FREED_MEMORY_POISONED, speech_server

pytestmark = pytest.mark.slow

STREAM_TIMEOUT = 3   # --tts-stream-timeout of the test servers, seconds
HANG = 60            # a request unanswered this long is a hang


def q3(*args):
    return cli.main(["--project", str(REPO), *args])


def start(built, name, model, *extra):
    # the models are shared with the speech service module; logs and files here carry a "hostile-" prefix.
    # Freed memory is poisoned, so a use after free crashes the canary instead of reading stale values
    return speech_server(built, f"hostile-{name}", model, "--tts-stream-timeout", str(STREAM_TIMEOUT), *extra,
                         env=FREED_MEMORY_POISONED)


@pytest.fixture(scope="module")
def cv(built):
    with start(built, "cv", "custom_voice", "--tts-slots", "2", "--tts-queue", "4") as s:
        yield s


GOOD = {"model": "qwen3-tts", "input": "Hello.", "voice": "vivian", "max_frames": 4, "seed": 1}


def post(server, body, content_type="application/json", timeout=HANG, **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(f"{server.base}/v1/audio/speech", data=data, headers=headers, timeout=timeout, **kw)


def raw_exchange(server, payload: bytes, half_close=False, timeout=HANG) -> bytes:
    """Sends bytes on a fresh connection and reads until the server closes it (or the response is
    complete for a keep-alive connection)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as s:
        s.sendall(payload)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
            head, sep, body = out.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= n:
                    break
        return out


def raw_status(resp: bytes) -> tuple[int, dict | None]:
    head, _, body = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def tone(n, rate=24000):
    t = np.arange(n) / rate
    return 0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))


def riff(fmt_tag=1, channels=1, rate=24000, bits=16, data=b"\x01\x00" * 24000, fmt_extra=b"", declared=None):
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * block, block, bits) + fmt_extra
    size = len(data) if declared is None else declared
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- the table ------------------------------------------------------------------------------------
# (class, case id, body, content type, status, error code, param); a body of bytes/str is sent as is

LONG = "x" * 50_000  # above every field limit, below the body limit (64 KiB)
BAD = [
    ("json-syntax", "unclosed", b"{not json", "application/json", 400, "invalid_json", None),
    ("json-syntax", "truncated", b'{"input": "Hi', "application/json", 400, "invalid_json", None),
    ("json-syntax", "empty-body", b"", "application/json", 400, "invalid_json", None),
    ("json-syntax", "nan-literal", b'{"input": "Hi", "speed": NaN}', "application/json", 400, "invalid_json", None),
    ("json-not-object", "array", [1, 2], None, 400, "invalid_request_body", None),
    ("json-not-object", "string", b'"hello"', "application/json", 400, "invalid_request_body", None),
    ("json-not-object", "null", None, None, 400, "invalid_request_body", None),
    ("json-deep-nesting", "30k-arrays", b"[" * 30_000 + b"]" * 30_000, "application/json", 400, "invalid_request_body", None),
    ("json-deep-nesting", "object-chain", ('{"a":' * 10_000 + "1" + "}" * 10_000).encode(), "application/json", 400,
     "missing_required_parameter", "input"),
    ("body-too-large", "1mb-input", {**GOOD, "input": "a" * 1_000_000}, None, 413, "request_too_large", None),
    ("body-too-large", "padding-field", {**GOOD, "padding": "p" * 200_000}, None, 413, "request_too_large", None),
    ("media-type-wrong", "text-plain", GOOD, "text/plain", 415, "unsupported_media_type", None),
    ("media-type-wrong", "form-urlencoded", "input=hi", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type", None),
    ("media-type-lookalike", "jsonx", GOOD, "application/jsonx", 415, "unsupported_media_type", None),
    ("media-type-lookalike", "json-suffix", GOOD, "application/json-patch+json", 415, "unsupported_media_type", None),
    ("media-type-missing", "no-header", GOOD, "", 415, "unsupported_media_type", None),
    ("input-missing", "null", {**GOOD, "input": None}, None, 400, "missing_required_parameter", "input"),
    ("input-missing", "absent", {k: v for k, v in GOOD.items() if k != "input"}, None, 400,
     "missing_required_parameter", "input"),
    ("input-type", "number", {**GOOD, "input": 42}, None, 400, "invalid_type", "input"),
    ("input-type", "array", {**GOOD, "input": ["Hi"]}, None, 400, "invalid_type", "input"),
    ("input-type", "object", {**GOOD, "input": {"text": "Hi"}}, None, 400, "invalid_type", "input"),
    ("input-type", "bool", {**GOOD, "input": True}, None, 400, "invalid_type", "input"),
    ("input-empty", "empty", {**GOOD, "input": ""}, None, 400, "empty_input", "input"),
    ("input-empty", "whitespace", {**GOOD, "input": " \n\t\r "}, None, 400, "empty_input", "input"),
    ("input-invisible", "nul", {**GOOD, "input": "\u0000\u0000\u0000"}, None, 400, "empty_input", "input"),
    ("input-invisible", "zero-width", {**GOOD, "input": "\u200b\u200c\u200d\u2060\ufeff"}, None, 400, "empty_input",
     "input"),
    ("input-invisible", "controls", {**GOOD, "input": "\u0001\u0007\u001b\u007f\u0085"}, None, 400, "empty_input",
     "input"),
    ("input-invisible", "bidi-marks", {**GOOD, "input": "\u200e\u200f\u202a\u202e \u00ad"}, None, 400, "empty_input",
     "input"),
    ("input-invalid-utf8", "ff-byte", b'{"input": "\xff\xfe bad", "voice": "vivian"}', "application/json", 400, None,
     None),
    ("input-invalid-utf8", "lone-surrogate", b'{"input": "\\ud800 x", "voice": "vivian"}', "application/json", 400,
     None, None),
    ("input-too-long", "ascii", {**GOOD, "input": "a" * 4097}, None, 400, "string_above_max_length", "input"),
    ("input-too-long", "cjk", {**GOOD, "input": "字" * 4097}, None, 400, "string_above_max_length", "input"),
    ("voice-unknown", "openai-name", {**GOOD, "voice": "alloy"}, None, 400, "voice_not_found", "voice"),
    ("voice-path", "traversal", {**GOOD, "voice": "../../etc/passwd"}, None, 400, "voice_not_found", "voice"),
    ("voice-path", "absolute", {**GOOD, "voice": "/etc/passwd"}, None, 400, "voice_not_found", "voice"),
    ("voice-path", "dotdot", {**GOOD, "voice": ".."}, None, 400, "voice_not_found", "voice"),
    ("voice-type", "number", {**GOOD, "voice": 3}, None, 400, "invalid_type", "voice"),
    ("voice-type", "list", {**GOOD, "voice": ["vivian"]}, None, 400, "invalid_type", "voice"),
    ("voice-type", "object-no-id", {**GOOD, "voice": {"name": "vivian"}}, None, 400, "invalid_type", "voice"),
    ("voice-type", "object-number-id", {**GOOD, "voice": {"id": 1}}, None, 400, "invalid_type", "voice"),
    ("voice-huge-name", "50kb", {**GOOD, "voice": LONG}, None, 400, "voice_not_found", "voice"),
    ("voice-control-chars", "nul-inside", {**GOOD, "voice": "viv\u0000ian"}, None, 400, "voice_not_found", "voice"),
    # mp3 and opus are served when the build has LAME and libopus (test_speech_serve.py)
    ("format-unsupported", "aac", {**GOOD, "response_format": "aac"}, None, 400, "unsupported_response_format",
     "response_format"),
    ("format-unsupported", "mp3-in-a-path", {**GOOD, "response_format": "../mp3"}, None, 400,
     "unsupported_response_format", "response_format"),
    ("format-unsupported", "upper-case", {**GOOD, "response_format": "WAV"}, None, 400, "unsupported_response_format",
     "response_format"),
    ("format-type", "number", {**GOOD, "response_format": 1}, None, 400, "invalid_type", "response_format"),
    ("format-huge", "50kb", {**GOOD, "response_format": LONG}, None, 400, "string_above_max_length",
     "response_format"),
    ("stream-format-value", "video", {**GOOD, "stream_format": "video"}, None, 400, "invalid_value", "stream_format"),
    ("stream-format-type", "bool", {**GOOD, "stream_format": True}, None, 400, "invalid_type", "stream_format"),
    ("stream-flac", "audio", {**GOOD, "stream_format": "audio", "response_format": "flac"}, None, 400,
     "unsupported_stream_format", "stream_format"),
    ("stream-flac", "sse", {**GOOD, "stream_format": "sse", "response_format": "flac"}, None, 400,
     "unsupported_stream_format", "stream_format"),
    ("speed-range", "too-slow", {**GOOD, "speed": 0.1}, None, 400, "out_of_range", "speed"),
    ("speed-range", "too-fast", {**GOOD, "speed": 4.5}, None, 400, "out_of_range", "speed"),
    ("speed-range", "zero", {**GOOD, "speed": 0}, None, 400, "out_of_range", "speed"),
    ("speed-range", "negative", {**GOOD, "speed": -1}, None, 400, "out_of_range", "speed"),
    ("speed-type", "string", {**GOOD, "speed": "fast"}, None, 400, "invalid_type", "speed"),
    ("speed-type", "bool", {**GOOD, "speed": True}, None, 400, "invalid_type", "speed"),
    ("number-overflow", "speed-1e999", b'{"input": "Hi", "speed": 1e999}', "application/json", 400, None, None),
    ("number-overflow", "max-frames-1e30", {**GOOD, "max_frames": 1e30}, None, 400, "out_of_range", "max_frames"),
    ("language-unknown", "klingon", {**GOOD, "language": "klingon"}, None, 400, "unsupported_language", "language"),
    ("language-type", "number", {**GOOD, "language": 7}, None, 400, "invalid_type", "language"),
    ("language-huge", "50kb", {**GOOD, "language": LONG}, None, 400, "string_above_max_length", "language"),
    ("seed-range", "negative", {**GOOD, "seed": -1}, None, 400, "out_of_range", "seed"),
    ("seed-range", "2^32", {**GOOD, "seed": 2 ** 32}, None, 400, "out_of_range", "seed"),
    ("seed-type", "fraction", {**GOOD, "seed": 1.5}, None, 400, "invalid_type", "seed"),
    ("seed-type", "string", {**GOOD, "seed": "7"}, None, 400, "invalid_type", "seed"),
    ("temperature-range", "negative", {**GOOD, "temperature": -0.5}, None, 400, "out_of_range", "temperature"),
    ("temperature-range", "too-hot", {**GOOD, "temperature": 2.5}, None, 400, "out_of_range", "temperature"),
    ("temperature-type", "string", {**GOOD, "temperature": "hot"}, None, 400, "invalid_type", "temperature"),
    ("top-p-range", "zero", {**GOOD, "top_p": 0}, None, 400, "out_of_range", "top_p"),
    ("top-p-range", "above-one", {**GOOD, "top_p": 1.5}, None, 400, "out_of_range", "top_p"),
    ("top-k-range", "negative", {**GOOD, "top_k": -1}, None, 400, "out_of_range", "top_k"),
    ("top-k-range", "huge", {**GOOD, "top_k": 100001}, None, 400, "out_of_range", "top_k"),
    ("top-k-type", "fraction", {**GOOD, "top_k": 2.5}, None, 400, "invalid_type", "top_k"),
    ("repetition-penalty-range", "low", {**GOOD, "repetition_penalty": 0.1}, None, 400, "out_of_range",
     "repetition_penalty"),
    ("repetition-penalty-range", "high", {**GOOD, "repetition_penalty": 3}, None, 400, "out_of_range",
     "repetition_penalty"),
    ("max-frames-range", "zero", {**GOOD, "max_frames": 0}, None, 400, "out_of_range", "max_frames"),
    ("max-frames-range", "negative", {**GOOD, "max_frames": -5}, None, 400, "out_of_range", "max_frames"),
    ("max-frames-range", "above-limit", {**GOOD, "max_frames": 100001}, None, 400, "out_of_range", "max_frames"),
    ("max-frames-type", "string", {**GOOD, "max_frames": "10"}, None, 400, "invalid_type", "max_frames"),
    ("text-layout-value", "diagonal", {**GOOD, "text_layout": "diagonal"}, None, 400, "invalid_value", "text_layout"),
    ("text-layout-type", "number", {**GOOD, "text_layout": 1}, None, 400, "invalid_type", "text_layout"),
    ("model-type", "number", {**GOOD, "model": 5}, None, 400, "invalid_type", "model"),
    ("model-huge", "50kb", {**GOOD, "model": LONG}, None, 400, "string_above_max_length", "model"),
    ("instructions-type", "list", {**GOOD, "instructions": ["x"]}, None, 400, "invalid_type", "instructions"),
    ("instructions-type", "number", {**GOOD, "instructions": 1}, None, 400, "invalid_type", "instructions"),
    ("instructions-too-long", "6000-chars", {**GOOD, "instructions": "Speak slowly. " * 430}, None, 400,
     "string_above_max_length", "instructions"),
]


def check_error_body(status, body, case_id):
    assert isinstance(body, dict) and set(body) == {"error"}, (case_id, body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, (case_id, err)
    assert err["message"] and len(err["message"]) < 400, (case_id, err["message"][:200])
    return err


def run_table(server, table):
    results = []
    for cls, case_id, body, ctype, status, code, param in table:
        r = post(server, body, "application/json" if ctype is None else ctype)
        err = check_error_body(r.status_code, r.json(), case_id)
        got = (r.status_code, err["code"] if code else None, err["param"] if code else None)
        results.append((cls, case_id, got == (status, code, param), got))
    return results


# HTTP-layer malformations, sent raw: the HTTP parser answers before any route runs
def http_request(body: bytes, extra_headers: bytes = b"", content_length: bytes | None = None) -> bytes:
    cl = str(len(body)).encode() if content_length is None else content_length
    return (b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n" +
            extra_headers + b"Content-Length: " + cl + b"\r\n\r\n" + body)


GOOD_BYTES = json.dumps(GOOD).encode()
RAW = [
    # (class, case id, bytes, acceptable statuses)
    ("http-content-length", "not-a-number", http_request(GOOD_BYTES, content_length=b"abc"), {400}),
    ("http-content-length", "negative", http_request(GOOD_BYTES, content_length=b"-5"), {400}),
    ("http-content-length", "overflow", http_request(GOOD_BYTES, content_length=b"99999999999999999999999"),
     {400, 413}),
    ("http-chunked", "bad-size", b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", {400}),
    ("http-header-huge", "100kb-header", http_request(GOOD_BYTES, extra_headers=b"X-Big: " + b"h" * 100_000 + b"\r\n"),
     {400, 413, 431}),
    ("http-request-line", "garbage", b"\x00\x01\x02 nonsense\r\n\r\n", {400}),
    ("http-method", "put", b"PUT /v1/audio/speech HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
     {404, 405}),
    ("http-route", "get-speech", b"GET /v1/audio/speech HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", {404, 405}),
]


def test_bad_input_table_then_the_same_server_still_serves(cv, built):
    pid = cv.proc.pid
    results = run_table(cv, BAD)
    raw_results = []
    for cls, case_id, payload, statuses in RAW:
        status, body = raw_status(raw_exchange(cv, payload, timeout=HANG))
        ok = status in statuses and (body is None or "error" in body)
        raw_results.append((cls, case_id, ok, status))
    # a body that promises more than it sends, then waits: the read times out or the close ends it
    with socket.create_connection(("127.0.0.1", cv.port), timeout=HANG) as s:
        s.sendall(http_request(GOOD_BYTES[:10], content_length=b"1000"))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(HANG)
        short = s.recv(65536)
    raw_results.append(("http-body-short", "promised-1000-sent-10", True, short[:12]))

    rows = results + raw_results
    by_class = Counter(r[0] for r in rows)
    bad = [r for r in rows if not r[2]]
    table = {cls: {"cases": n, "result": "ok" if all(r[2] for r in rows if r[0] == cls) else "FAILED"}
             for cls, n in sorted(by_class.items())}
    (built / "hostile-table.json").write_text(json.dumps(table, indent=1))
    print(f"\n{len(by_class)} classes, {len(rows)} cases")
    for cls, row in table.items():
        print(f"  {cls:28s} {row['cases']:3d}  {row['result']}")
    assert not bad, bad
    assert len(by_class) >= 50  # with the voice table below: >= 60 classes in all

    # the crash canary: the same process, healthy and serving
    assert cv.proc.poll() is None and cv.proc.pid == pid
    assert requests.get(f"{cv.base}/health", timeout=10).status_code == 200
    r = post(cv, GOOD)
    assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_error_messages_do_not_echo_huge_values(cv):
    err = post(cv, {**GOOD, "voice": LONG}).json()["error"]
    assert len(err["message"]) < 400 and "50000 bytes" in err["message"]


def test_media_type_is_case_insensitive_and_takes_parameters(cv):
    for ctype in ("APPLICATION/JSON", "Application/Json; charset=utf-8", "application/json ;charset=UTF-8"):
        r = post(cv, GOOD, ctype)
        assert r.status_code == 200 and r.content[:4] == b"RIFF", ctype


def test_max_frames_lowers_the_cap_never_raises_it(cv):
    """Without --tts-max-frames the cap is derived from the text (25 + 4 per character): a request
    for 100000 frames gets at most that, a request for fewer gets fewer."""
    frames, capped = [], 0
    for seed in range(1, 9):  # random weights end some generations early; others run into the cap
        big = post(cv, {**GOOD, "input": "Hi.", "max_frames": 100000, "seed": seed})
        assert big.status_code == 200
        frames.append(int(big.headers["x-speech-frames"]))
        capped += int(big.headers["x-speech-frame-capped-segments"])
    print(f"\nframes for 'Hi.' with max_frames 100000, seeds 1-8: {frames}")
    assert max(frames) <= 25 + 4 * 3, frames
    assert capped >= 1, frames  # at least one would have gone on: the cap is what stopped it
    small = post(cv, {**GOOD, "input": "Hi.", "max_frames": 5, "seed": 3})
    assert int(small.headers["x-speech-frames"]) <= 5


def test_streamed_errors_before_the_first_byte_are_statuses(cv):
    for fmt in ("audio", "sse"):
        r = post(cv, {**GOOD, "voice": "nobody", "stream_format": fmt}, stream=True)
        assert r.status_code == 400 and r.json()["error"]["code"] == "voice_not_found"


# --- overload, stalled and half-closed connections -------------------------------------------------

def test_sixteen_concurrent_requests_on_two_slots_and_a_queue_of_four(cv):
    body = {**GOOD, "input": "A longer sentence that keeps a slot busy for a while.", "max_frames": 60}

    def one(i):
        r = post(cv, {**body, "seed": i})
        return r.status_code, r.headers.get("Retry-After"), r.content[:4]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    statuses = Counter(s for s, _, _ in results)
    print(f"\n16 concurrent requests, 2 slots, queue 4: {dict(statuses)}")
    assert set(statuses) <= {200, 503}, results
    assert statuses[200] >= 6 and statuses[503] >= 1, statuses
    assert all(ra is not None and int(ra) >= 1 for s, ra, _ in results if s == 503)
    assert all(head == b"RIFF" for s, _, head in results if s == 200)


def stalled_stream(server, fmt):
    """A streamed request whose client never reads: a tiny receive buffer so the server's writes block."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1024)  # loopback's 64 KiB segments grow buffers
    s.connect(("127.0.0.1", server.port))
    body = json.dumps({"input": "A very long text that is read by nobody. " * 60, "voice": "vivian", "seed": 2,
                       "max_frames": 400, "stream_format": fmt, "response_format": "pcm"}).encode()
    s.sendall(http_request(body))
    return s


def test_stalled_streams_release_their_slots(cv):
    stalled = [stalled_stream(cv, "audio"), stalled_stream(cv, "sse")]
    try:
        time.sleep(1)  # both slots taken, their writes blocked
        t0 = time.monotonic()
        r = post(cv, GOOD, timeout=HANG)
        waited = time.monotonic() - t0
    finally:
        for s in stalled:
            s.close()
    print(f"\na request behind two stalled streams was answered after {waited:.1f} s "
          f"(--tts-stream-timeout {STREAM_TIMEOUT})")
    assert r.status_code == 200
    # without the timeout the slots stay taken for an hour (--timeout); with it, a few seconds
    assert waited < STREAM_TIMEOUT + 20


def _speech_slot_frames(server) -> dict[int, int]:
    """Frames so far of the request on each busy speech slot, by slot."""
    slots = requests.get(f"{server.base}/slots", timeout=10).json()
    return {s["speech_slot"]: s["n_frames"] for s in slots if s.get("type") == "speech" and s["is_processing"]}


def test_a_stalled_stream_does_not_hold_back_the_batch(built):
    # requests generating at the same time share a talker decode per frame; one whose client stopped
    # reading is not waited for (its thread is blocked writing, outside the batch). The stream timeout
    # is long here: a batch that waited for the stalled stream would hold the other request for 30 s
    with speech_server(built, "hostile-batch-stall", "custom_voice", "--tts-stream-timeout", "30",
                       "--tts-slots", "2", "--tts-queue", "2", env=FREED_MEMORY_POISONED) as server:
        body = {**GOOD, "input": "A sentence for a client that reads it.", "max_frames": 48}
        t0 = time.monotonic()
        assert post(server, body).status_code == 200
        alone = time.monotonic() - t0
        s = stalled_stream(server, "audio")
        try:
            # stalled: its frame count stops growing once the socket buffers are full
            deadline, last, since = time.monotonic() + 60, None, time.monotonic()
            while time.monotonic() < deadline:
                frames = _speech_slot_frames(server)
                if frames != last:
                    last, since = frames, time.monotonic()
                elif frames and time.monotonic() - since > 1.0:
                    break
                time.sleep(0.1)
            else:
                pytest.fail(f"the stream never stalled (frames of the busy slots: {last})")
            t0 = time.monotonic()
            r = post(server, body)
            waited = time.monotonic() - t0
            after = _speech_slot_frames(server)
        finally:
            s.close()
    print(f"\n48 frames: {alone:.2f} s alone, {waited:.2f} s next to a stream stalled at {last} frames (by slot)")
    assert r.status_code == 200 and r.content[:4] == b"RIFF"
    # the stalled stream is still on its slot (its write blocked, the timeout 30 s away)
    assert set(last) <= set(after)
    assert waited < 10


def test_full_slots_and_queue_leave_a_503_and_health_answering(built):
    # every speech slot and queue place holds an HTTP thread (stalled streams on the slots, requests
    # waiting behind them): 2 + 8 = 10, more than llama-server's default pool (n_parallel + 4 = 8) had.
    # The next speech request must still be read and refused with a 503 at once, and /health answer;
    # with too few threads both waited unread until a stalled stream timed out (30 s here)
    with speech_server(built, "hostile-full-queue", "custom_voice", "--tts-stream-timeout", "30",
                       "--tts-slots", "2", "--tts-queue", "8", env=FREED_MEMORY_POISONED) as server:
        held = []
        try:
            held += [stalled_stream(server, "audio") for _ in range(2)]
            deadline = time.monotonic() + 30
            while len(_speech_slot_frames(server)) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            held += [stalled_stream(server, "audio") for _ in range(8)]
            time.sleep(1)  # the eight are read and queued
            t0 = time.monotonic()
            r = post(server, GOOD, timeout=20)
            refused = time.monotonic() - t0
            health = requests.get(f"{server.base}/health", timeout=20)
        finally:
            for s in held:
                s.close()
    print(f"\nslots and queue full: the next request answered {r.status_code} in {refused:.2f} s")
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert refused < 5 and health.status_code == 200


def test_half_closed_client_gets_its_audio(cv):
    resp = raw_exchange(cv, http_request(GOOD_BYTES), half_close=True)
    status, _ = raw_status(resp)
    assert status == 200, resp[:200]
    assert resp.partition(b"\r\n\r\n")[2][:4] == b"RIFF"


# --- memory ---------------------------------------------------------------------------------------

def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_rss_after_200_mixed_requests_stays_near_the_warm_baseline(cv, built):
    mixed = [GOOD, {**GOOD, "input": "a" * 1_000_000}, {**GOOD, "instructions": "x" * 6000},
             {**GOOD, "voice": LONG}, {**GOOD, "input": "字" * 4097}, {**GOOD, "stream_format": "audio",
                                                                       "response_format": "pcm"}]
    for body in mixed * 2:  # warm-up
        post(cv, body)
    before = _rss_kib(cv.proc.pid)
    statuses = Counter()
    for i in range(200):
        body = dict(mixed[i % len(mixed)])
        if body.get("input") == "Hello.":
            body["seed"] = i
        statuses[post(cv, body).status_code] += 1
    after = _rss_kib(cv.proc.pid)
    report = {"requests": 200, "statuses": dict(statuses), "rss_before_kib": before, "rss_after_kib": after,
              "growth_kib": after - before}
    (built / "rss-200-mixed.json").write_text(json.dumps(report))
    print(f"\nRSS over 200 mixed requests: {before} KiB -> {after} KiB ({after - before:+d} KiB), {dict(statuses)}")
    assert statuses[200] >= 60 and sum(v for k, v in statuses.items() if k >= 400) >= 120
    assert after - before < 50 * 1024, report


# --- instructions (VoiceDesign takes them) --------------------------------------------------------

def test_instructions_are_bounded_in_characters_and_tokens(built):
    with start(built, "vd", "voice_design") as s:
        ok = post(s, {**GOOD, "voice": "default", "instructions": "A calm, deep voice."})
        too_many_chars = post(s, {**GOOD, "voice": "default", "instructions": "Speak slowly. " * 430})
        # within the character limit but many tokens per character
        dense = post(s, {**GOOD, "voice": "default", "instructions": "\U0001F99C\U0001F9A9\U0001F54A" * 170})
        rss_before = _rss_kib(s.proc.pid)
        for _ in range(5):
            post(s, {**GOOD, "voice": "default", "instructions": "Speak slowly. " * 430})
        rss_after = _rss_kib(s.proc.pid)
        alive = requests.get(f"{s.base}/health", timeout=10).status_code
    assert ok.status_code == 200
    err = too_many_chars.json()["error"]
    assert too_many_chars.status_code == 400 and err["param"] == "instructions"
    assert err["code"] == "string_above_max_length" and "characters" in err["message"]
    assert dense.status_code in (200, 400)
    if dense.status_code == 400:
        assert "tokens" in dense.json()["error"]["message"]
    assert rss_after - rss_before < 20 * 1024 and alive == 200


# --- hostile reference recordings (Base model, voice cloning) -------------------------------------

@pytest.fixture(scope="module")
def voices(built):
    d = built / "hostile-voices"
    outside = built / "hostile-outside"
    d.mkdir()
    outside.mkdir()
    (d / "alice.wav").write_bytes(wav_bytes(tone(48000)))
    os.symlink(d / "alice.wav", d / "alice-link.wav")  # resolves inside: a voice
    (outside / "good.wav").write_bytes(wav_bytes(tone(48000)))
    hostile = {
        # name: (bytes or a maker, reason fragment or None when the file is not a voice at all)
        "one-sample": (wav_bytes(tone(1)), "long"),
        "four-hundred": (wav_bytes(tone(400)), "long"),
        "thousand": (wav_bytes(tone(1000)), "long"),
        "under-half-second": (wav_bytes(tone(9600)), "long"),
        "two-at-192k": (wav_bytes(tone(2, 192000), rate=192000), "long"),
        "eight-channels": (riff(channels=8, data=b"\x01\x00" * 8 * 24000), "channels"),
        "rate-4hz": (riff(rate=4, data=b"\x01\x00" * 8), "sample rate"),
        "rate-zero": (riff(rate=0), "sample rate"),
        "float-nan": (riff(fmt_tag=3, bits=32, data=struct.pack("<f", float("nan")) * 24000), "finite"),
        "float-inf": (riff(fmt_tag=3, bits=32, data=struct.pack("<f", 0.1) * 12000 +
                           struct.pack("<f", float("inf")) * 12000), "finite"),
        "silence": (wav_bytes(np.zeros(24000)), "silence"),
        "not-riff": (b"ID3 this is not a wave file at all" * 100, "RIFF"),
        "empty": (b"", "RIFF"),
        "riff-only": (b"RIFF\x04\x00\x00\x00WAVE", "fmt"),
        "no-data-chunk": (riff()[:36], "data"),
        "alaw": (riff(fmt_tag=6, bits=8, data=b"\x55" * 24000), "encoding"),
        "twelve-bit": (riff(bits=12, data=b"\x01\x00" * 24000), "12-bit"),
        "bad-block-align": (riff(channels=1, bits=16)[:32] + struct.pack("<H", 7) + riff()[34:], "inconsistent"),
        "huge-declared-size": (riff(data=b"\x01\x00" * 100, declared=0x7FFFFFF0), "long"),
    }
    for name, (data, _) in hostile.items():
        (d / f"{name}.wav").write_bytes(data)
    os.symlink("/etc/passwd", d / "passwd.wav")
    os.symlink(outside / "good.wav", d / "escape.wav")
    os.symlink("../outside/good.wav", d / "relative-escape.wav")
    os.mkfifo(d / "fifo.wav")
    (d / "directory.wav").mkdir()
    (d / "with space.wav").write_bytes(wav_bytes(tone(48000)))
    not_voices = ["passwd", "escape", "relative-escape", "fifo", "directory", "with space"]
    return d, hostile, not_voices


@pytest.fixture(scope="module")
def base(built, voices):
    with start(built, "base", "base", "--tts-voices-dir", str(voices[0])) as s:
        yield s


def test_hostile_recordings_are_refused_before_the_encoder(base, voices, built):
    _, hostile, not_voices = voices
    pid = base.proc.pid
    listing = requests.get(f"{base.base}/v1/audio/voices", timeout=HANG).json()
    assert sorted(v["id"] for v in listing["voices"]) == ["alice", "alice-link"]
    unusable = {v["id"]: v["reason"] for v in listing["unusable_voices"]}
    assert set(unusable) == set(hostile)
    rows = []
    for name, (_, fragment) in hostile.items():
        assert fragment in unusable[name], (name, unusable[name])
        for stream in (None, "audio"):
            body = {"input": "Hi.", "voice": name, "max_frames": 4}
            if stream:
                body |= {"stream_format": stream, "response_format": "pcm"}
            r = post(base, body)
            err = check_error_body(r.status_code, r.json(), name)
            ok = (r.status_code, err["code"], err["param"]) == (400, "voice_unusable", "voice")
            ok = ok and name in err["message"] and fragment in err["message"]
            rows.append((f"voice-{name}", ok, r.status_code, err["message"]))
    for name in not_voices:  # outside the directory, not a file, or not a voice name: never opened
        r = post(base, {"input": "Hi.", "voice": name, "max_frames": 4})
        err = check_error_body(r.status_code, r.json(), name)
        rows.append((f"voice-{name}", (r.status_code, err["code"]) == (400, "voice_not_found"), r.status_code,
                     err["message"]))
    print(f"\n{len(rows)} hostile recording cases in {len({r[0] for r in rows})} classes")
    for row in rows:
        print(f"  {row[0]:28s} {row[2]}  {row[3][:110]}")
    assert all(r[1] for r in rows), [r for r in rows if not r[1]]
    log = (built / "hostile-base.log").read_text(errors="replace")
    assert "GGML_ASSERT" not in log and "passwd" not in log
    # the canary: the same process clones with a good recording, also through a link inside the directory
    assert base.proc.poll() is None and base.proc.pid == pid
    for voice in ("alice", "alice-link"):
        r = post(base, {"input": "Hi.", "voice": voice, "max_frames": 4, "seed": 3})
        assert r.status_code == 200 and r.content[:4] == b"RIFF", voice


def test_a_rewritten_recording_is_encoded_again(base, voices, built):
    d = voices[0]
    path = d / "bob.wav"
    first = wav_bytes(tone(36000))
    second = wav_bytes(0.3 * np.sign(np.sin(2 * np.pi * 97 * np.arange(36000) / 24000)))
    assert len(first) == len(second)
    path.write_bytes(first)
    stamp = (1_700_000_000_000_000_000, 1_700_000_000_000_000_000)
    os.utime(path, ns=stamp)
    body = {"input": "Hi.", "voice": "bob", "max_frames": 6, "seed": 4, "temperature": 0.9}
    a = post(base, body)
    path.write_bytes(second)
    os.utime(path, ns=stamp)  # same size, same mtime, other content
    b = post(base, body)
    assert a.status_code == b.status_code == 200
    assert a.content != b.content
    assert (built / "hostile-base.log").read_text(errors="replace").count("encoded voice 'bob'") == 2
