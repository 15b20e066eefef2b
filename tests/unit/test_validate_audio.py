"""validate's audio parsing (RIFF/WAVE, PCM level, SSE) on hand-made bytes: no processes."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from q3build.speech.audio import parse_sse, parse_wav, rms
from q3build.speech.validate import duration_bounds


def wav(pcm: bytes, rate=24000, channels=1, bits=16, fmt_tag=1, extra=b""):
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra + b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_parse_wav_reads_format_and_samples_past_other_chunks():
    pcm = struct.pack("<4h", 0, 100, -100, 0)
    w = parse_wav(wav(pcm, extra=b"LIST" + struct.pack("<I", 3) + b"abc\0"))
    assert (w.rate, w.channels, w.bits, w.data) == (24000, 1, 16, pcm)
    assert w.seconds == pytest.approx(4 / 24000)


@pytest.mark.parametrize("data,words", [
    (b"OggS" + b"\0" * 40, "not a RIFF/WAVE file"),
    (wav(b"\0\0")[:-1], "RIFF size says"),
    (wav(b"\0\0", fmt_tag=3), "audio format 3"),
])
def test_parse_wav_names_the_problem(data, words):
    with pytest.raises(ValueError, match=words):
        parse_wav(data)


def test_rms():
    assert rms(struct.pack("<4h", 3, -3, 3, -3)) == pytest.approx(3.0)
    assert rms(b"") == 0.0
    with pytest.raises(ValueError, match="odd PCM length"):
        rms(b"\0\0\0")


def test_parse_sse_concatenates_deltas():
    a, b = struct.pack("<2h", 1, 2), struct.pack("<2h", 3, 4)
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in (
        {"type": "speech.audio.delta", "audio": base64.b64encode(a).decode()},
        {"type": "speech.audio.delta", "audio": base64.b64encode(b).decode()},
        {"type": "speech.audio.done"}))
    pcm, events = parse_sse(text)
    assert pcm == a + b and [e["type"] for e in events][-1] == "speech.audio.done"
    with pytest.raises(ValueError, match="not base64"):
        parse_sse('data: {"type": "speech.audio.delta", "audio": "%%%"}\n\n')


def test_duration_bounds_follow_the_frame_cap():
    lo, hi = duration_bounds(16)
    assert lo == pytest.approx(0.08) and hi == pytest.approx(1.28 + 0.25)
