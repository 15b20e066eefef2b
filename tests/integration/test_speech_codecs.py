"""The speech service's mp3 and Ogg Opus encoders (patches/overlay/tools/server/server-speech-codecs.cpp),
compiled with g++ against the Debian LAME, libopus and libogg (scripts/bootstrap --test installs
libmp3lame-dev, libopus-dev, libogg-dev) into a shared library, driven through ctypes, and decoded by
libsndfile (soundfile): a standard decoder, not ours.

Lengths, precisely: a whole mp3 carries LAME's Info tag (encoder delay and padding), which gapless
decoders (libsndfile's mpg123) use to give back exactly the samples encoded; a streamed mp3 has no tag
(it is written at the end), so it decodes to whole 576-sample MPEG-2 frames, longer by LAME's delay
and decoder delay (576 + 529 = 1105 samples) plus the last frame's padding (1..1152 samples). Ogg Opus,
whole or streamed, decodes to exactly the samples encoded (pre-skip and end trimming, RFC 7845)."""

from __future__ import annotations

import ctypes
import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = ROOT / "patches" / "overlay" / "tools" / "server"
SHIM = Path(__file__).with_name("speech_codecs_shim.cpp")
SR = 24000
MP3_FRAME = 576            # MPEG-2 Layer III samples per frame (24 kHz)
MP3_DELAY = 576 + 529      # LAME's encoder delay + the decoder's
HEADERS = {"lame/lame.h": "libmp3lame-dev", "opus/opus.h": "libopus-dev", "ogg/ogg.h": "libogg-dev"}

_size = ctypes.c_size_t


class Codecs:
    def __init__(self, path: Path):
        dll = ctypes.CDLL(str(path))
        dll.sc_free.argtypes = [ctypes.c_void_p]
        dll.sc_available.argtypes = [ctypes.c_char_p]
        dll.sc_available.restype = ctypes.c_int
        dll.sc_encode.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_float), _size, ctypes.c_int, ctypes.c_int,
                                  _size, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_size)]
        dll.sc_encode.restype = ctypes.c_int
        self.dll = dll

    def available(self, fmt: str) -> bool:
        return bool(self.dll.sc_available(fmt.encode()))

    def encode(self, fmt: str, pcm: np.ndarray, whole: bool = True, chunk: int = 3840) -> bytes:
        pcm = np.ascontiguousarray(pcm, dtype=np.float32)
        out, n = ctypes.c_void_p(), _size()
        rc = self.dll.sc_encode(fmt.encode(), pcm.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), len(pcm), SR,
                                int(whole), chunk, ctypes.byref(out), ctypes.byref(n))
        try:
            data = ctypes.string_at(out, n.value)
        finally:
            self.dll.sc_free(out)
        if rc != 0:
            raise RuntimeError(data.decode())
        return data


def build(tmp_path_factory, name: str, defines: list[str], libs: list[str]) -> Codecs:
    lib = tmp_path_factory.mktemp(name) / f"lib{name}.so"
    # -Werror: the module must build warning-free, as it does inside llama-server
    argv = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", "-shared", "-fPIC",
            *defines, "-I", str(SERVER_DIR), str(SERVER_DIR / "server-speech-codecs.cpp"), str(SHIM),
            "-o", str(lib), *libs]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        missing = [pkg for h, pkg in HEADERS.items() if not (Path("/usr/include") / h).is_file()]
        hint = f" (missing: {' '.join(missing)}; run scripts/bootstrap --test)" if missing else ""
        pytest.fail(f"compiling the speech codecs failed{hint}:\n{proc.stderr}")
    return Codecs(lib)


@pytest.fixture(scope="module")
def codecs(tmp_path_factory) -> Codecs:
    return build(tmp_path_factory, "speech_codecs", ["-DQ3_SPEECH_MP3", "-DQ3_SPEECH_OPUS"],
                 ["-lmp3lame", "-lopus", "-logg"])


def decode(data: bytes) -> tuple[np.ndarray, int]:
    pcm, rate = sf.read(io.BytesIO(data), dtype="float32")
    return pcm, rate


def signal(kind: str, n: int) -> np.ndarray:
    t = np.arange(n) / SR
    if kind == "sine":
        return (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    rng = np.random.default_rng(n)
    # speech-like: noise shaped by a slow envelope, as random-weight models make
    return (0.3 * rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).clip(-1, 1).astype(np.float32)


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = np.sum((ref - got) ** 2)
    return float(10 * np.log10(np.sum(ref ** 2) / max(noise, 1e-12)))


LENGTHS = [1, 479, 480, 1105, 24000, 24001, 30011]


def test_both_formats_are_compiled_in(codecs):
    assert codecs.available("mp3") and codecs.available("opus")
    assert not codecs.available("aac") and not codecs.available("flac")


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_a_whole_file_decodes_to_exactly_the_samples_encoded(codecs, fmt, n):
    pcm = signal("sine", n)
    data = codecs.encode(fmt, pcm)
    out, rate = decode(data)
    assert rate == SR
    assert len(out) == n


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("chunk", [480, 3840, 7777])
def test_a_streamed_opus_decodes_to_exactly_the_samples_encoded(codecs, n, chunk):
    out, rate = decode(codecs.encode("opus", signal("noise", n), whole=False, chunk=chunk))
    assert (rate, len(out)) == (SR, n)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("chunk", [480, 3840, 7777])
def test_a_streamed_mp3_is_longer_by_the_codec_delay_and_the_last_frames_padding(codecs, n, chunk):
    out, rate = decode(codecs.encode("mp3", signal("noise", n), whole=False, chunk=chunk))
    extra = len(out) - n
    assert rate == SR and len(out) % MP3_FRAME == 0
    assert MP3_DELAY < extra <= MP3_DELAY + 2 * MP3_FRAME, extra


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
@pytest.mark.parametrize("kind", ["sine", "noise"])
def test_the_decoded_audio_is_the_input(codecs, fmt, kind):
    """Aligned sample by sample (no shift: the decoders trim the delays), at a lossy codec's fidelity."""
    pcm = signal(kind, 48000)
    out, _ = decode(codecs.encode(fmt, pcm))
    if kind == "sine":
        assert snr_db(pcm, out) > 20, snr_db(pcm, out)
    else:
        # a perceptual codec keeps noise's spectrum, not its waveform: aligned noise still correlates
        # (shifted by one sample it would not)
        corr = float(np.corrcoef(pcm, out)[0, 1])
        assert corr > 0.5, corr
        assert abs(float(np.corrcoef(pcm[1:], out[:-1])[0, 1])) < corr / 2


def test_a_streamed_mp3_is_the_input_after_the_codec_delay(codecs):
    pcm = signal("sine", 48000)
    out, _ = decode(codecs.encode("mp3", pcm, whole=False))
    assert snr_db(pcm, out[MP3_DELAY:MP3_DELAY + len(pcm)]) > 20


def test_stream_and_whole_opus_are_the_same_audio(codecs):
    pcm = signal("noise", 30011)
    whole, _ = decode(codecs.encode("opus", pcm))
    stream, _ = decode(codecs.encode("opus", pcm, whole=False, chunk=1000))
    assert np.array_equal(whole, stream)   # same packets; only the page boundaries differ


def test_the_containers(codecs):
    mp3 = codecs.encode("mp3", signal("sine", 24000))
    assert mp3[0] == 0xFF and mp3[1] & 0xF0 == 0xF0          # MPEG frame sync
    assert b"Info" in mp3[:512] and b"LAME" in mp3[:512]     # the tag frame of a CBR file
    ogg = codecs.encode("opus", signal("sine", 24000))
    assert ogg.startswith(b"OggS") and ogg[28:36] == b"OpusHead" and b"OpusTags" in ogg[:512]
    assert codecs.encode("opus", signal("sine", 24000)) == ogg   # same audio, same bytes (fixed serial)


def test_without_the_libraries_nothing_is_offered(tmp_path_factory):
    bare = build(tmp_path_factory, "speech_codecs_bare", [], [])
    assert not bare.available("mp3") and not bare.available("opus")
    with pytest.raises(RuntimeError, match="this build has no mp3 encoder"):
        bare.encode("mp3", signal("sine", 100))
