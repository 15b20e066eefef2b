"""Test recordings: samples written as a WAV file in memory (soundfile), any rate, subtype and channel count."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf


def wav_bytes(pcm, rate: int = 24000, subtype: str = "PCM_16", channels: int = 1) -> bytes:
    """Mono samples (floats in [-1, 1]) as a RIFF/WAVE file; with channels > 1 every channel carries them."""
    buf = io.BytesIO()
    data = np.asarray(pcm, dtype=np.float32)
    if channels > 1:
        data = np.repeat(data[:, None], channels, axis=1)
    sf.write(buf, data, rate, subtype=subtype, format="WAV")
    return buf.getvalue()
