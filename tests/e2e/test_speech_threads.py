"""The server's computes wait for each other the way llama-tts's do (issue 12), measured by a count that
machine load does not change: voluntary context switches per generated frame, on the tiny model with 2
threads.

A compute thread sleeps in the kernel (a voluntary switch) when a thread barrier makes it wait instead
of spinning. llama-tts spins; a frame at the tiny shape passes ~2250 barriers (one after each graph node
of the talker step, the 15 unrolled predictor steps and the decoder). A server built with GCC's libgomp
slept at every one of them once a second OS thread had computed (libgomp then counts more threads than
CPUs and throttles its spinning): 2100-2300 switches per frame against llama-tts's ~1. With ggml's own
threadpool both spin. Involuntary switches (preemption) depend on load and are not counted."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from q3build.speech import argv as speech_argv

from .conftest import speech_server

pytestmark = pytest.mark.slow

TEXT = "Hello there. How are you today? This is a longer sentence for the speech test."
FRAMES = 24
THREADS = 2
# switches per frame the server may spend beyond 4x llama-tts's: requests, HTTP I/O, a pool worker
# that stopped polling between two computes (up to ~20 per frame measured under load 9), all far
# below one per barrier (~2250 per frame here)
SLACK_PER_FRAME = 200


def voluntary_switches(pid: int) -> int:
    """Voluntary context switches of every thread of a running process so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        total += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    return total


def test_server_barriers_spin_like_llama_tts(built, tmp_path):
    # llama-tts: the switches of a short run subtracted from a long one (loading and start-up cancel)
    short_frames, short_sw = _measured_tts(built, tmp_path, 2)
    long_frames, long_sw = _measured_tts(built, tmp_path, FRAMES)
    assert long_frames > short_frames
    tts_per_frame = max(0, long_sw - short_sw) / (long_frames - short_frames)

    with speech_server(built, "threads-cv", "custom_voice") as server:
        client = server.client(timeout=300)
        body = {"input": TEXT, "voice": "vivian", "response_format": "pcm", "max_frames": FRAMES, "top_k": 1,
                "seed": 0}
        per_request = []
        # two requests: the server's HTTP threads take turns, and each that computes counts
        for _ in range(2):
            before = voluntary_switches(server.proc.pid)
            r = client.speech(body)
            after = voluntary_switches(server.proc.pid)
            assert r.status_code == 200, r.text
            frames = int(r.headers["X-Speech-Frames"])
            assert frames > 0
            per_request.append((after - before) / frames)
    limit = 4 * tts_per_frame + SLACK_PER_FRAME
    assert max(per_request) <= limit, (
        f"llama-server: {', '.join(f'{v:.1f}' for v in per_request)} voluntary context switches per frame, "
        f"llama-tts {tts_per_frame:.1f} (limit {limit:.1f}): the server's compute threads sleep at barriers")


def _measured_tts(built, tmp_path, frames: int) -> tuple[int, int]:
    """llama-tts run to completion; (frames generated, voluntary switches of all its threads) from wait4."""
    argv = speech_argv.llama_tts(built / "work" / "stage" / "host" / "bin" / "llama-tts", built / "custom_voice",
                                 TEXT, language="english", wav=tmp_path / f"out-{frames}.wav",
                                 voice=speech_argv.Voice(speaker="vivian"), frames=frames, threads=THREADS)
    log = tmp_path / f"llama-tts-{frames}.log"
    with log.open("w") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)   # reaped here, for its rusage: tell Popen
        p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    assert p.returncode == 0, text[-2000:]
    generated = re.findall(r"generated (\d+) frames", text)
    assert generated, text[-2000:]
    return int(generated[-1]), usage.ru_nvcsw
