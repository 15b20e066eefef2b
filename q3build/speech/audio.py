"""What the speech service answers, parsed: RIFF/WAVE files, s16le PCM, the SSE event stream."""

from __future__ import annotations

import array
import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass


@dataclass(frozen=True)
class Wav:
    rate: int
    channels: int
    bits: int
    data: bytes

    @property
    def seconds(self) -> float:
        return len(self.data) / (self.rate * self.channels * self.bits // 8)


def parse_wav(data: bytes) -> Wav:
    """A PCM RIFF/WAVE file; ValueError naming what is wrong."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError(f"not a RIFF/WAVE file (starts with {data[:12]!r})")
    riff_size = struct.unpack_from("<I", data, 4)[0]
    if riff_size + 8 != len(data):
        raise ValueError(f"RIFF size says {riff_size + 8} bytes, body has {len(data)}")
    pos, fmt, body = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        chunk = data[pos + 8:pos + 8 + size]
        if len(chunk) < size:
            raise ValueError(f"chunk {cid!r} is truncated ({len(chunk)} of {size} bytes)")
        if cid == b"fmt ":
            if size < 16:
                raise ValueError(f"fmt chunk too short ({size} bytes)")
            fmt = struct.unpack_from("<HHIIHH", chunk)
        elif cid == b"data":
            body = chunk
        pos += 8 + size + (size & 1)
    if fmt is None or body is None:
        raise ValueError("no " + ("fmt " if fmt is None else "data") + " chunk")
    audio_format, channels, rate, byte_rate, align, bits = fmt
    if audio_format != 1:
        raise ValueError(f"audio format {audio_format}, expected 1 (PCM)")
    if byte_rate != rate * channels * bits // 8 or align != channels * bits // 8:
        raise ValueError(f"inconsistent fmt chunk (byte rate {byte_rate}, block align {align})")
    return Wav(rate=rate, channels=channels, bits=bits, data=body)


def rms(pcm: bytes) -> float:
    """RMS of s16le mono samples."""
    if len(pcm) % 2:
        raise ValueError(f"odd PCM length {len(pcm)}: not s16le")
    samples = array.array("h")
    samples.frombytes(pcm)
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def parse_sse(text: str) -> tuple[bytes, list[dict]]:
    """(concatenated PCM of the speech.audio.delta events, all events)."""
    events, pcm = [], bytearray()
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
        if not data or data == "[DONE]":
            continue
        try:
            ev = json.loads(data)
        except ValueError:
            raise ValueError(f"SSE event is not JSON: {data[:80]!r}") from None
        events.append(ev)
        if ev.get("type") == "speech.audio.delta":
            try:
                pcm += base64.b64decode(ev.get("audio", ""), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("speech.audio.delta audio is not base64") from None
    return bytes(pcm), events
