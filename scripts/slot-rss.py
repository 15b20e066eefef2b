#!/usr/bin/env python3
"""Peak RSS of llama-server's speech service with N slots under N-way concurrent short requests.

    slot-rss.py --server BIN/llama-server --model DIR [--slots 1,4] [--requests 4] [--threads 2]
                [--frames 24] [--text TEXT] [--json]

For each slot count: start llama-server on 127.0.0.1 (as `q3build bench` does: -fa off, --no-repack,
--load-mode none, so the weights are read into memory), send `--requests` short non-streamed requests
at once, wait for all of them, read VmHWM from /proc, stop the server. Prints the peak RSS per slot
count and the cost of each extra slot. Uses q3build's own server lifecycle (q3build.speech.server.Server); run it with the worktree on
PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True, help="directory with talker.gguf and mmproj.gguf")
    ap.add_argument("--slots", default="1,4")
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--text", default="A short request.")
    ap.add_argument("--extra", action="append", default=[], help="extra llama-server argument (repeatable)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    from q3build.speech.server import Server, free_port

    model = Path(a.model)
    out = {"slots": {}}
    for n in [int(s) for s in a.slots.split(",")]:
        port = free_port()
        argv = [a.server, "-m", str(model / "talker.gguf"), "--mmproj", str(model / "mmproj.gguf"),
                "--host", "127.0.0.1", "--port", str(port), "-t", str(a.threads), "--tts-slots", str(n),
                "--tts-max-frames", str(a.frames), "-fa", "off", "--no-repack", "--load-mode", "none", *a.extra]
        with tempfile.TemporaryDirectory() as tmp, Server(argv, dict(os.environ), Path(tmp) / "server.log", port) as server:
            why = server.wait_healthy(600)
            if why:
                raise SystemExit(why)
            idle = server.peak_rss_mib()
            errors: list[str] = []

            def one(i: int) -> None:
                body = json.dumps({"input": a.text, "response_format": "pcm", "max_frames": a.frames,
                                   "top_k": 1, "seed": i}).encode()
                req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/speech", data=body,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=900) as r:
                        if not r.read():
                            errors.append(f"request {i}: empty body")
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(f"request {i}: {e}")

            t0 = time.monotonic()
            ts = [threading.Thread(target=one, args=(i,)) for i in range(a.requests)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wall = time.monotonic() - t0
            peak = server.peak_rss_mib()
            if errors:
                raise SystemExit("; ".join(errors))
            out["slots"][n] = {"idle_peak_mib": idle, "peak_mib": peak, "wall_s": wall}
            print(f"{n} slot(s): peak RSS {peak:.0f} MiB after {a.requests} concurrent requests "
                  f"({wall:.1f} s), {idle:.0f} MiB at idle", file=sys.stderr)
    ns = sorted(out["slots"])
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        out["per_extra_slot_mib"] = (out["slots"][hi]["peak_mib"] - out["slots"][lo]["peak_mib"]) / (hi - lo)
        print(f"per extra slot: {out['per_extra_slot_mib']:.0f} MiB", file=sys.stderr)
    if a.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
