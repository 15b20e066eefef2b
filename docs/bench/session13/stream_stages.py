"""Stage timings of N concurrent speech streams through one llama-server (issue 17's "where did a
4-stream frame go"): starts the server as `q3build bench --streams` does (bench numerics with ggml-cpu's
repacking, --tts-slots N) on the converted q8_0 model, warms it with N two-frame streams, then streams N
requests at once as SSE and prints each one's TTFA, end time and the server's own stage timings
(`speech.audio.done` event: the batched talker time is credited whole to every request, the batched
code predictor's split among them, prompt and codec decode are each request's own).

Usage: .venv/bin/python docs/bench/session13/stream_stages.py LLAMA_SERVER N [FRAMES] [GGUF_DIR]
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from q3build.speech import argv as speech_argv  # noqa: E402
from q3build.speech.bench.streams import stream_body  # noqa: E402
from q3build.speech.server import measured_server  # noqa: E402


def run(base: str, n: int, frames: int, seed0: int, out: dict) -> None:
    def one(i: int) -> None:
        body = {**stream_body(i, frames, voice=None), "seed": seed0 + i, "stream_format": "sse"}
        body = {k: v for k, v in body.items() if v is not None}
        t0, first = time.monotonic(), None
        with requests.post(base + "/v1/audio/speech", json=body, stream=True, timeout=600) as r:
            for line in r.iter_lines():
                if not line.startswith(b"data: "):
                    continue
                event = json.loads(line[6:])
                if first is None and event.get("type") == "speech.audio.delta":
                    first = time.monotonic() - t0
                if event.get("type") == "speech.audio.done":
                    out[i] = (first, time.monotonic() - t0, event)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    binary, n = Path(sys.argv[1]), int(sys.argv[2])
    frames = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    gguf = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("/work/bench-gguf/q8_0")
    options = [*speech_argv.bench_numerics(repack=True), "--tts-slots", str(n), "--tts-queue", "16"]
    with measured_server(binary, gguf, dict(os.environ), threads=2, options=options) as (server, _, _):
        run(server.base, n, 2, 1000, {})
        out: dict = {}
        t = time.monotonic()
        run(server.base, n, frames, 0, out)
        wall = time.monotonic() - t
    print(f"wall {wall:.2f} s, {n * frames * 0.08 / wall:.3f} audio s per wall s")
    for i in sorted(out):
        first, end, event = out[i]
        print(f"stream {i}: TTFA {first * 1000:.0f} ms, end {end:.2f} s, stages ms {event['stages_ms']}")


if __name__ == "__main__":
    main()
