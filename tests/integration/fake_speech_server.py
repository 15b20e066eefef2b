"""A stand-in for llama-server's speech service, for validate's tests: the same command line
(`-m`, `--mmproj`, `--host`, `--port`, `--tts-max-frames`, `--version`) and the same HTTP contract,
with a sine tone whose pitch follows the seed. `--fake-broken MODE` breaks one thing on purpose:
silence, rate (16 kHz header), random (ignores the seed), stream (no done event), uncapped (ignores
max_frames).
Binds 127.0.0.1 only."""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import random
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RATE = 24000
SAMPLES_PER_FRAME = 1920
VOICES = [{"id": "vivian", "name": "Vivian", "type": "builtin"}, {"id": "ryan", "name": "Ryan", "type": "builtin"}]


def tone(seed: int, frames: int, broken: str | None) -> bytes:
    n = frames * SAMPLES_PER_FRAME
    if broken == "silence":
        return b"\0\0" * n
    freq = 200 + seed % 300
    jitter = random.random() if broken == "random" else 0.0
    return struct.pack(f"<{n}h", *(int(8000 * math.sin(2 * math.pi * freq * i / RATE + jitter)) for i in range(n)))


def wav(pcm: bytes, rate: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def flac(pcm: bytes) -> bytes:
    import numpy as np
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, np.frombuffer(pcm, dtype="<i2"), RATE, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def error(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()


def make_handler(max_frames_cap: int, broken: str | None, has_model: bool):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                return self.send(200, b'{"status":"ok"}')
            if self.path in ("/v1/audio/voices", "/audio/voices"):
                if not has_model:
                    return self.send(501, error("no speech model", "not_supported_error", "speech_not_enabled"))
                return self.send(200, json.dumps({"voices": VOICES}).encode())
            self.send(404, error("not found", "not_found_error"))

        def do_POST(self):
            if self.path not in ("/v1/audio/speech", "/audio/speech"):
                return self.send(404, error("not found", "not_found_error"))
            if not has_model:
                return self.send(501, error("no speech model", "not_supported_error", "speech_not_enabled"))
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            except ValueError:
                return self.send(400, error("body is not JSON", "invalid_request_error"))
            speed = req.get("speed", 1.0)
            if not 0.25 <= speed <= 4:
                return self.send(400, error(f"speed {speed} outside 0.25-4", "invalid_request_error"))
            frames = min(int(req.get("max_frames", max_frames_cap)), max_frames_cap, len(req.get("input", "")) // 2 + 3)
            if broken == "uncapped":
                frames = 40
            pcm = tone(int(req.get("seed", 0)), frames, broken)
            seconds = len(pcm) / 2 / RATE
            headers = {"X-Speech-Backend": "fake", "X-Audio-Seconds": f"{seconds:.3f}", "X-Wall-Seconds": "0.010",
                       "X-Real-Time-Factor": f"{0.01 / seconds:.4f}"}
            if req.get("stream_format") == "sse":
                events = [{"type": "speech.audio.delta", "audio": base64.b64encode(pcm[i:i + 9600]).decode()}
                          for i in range(0, len(pcm), 9600)]
                if broken != "stream":
                    events.append({"type": "speech.audio.done", "usage": {"frames": frames}})
                body = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode()
                return self.send(200, body, "text/event-stream")
            fmt = req.get("response_format", "wav")
            if fmt == "pcm":
                return self.send(200, pcm, "audio/pcm", headers)
            if fmt == "flac":
                return self.send(200, flac(pcm), "audio/flac", headers)
            return self.send(200, wav(pcm, 16000 if broken == "rate" else RATE), "audio/wav", headers)

    return Handler


def make_server(port: int = 0, *, max_frames: int = 64, broken: str | None = None,
                has_model: bool = True) -> ThreadingHTTPServer:
    return ThreadingHTTPServer(("127.0.0.1", port), make_handler(max_frames, broken, has_model))


def start_in_thread(**kw) -> tuple[ThreadingHTTPServer, str]:
    srv = make_server(**kw)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--version", action="store_true")
    p.add_argument("-m")
    p.add_argument("--mmproj")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tts-max-frames", type=int, default=64)
    p.add_argument("--fake-broken")
    a = p.parse_args(argv)
    if a.version:
        print("version: fake speech server")
        return 0
    if a.host != "127.0.0.1":
        print(f"refusing to bind {a.host}", file=sys.stderr)
        return 2
    srv = make_server(a.port, max_frames=a.tts_max_frames, broken=a.fake_broken, has_model=bool(a.m and a.mmproj))
    print(f"listening on 127.0.0.1:{a.port}", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
