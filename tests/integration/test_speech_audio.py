"""The speech service's audio and text helpers (patches/overlay/tools/server/server-speech-audio.cpp),
compiled with g++ together with a small C shim (speech_audio_shim.cpp) into a shared library and
driven through ctypes. Encoded audio is checked by decoding it with libsndfile (soundfile)."""

from __future__ import annotations

import ctypes
import io
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ..wav import wav_bytes

ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = ROOT / "patches" / "overlay" / "tools" / "server"
SHIM = Path(__file__).with_name("speech_audio_shim.cpp")
SR = 24000

PARAGRAPH = (
    "今天我们发布了Qwen3-TTS模型。It supports ten languages, including English and 中文！"
    "你可以用 llama.cpp 在 CPU 上运行它；效果很好。"
)

_size = ctypes.c_size_t
_float_p = ctypes.POINTER(ctypes.c_float)
_out = (ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(_size))


class SpeechAudio:
    """Python face of the shim: numpy arrays and bytes in, numpy arrays and bytes out."""

    def __init__(self, path: Path):
        dll = ctypes.CDLL(str(path))
        sigs = {
            "sa_free": (None, [ctypes.c_void_p]),
            "sa_utf8_length": (_size, [ctypes.c_char_p, _size]),
            "sa_strip_invisible": (None, [ctypes.c_char_p, _size, *_out]),
            "sa_check_reference_wav": (None, [ctypes.c_char_p, _size, *_out]),
            "sa_split_text": (None, [ctypes.c_char_p, _size, _size, *_out]),
            "sa_trim_trailing_silence": (_size, [_float_p, _size, ctypes.c_int, ctypes.c_float, ctypes.c_float]),
            "sa_peak_normalize": (ctypes.c_float, [_float_p, _size, ctypes.c_float, ctypes.c_float]),
            "sa_lowpass_new": (ctypes.c_void_p, [ctypes.c_int, ctypes.c_float]),
            "sa_lowpass_process": (None, [ctypes.c_void_p, _float_p, _size]),
            "sa_lowpass_delete": (None, [ctypes.c_void_p]),
            "sa_time_stretch": (None, [_float_p, _size, ctypes.c_int, ctypes.c_float, *_out]),
            "sa_silence": (None, [ctypes.c_int, ctypes.c_int, *_out]),
            "sa_to_s16": (None, [_float_p, _size, ctypes.POINTER(ctypes.c_int16)]),
            "sa_encode_wav": (None, [_float_p, _size, ctypes.c_int, *_out]),
            "sa_wav_stream_header": (None, [ctypes.c_int, *_out]),
            "sa_encode_pcm16": (None, [_float_p, _size, *_out]),
            "sa_encode_flac": (None, [_float_p, _size, ctypes.c_int, *_out]),
            "sa_flac_new": (ctypes.c_void_p, [ctypes.c_int, ctypes.c_uint64, ctypes.c_int]),
            "sa_flac_header": (None, [ctypes.c_void_p, *_out]),
            "sa_flac_encode": (None, [ctypes.c_void_p, _float_p, _size, ctypes.c_int, *_out]),
            "sa_flac_delete": (None, [ctypes.c_void_p]),
        }
        for name, (restype, argtypes) in sigs.items():
            fn = getattr(dll, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self.dll = dll

    def _take(self, fn, *args) -> bytes:
        out = ctypes.c_void_p()
        size = _size()
        fn(*args, ctypes.byref(out), ctypes.byref(size))
        try:
            return ctypes.string_at(out, size.value)
        finally:
            self.dll.sa_free(out)

    @staticmethod
    def _f32(pcm) -> np.ndarray:
        return np.ascontiguousarray(pcm, dtype=np.float32).copy()

    @staticmethod
    def _ptr(arr: np.ndarray):
        return arr.ctypes.data_as(_float_p)

    def utf8_length(self, data: bytes) -> int:
        return self.dll.sa_utf8_length(data, len(data))

    def strip_invisible(self, text: str) -> str:
        data = text.encode()
        return self._take(self.dll.sa_strip_invisible, data, len(data)).decode()

    def check_reference_wav(self, data: bytes) -> str:
        return self._take(self.dll.sa_check_reference_wav, data, len(data)).decode()

    def split_text(self, text: str, max_chars: int) -> list[str]:
        data = text.encode()
        packed = self._take(self.dll.sa_split_text, data, len(data), max_chars)
        segments, pos = [], 0
        while pos < len(packed):
            (n,) = struct.unpack_from("<I", packed, pos)
            segments.append(packed[pos + 4 : pos + 4 + n].decode())
            pos += 4 + n
        return segments

    def trim_trailing_silence(self, pcm, threshold_db=-45.0, keep_ms=120.0) -> tuple[np.ndarray, int]:
        arr = self._f32(pcm)
        removed = self.dll.sa_trim_trailing_silence(self._ptr(arr), len(arr), SR, threshold_db, keep_ms)
        return arr[: len(arr) - removed], removed

    def peak_normalize(self, pcm, target_peak=0.95, max_gain=8.0) -> tuple[np.ndarray, float]:
        arr = self._f32(pcm)
        gain = self.dll.sa_peak_normalize(self._ptr(arr), len(arr), target_peak, max_gain)
        return arr, gain

    def lowpass(self, pcm, cutoff_hz: float, chunks=None) -> np.ndarray:
        arr = self._f32(pcm)
        filt = self.dll.sa_lowpass_new(SR, cutoff_hz)
        try:
            bounds = [0, *(chunks or []), len(arr)]
            for begin, end in zip(bounds, bounds[1:]):
                part = arr[begin:end]
                self.dll.sa_lowpass_process(filt, self._ptr(part), len(part))
        finally:
            self.dll.sa_lowpass_delete(filt)
        return arr

    def time_stretch(self, pcm, speed: float) -> np.ndarray:
        arr = self._f32(pcm)
        raw = self._take(self.dll.sa_time_stretch, self._ptr(arr), len(arr), SR, speed)
        return np.frombuffer(raw, dtype=np.float32)

    def silence(self, ms: int) -> np.ndarray:
        return np.frombuffer(self._take(self.dll.sa_silence, SR, ms), dtype=np.float32)

    def to_s16(self, pcm) -> np.ndarray:
        arr = self._f32(pcm)
        out = np.zeros(len(arr), dtype=np.int16)
        self.dll.sa_to_s16(self._ptr(arr), len(arr), out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)))
        return out

    def encode_wav(self, pcm, sample_rate=SR) -> bytes:
        arr = self._f32(pcm)
        return self._take(self.dll.sa_encode_wav, self._ptr(arr), len(arr), sample_rate)

    def wav_stream_header(self, sample_rate=SR) -> bytes:
        return self._take(self.dll.sa_wav_stream_header, sample_rate)

    def encode_pcm16(self, pcm) -> bytes:
        arr = self._f32(pcm)
        return self._take(self.dll.sa_encode_pcm16, self._ptr(arr), len(arr))

    def encode_flac(self, pcm, sample_rate=SR) -> bytes:
        arr = self._f32(pcm)
        return self._take(self.dll.sa_encode_flac, self._ptr(arr), len(arr), sample_rate)

    def flac_stream(self, chunks, sample_rate=SR, total_samples=0, block_size=4096) -> tuple[bytes, list[bytes]]:
        """header, then what each encode() call returned; the last chunk is passed with final = true"""
        enc = self.dll.sa_flac_new(sample_rate, total_samples, block_size)
        try:
            header = self._take(self.dll.sa_flac_header, enc)
            parts = []
            for i, chunk in enumerate(chunks):
                arr = self._f32(chunk)
                final = int(i == len(chunks) - 1)
                parts.append(self._take(self.dll.sa_flac_encode, enc, self._ptr(arr), len(arr), final))
        finally:
            self.dll.sa_flac_delete(enc)
        return header, parts



@pytest.fixture(scope="module")
def sa(tmp_path_factory) -> SpeechAudio:
    lib = tmp_path_factory.mktemp("speech_audio") / "libspeech_audio.so"
    # -Werror: the module must build warning-free, as it does inside llama-server
    argv = [
        "g++", "-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", "-shared", "-fPIC",
        "-I", str(SERVER_DIR), str(SERVER_DIR / "server-speech-audio.cpp"), str(SHIM), "-o", str(lib),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"compiling speech_audio failed:\n{proc.stderr}")
    return SpeechAudio(lib)


def sine(freq: float, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def dominant_frequency(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.argmax(spectrum)) * SR / len(pcm)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# ---------------------------------------------------------------- UTF-8


@pytest.mark.parametrize(
    ("data", "length"),
    [
        (b"", 0),
        (b"abc", 3),
        ("中文".encode(), 2),
        ("é😀".encode(), 2),
        (b"\xff\xfe", 2),            # not UTF-8 at all: one per byte
        (b"a\xe4\xb8", 3),           # truncated 3-byte sequence
        (b"\xc0\xaf", 2),            # overlong '/'
        (b"\xed\xa0\x80", 3),        # UTF-16 surrogate
        (b"\xf4\x90\x80\x80", 4),    # past U+10FFFF
        (b"\x80x", 2),               # stray continuation byte
    ],
)
def test_utf8_length(sa, data, length):
    assert sa.utf8_length(data) == length


def test_utf8_length_agrees_with_python_on_valid_text(sa):
    rng = np.random.default_rng(1)
    alphabet = ["a", "é", "中", "😀", " ", "\n"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet, size=rng.integers(0, 12)))
        assert sa.utf8_length(text.encode()) == len(text), text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\x00\x00", ""),
        ("\u200b\u200c\u200d\u2060\ufeff", ""),
        ("\x01\x07\x1b\x7f\x85", ""),
        ("\u200e\u202e\u00ad\ufe0f", ""),
        ("a\x00b", "ab"),
        ("line one\nline\ttwo\r", "line one\nline\ttwo\r"),  # whitespace stays
        ("中\u200b文 😀", "中文 😀"),
    ],
)
def test_strip_invisible_keeps_only_what_can_be_spoken(sa, text, expected):
    assert sa.strip_invisible(text) == expected


# ---------------------------------------------------------------- split_text


def assert_segmentation(text: str, segments: list[str], cap: int) -> None:
    """Every segment is non-empty, trimmed and within the cap, and the segments are the text in
    order with only whitespace between them."""
    pos = 0
    for seg in segments:
        assert seg.strip() == seg and seg, repr(seg)
        assert len(seg) <= cap, (len(seg), seg)
        while text[pos].isspace():
            pos += 1
        assert text.startswith(seg, pos), (seg, text[pos:])
        pos += len(seg)
    assert text[pos:].strip() == ""


def test_split_mixed_paragraph_at_sentences_then_clauses(sa):
    segments = sa.split_text(PARAGRAPH, 40)
    assert segments == [
        "今天我们发布了Qwen3-TTS模型。",
        "It supports ten languages,",
        "including English and 中文！",
        "你可以用 llama.cpp 在 CPU 上运行它；效果很好。",
    ]
    assert_segmentation(PARAGRAPH, segments, 40)
    assert "".join(segments) == PARAGRAPH.replace("languages, including", "languages,including")


def test_split_merges_short_sentences_up_to_the_cap(sa):
    segments = sa.split_text(PARAGRAPH, 80)
    assert segments == [
        "今天我们发布了Qwen3-TTS模型。It supports ten languages, including English and 中文！",
        "你可以用 llama.cpp 在 CPU 上运行它；效果很好。",
    ]
    assert sa.split_text(PARAGRAPH, 1000) == [PARAGRAPH]


def test_split_long_english_sentence_at_spaces(sa):
    text = " ".join(["the quick brown fox jumps over the lazy dog"] * 5)
    segments = sa.split_text(text, 20)
    assert_segmentation(text, segments, 20)
    assert " ".join(segments) == text  # every cut was at a space: no word was broken
    assert all(len(seg) >= 20 // 3 for seg in segments[:-1])


def test_split_long_chinese_sentence_between_characters(sa):
    text = "我们在这里测试一个没有任何标点符号的很长的中文句子用来检查切分是否正确"
    segments = sa.split_text(text, 10)
    assert_segmentation(text, segments, 10)
    assert "".join(segments) == text
    assert [len(s) for s in segments[:-1]] == [10] * (len(segments) - 1)


def test_split_mixed_script_keeps_english_words_whole(sa):
    text = "这是一个包含English单词和Qwen模型名字的很长的句子没有标点符号但是需要被切开"
    for cap in range(8, 30):
        segments = sa.split_text(text, cap)
        assert_segmentation(text, segments, cap)
        assert "".join(segments) == text
        assert any("English" in s for s in segments) and any("Qwen" in s for s in segments), (cap, segments)


def test_split_mid_word_only_as_last_resort(sa):
    assert sa.split_text("a" * 50, 20) == ["a" * 20, "a" * 20, "a" * 10]
    text = "see https://example.com/a/very/long/path/without/any/spaces/at/all"
    segments = sa.split_text(text, 20)
    assert_segmentation(text, segments, 20)
    assert segments[0] == "see"


def test_split_prefers_clause_marks_over_spaces(sa):
    text = "First clause comes here, then a second one follows, and the third clause ends it"
    segments = sa.split_text(text, 40)
    assert_segmentation(text, segments, 40)
    assert segments[:2] == ["First clause comes here,", "then a second one follows,"]


@pytest.mark.parametrize("cap", range(4, 61))
def test_split_keeps_decimal_numbers_and_file_names(sa, cap):
    text = "The answer is 3.14 exactly, and llama.cpp runs it. 圆周率约为3.14。Next sentence."
    segments = sa.split_text(text, cap)
    assert_segmentation(text, segments, cap)
    assert sum(s.count("3.14") for s in segments) == 2
    if cap >= len("llama.cpp"):  # shorter caps must break the word somewhere
        assert any("llama.cpp" in s for s in segments)


def test_split_does_not_end_sentences_at_abbreviations(sa):
    segments = sa.split_text("Dr. Smith arrived at the lab today. He said hi.", 25)
    assert segments[0].startswith("Dr. Smith")
    # were "e.g." a sentence end, it would be the cut taken in the first 22 characters
    segments = sa.split_text("Some languages, e.g. English and Chinese, are supported here.", 22)
    assert segments[:2] == ["Some languages,", "e.g. English and"]


def test_split_at_newlines_and_keeps_closing_quotes(sa):
    assert sa.split_text("line one\nline two\n\n", 10) == ["line one", "line two"]
    assert sa.split_text("他说：“你好。”然后走了。", 8) == ["他说：“你好。”", "然后走了。"]
    assert sa.split_text("Really?! Yes... I think so.", 12) == ["Really?!", "Yes...", "I think so."]


def test_split_drops_nothing_but_whitespace(sa):
    assert sa.split_text("", 10) == []
    assert sa.split_text(" \n\t　 ", 10) == []
    assert sa.split_text("  hello  ", 10) == ["hello"]
    rng = np.random.default_rng(7)
    pieces = ["今天", "天气", "很好", "。", "，", "Hello", "world", " ", "\n", "!", "3.14", "、", "llama.cpp", "？"]
    for _ in range(300):
        text = "".join(rng.choice(pieces, size=rng.integers(1, 40)))
        cap = int(rng.integers(1, 30))
        assert_segmentation(text, sa.split_text(text, cap), cap)


# ---------------------------------------------------------------- post-processing


def test_trim_removes_long_silence_and_keeps_a_margin(sa):
    tone = sine(300, 0.5)
    hiss = (0.001 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32)  # -60 dBFS
    trimmed, removed = sa.trim_trailing_silence(np.concatenate([tone, hiss]))
    keep = int(0.120 * SR)
    assert len(trimmed) == len(tone) + keep
    assert removed == SR - keep
    np.testing.assert_array_equal(trimmed[len(tone) :], hiss[:keep])

    trimmed, _ = sa.trim_trailing_silence(np.concatenate([tone, hiss]), keep_ms=0)
    assert len(trimmed) == len(tone)


def test_trim_leaves_audio_without_trailing_silence(sa):
    tone = sine(300, 0.5)
    trimmed, removed = sa.trim_trailing_silence(tone)
    assert removed == 0
    np.testing.assert_array_equal(trimmed, tone)
    # a short pause shorter than the margin is kept too
    short = np.concatenate([tone, np.zeros(int(0.05 * SR), np.float32)])
    assert sa.trim_trailing_silence(short)[1] == 0


def test_peak_normalize_hits_target_within_the_gain_cap(sa):
    out, gain = sa.peak_normalize(sine(440, 0.2, amplitude=0.25))
    assert gain == pytest.approx(0.95 / 0.25, rel=1e-5)
    assert np.max(np.abs(out)) == pytest.approx(0.95, rel=1e-5)

    out, gain = sa.peak_normalize(sine(440, 0.2, amplitude=0.01))
    assert gain == pytest.approx(8.0)
    assert np.max(np.abs(out)) == pytest.approx(0.08, rel=1e-4)

    zeros = np.zeros(1000, np.float32)
    out, gain = sa.peak_normalize(zeros)
    assert gain == 1.0
    np.testing.assert_array_equal(out, zeros)
    assert sa.peak_normalize([])[1] == 1.0


def test_lowpass_attenuates_above_cutoff_and_passes_below(sa):
    def gain_db(freq: float) -> float:
        x = sine(freq, 0.5)
        y = sa.lowpass(x, 4000)
        steady = slice(len(x) // 2, None)  # past the filter's transient
        return 20 * np.log10(rms(y[steady]) / rms(x[steady]))

    assert gain_db(10000) < -20
    assert abs(gain_db(300)) < 1
    assert gain_db(4000) == pytest.approx(-3.0, abs=0.5)  # Butterworth: -3 dB at the cutoff


def test_lowpass_state_carries_across_calls(sa):
    x = np.random.default_rng(3).uniform(-1, 1, 10000).astype(np.float32)
    whole = sa.lowpass(x, 4000)
    chunked = sa.lowpass(x, 4000, chunks=[1, 2, 100, 101, 4000, 9999])
    np.testing.assert_array_equal(whole, chunked)


@pytest.mark.parametrize("speed", [0.5, 1.5, 2.0, 0.25, 4.0])
def test_time_stretch_changes_length_not_pitch(sa, speed):
    x = sine(440, 1.0)
    y = sa.time_stretch(x, speed)
    assert abs(len(y) - round(len(x) / speed)) <= SR // 100
    middle = y[len(y) // 10 : -len(y) // 10]
    assert dominant_frequency(middle) == pytest.approx(440, abs=3)
    # segments joined in phase: no cancellation dips, so the level stays that of the input
    assert rms(middle) == pytest.approx(rms(x), rel=0.05)
    frames = middle[: len(middle) // 240 * 240].reshape(-1, 240)
    assert np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).min() > 0.8 * rms(x)


@pytest.mark.parametrize("speed", [0.5, 0.8, 1.25, 2.0])
def test_time_stretch_low_voice(sa, speed):
    # 110 Hz with harmonics: one pitch period (9 ms) is close to the search range, unlike 440 Hz
    t = np.arange(SR) / SR
    x = (0.3 * sum(np.sin(2 * np.pi * 110 * k * t + k) / k for k in range(1, 6))).astype(np.float32)
    y = sa.time_stretch(x, speed)
    middle = y[len(y) // 10 : -len(y) // 10]
    assert dominant_frequency(middle) == pytest.approx(110, abs=2)
    frames = middle[: len(middle) // 240 * 240].reshape(-1, 240)
    assert np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).min() > 0.8 * rms(x)


def test_time_stretch_moves_events_in_time(sa):
    x = np.zeros(SR, np.float32)
    x[int(0.4 * SR) : int(0.6 * SR)] = sine(200, 0.2)
    for speed in (0.5, 2.0):
        y = sa.time_stretch(x, speed)
        loud = np.flatnonzero(np.abs(y) > 0.1) / SR
        assert loud[0] == pytest.approx(0.4 / speed, abs=0.015)
        assert loud[-1] == pytest.approx(0.6 / speed, abs=0.015)


def test_time_stretch_at_unit_speed_is_identity(sa):
    x = np.random.default_rng(5).uniform(-1, 1, 1234).astype(np.float32)
    np.testing.assert_array_equal(sa.time_stretch(x, 1.0), x)
    assert len(sa.time_stretch(np.zeros(0, np.float32), 2.0)) == 0


def test_silence(sa):
    s = sa.silence(250)
    assert len(s) == 6000 and not s.any()
    assert len(sa.silence(0)) == 0 and len(sa.silence(-5)) == 0


def test_to_s16_clamps_and_rounds(sa):
    x = np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5, -0.5, 1e-5, -1e-5, 0.25, np.nan], np.float32)
    v = np.clip(x[:-1].astype(np.float64), -1, 1) * 32767
    expected = np.sign(v) * np.floor(np.abs(v) + 0.5)
    assert sa.to_s16(x).tolist() == [*expected.astype(int).tolist(), 0]
    assert sa.to_s16(x)[:5].tolist() == [0, 32767, -32767, 32767, -32767]

    r = np.random.default_rng(2).uniform(-1.2, 1.2, 10000).astype(np.float32)
    v = np.clip(r.astype(np.float64), -1, 1) * 32767
    np.testing.assert_array_equal(sa.to_s16(r), np.sign(v) * np.floor(np.abs(v) + 0.5))


# ---------------------------------------------------------------- WAV / PCM


def test_encode_wav_reads_back(sa):
    x = sine(440, 0.3)
    wav = sa.encode_wav(x)
    assert len(wav) == 44 + 2 * len(x)
    assert wav[:4] == b"RIFF" and struct.unpack_from("<I", wav, 4)[0] == len(wav) - 8
    data, rate = sf.read(io.BytesIO(wav), dtype="int16")
    info = sf.info(io.BytesIO(wav))
    assert (rate, info.channels, info.subtype) == (SR, 1, "PCM_16")
    np.testing.assert_array_equal(data, sa.to_s16(x))


def test_wav_stream_header_and_raw_pcm(sa):
    header = sa.wav_stream_header(22050)
    assert struct.unpack("<4sI4s4sIHHIIHH4sI", header) == (
        b"RIFF", 0xFFFFFFFF, b"WAVE", b"fmt ", 16, 1, 1, 22050, 44100, 2, 16, b"data", 0xFFFFFFFF,
    )
    x = sine(440, 0.1)
    pcm = sa.encode_pcm16(x)
    assert pcm == sa.to_s16(x).astype("<i2").tobytes()
    # the header describes the bytes that follow it
    assert sa.encode_wav(x, 22050)[44:] == pcm


# ---------------------------------------------------------------- FLAC


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def parse_streaminfo(flac: bytes) -> dict:
    assert flac[:4] == b"fLaC"
    assert flac[4] == 0x80  # last metadata block, type 0 = STREAMINFO
    assert int.from_bytes(flac[5:8], "big") == 34
    bits = int.from_bytes(flac[8:42], "big")
    field = lambda offset, width: (bits >> (272 - offset - width)) & ((1 << width) - 1)  # noqa: E731
    return {
        "min_block": field(0, 16),
        "max_block": field(16, 16),
        "min_frame": field(32, 24),
        "max_frame": field(56, 24),
        "sample_rate": field(80, 20),
        "channels": field(100, 3) + 1,
        "bits": field(103, 5) + 1,
        "total": field(108, 36),
        "md5": field(144, 128),
    }


def parse_frame(frame: bytes) -> dict:
    """Header fields of one whole frame, after checking both its CRCs."""
    sync, codes, layout = struct.unpack_from(">HBB", frame)
    assert sync == 0xFFF8  # sync code, reserved 0, fixed block size
    assert layout >> 4 == 0 and (layout >> 1) & 7 == 4 and layout & 1 == 0  # mono, 16 bit
    lead = frame[4]
    extra = 0 if lead < 0x80 else bin(lead).index("0", 2) - 3  # continuation bytes
    number = lead & (0x7F >> (extra + 1)) if extra else lead
    for byte in frame[5 : 5 + extra]:
        assert byte >> 6 == 2
        number = (number << 6) | (byte & 0x3F)
    pos = 5 + extra
    bs_code, sr_code = codes >> 4, codes & 15
    block_sizes = {1: 192, **{c: 576 << (c - 2) for c in range(2, 6)}, **{c: 256 << (c - 8) for c in range(8, 16)}}
    if bs_code in block_sizes:
        block = block_sizes[bs_code]
    else:
        width = 1 if bs_code == 6 else 2
        block = int.from_bytes(frame[pos : pos + width], "big") + 1
        pos += width
    pos += {12: 1, 13: 2, 14: 2}.get(sr_code, 0)
    assert frame[pos] == crc8(frame[:pos]), "header CRC-8"
    assert int.from_bytes(frame[-2:], "big") == crc16(frame[:-2]), "frame CRC-16"
    subframe_type = (frame[pos + 1] >> 1) & 0x3F
    return {"number": number, "block": block, "sr_code": sr_code, "subframe_type": subframe_type}


def decode_flac(flac: bytes, n: int) -> tuple[np.ndarray, int]:
    """Decodes with libsndfile, which cannot read a stream of unknown length (STREAMINFO total 0)
    to its end: it reports SF_COUNT_MAX frames and its seek past the last sample fails. So the
    expected length n is written into a copy of STREAMINFO first; the frames are decoded as sent."""
    assert parse_streaminfo(flac)["total"] in (0, n)
    patched = bytearray(flac)
    patched[21] = (patched[21] & 0xF0) | (n >> 32)  # the total's top 4 bits share a byte with bits-per-sample
    patched[22:26] = (n & 0xFFFFFFFF).to_bytes(4, "big")
    data, rate = sf.read(io.BytesIO(bytes(patched)), dtype="int16")
    return data, rate


def signal(kind: str, n: int) -> np.ndarray:
    if kind == "noise":
        return np.random.default_rng(n).uniform(-1, 1, n).astype(np.float32)
    if kind == "sine":
        return sine(440, n / SR, amplitude=0.7)
    if kind == "speechlike":  # harmonics with a slow envelope and a little noise
        t = np.arange(n) / SR
        harmonics = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
        noise = 0.01 * np.random.default_rng(n).standard_normal(n)
        return (0.2 * np.sin(2 * np.pi * 3 * t) ** 2 * harmonics + noise).astype(np.float32)
    return np.zeros(n, np.float32)


@pytest.mark.parametrize("n", [0, 1, 4095, 4096, 4097, 10000])
@pytest.mark.parametrize("kind", ["noise", "sine", "silence", "speechlike"])
def test_flac_is_lossless(sa, kind, n):
    x = signal(kind, n)
    flac = sa.encode_flac(x)
    info = parse_streaminfo(flac)
    assert info == {
        "min_block": 4096, "max_block": 4096, "min_frame": 0, "max_frame": 0, "sample_rate": SR,
        "channels": 1, "bits": 16, "total": n, "md5": 0,
    }
    if n == 0:
        # STREAMINFO alone, no frames (total 0 reads as "unknown", so libsndfile cannot open it)
        assert len(flac) == 42
        return
    data, rate = decode_flac(flac, n)
    assert rate == SR
    np.testing.assert_array_equal(data, sa.to_s16(x))


def test_flac_compresses_and_picks_the_right_subframe(sa):
    n = SR * 2
    wav_size = 44 + 2 * n
    # a quantized sine leaves ~3 bits of residual per sample (measured 0.26 of WAV); speech-like audio
    # with -40 dB noise needs a Rice parameter near 8 (measured 0.70), so a poor parameter choice
    # would fall back to VERBATIM here
    assert len(sa.encode_flac(signal("sine", n))) < 0.3 * wav_size
    assert len(sa.encode_flac(signal("speechlike", n))) < 0.71 * wav_size
    noise_flac = sa.encode_flac(signal("noise", n))
    frames = -(-n // 4096)
    # full-scale noise cannot be predicted: VERBATIM, a few header bytes per frame over raw PCM
    assert len(noise_flac) <= 42 + 2 * n + 20 * frames
    assert len(sa.encode_flac(signal("silence", n))) < 42 + 12 * frames

    # one frame each, so the subframe follows the frame header directly
    for kind, expected in [("silence", {0}), ("noise", {1}), ("sine", {10, 11, 12})]:
        header, parts = sa.flac_stream([signal(kind, 4096)])
        assert parse_frame(parts[0])["subframe_type"] in expected, kind


def test_flac_streaming_decodes_to_the_same_samples(sa):
    x = signal("speechlike", 20000)
    cuts = [1000, 6000, 9000, 9007, 17000]
    chunks = np.split(x, cuts)
    header, parts = sa.flac_stream(chunks)
    assert parse_streaminfo(header)["total"] == 0  # unknown while streaming
    # a call returns frames only once a whole block is pending (blocks end at 4096, 8192, 12288,
    # 16384), and the final call flushes the short rest
    assert [len(p) > 0 for p in parts] == [False, True, True, False, True, True]
    data, rate = decode_flac(header + b"".join(parts), len(x))
    assert rate == SR
    np.testing.assert_array_equal(data, sa.to_s16(x))


def test_flac_frame_headers_count_frames_in_the_variable_length_code(sa):
    # block size 16 makes thousands of frames, so 1-, 2- and 3-byte frame numbers all occur
    n_frames = 2100
    x = signal("speechlike", 16 * n_frames)
    header, parts = sa.flac_stream(np.split(x, n_frames), block_size=16)
    info = parse_streaminfo(header)
    assert (info["min_block"], info["max_block"]) == (16, 16)
    for i, frame in enumerate(parts):
        fields = parse_frame(frame)
        assert (fields["number"], fields["block"], fields["sr_code"]) == (i, 16, 7)
    data, _ = decode_flac(header + b"".join(parts), len(x))
    np.testing.assert_array_equal(data, sa.to_s16(x))


@pytest.mark.parametrize("block_size", [16, 100, 192, 256, 576, 1000, 4608, 65535])
def test_flac_block_sizes(sa, block_size):
    n = 2 * block_size + 5
    x = signal("speechlike", n)
    header, parts = sa.flac_stream([x], total_samples=n, block_size=block_size)
    flac = header + b"".join(parts)
    assert parse_streaminfo(flac)["total"] == n
    data, _ = decode_flac(flac, n)
    np.testing.assert_array_equal(data, sa.to_s16(x))


@pytest.mark.parametrize("rate", [8000, 11025, 12000, 16000, 22050, 24000, 44100, 48000, 100000])
def test_flac_sample_rates(sa, rate):
    x = signal("speechlike", 5000)
    flac = sa.encode_flac(x, rate)
    assert parse_streaminfo(flac)["sample_rate"] == rate
    data, decoded_rate = decode_flac(flac, len(x))
    assert decoded_rate == rate
    np.testing.assert_array_equal(data, sa.to_s16(x))


# ---------------------------------------------------------------- reference recordings


@pytest.mark.parametrize(
    ("rate", "subtype", "channels"),
    [(24000, "PCM_16", 1), (16000, "PCM_24", 2), (48000, "PCM_32", 1), (44100, "FLOAT", 1), (22050, "DOUBLE", 2),
     (8000, "PCM_U8", 1), (192000, "PCM_16", 1)],
)
def test_reference_wav_in_every_pcm_and_float_layout_is_usable(sa, rate, subtype, channels):
    one_second = 0.25 * np.sin(2 * np.pi * 200 * np.arange(rate) / rate)
    assert sa.check_reference_wav(wav_bytes(one_second, rate, subtype, channels)) == ""


def test_reference_wav_with_extra_chunks_and_an_open_data_size_is_usable(sa):
    wav = wav_bytes(sine(200, 1.0))
    extra = b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\0"  # odd size: padded
    wav = wav[:12] + extra + wav[12:]
    at = wav.index(b"data")
    assert sa.check_reference_wav(wav[: at + 4] + b"\xff\xff\xff\xff" + wav[at + 8 :]) == ""


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda: wav_bytes(sine(200, 1 / SR)), "(1 samples)"),
        (lambda: wav_bytes(sine(200, 1000 / SR)), "(1000 samples), a voice needs at least 0.5 s"),
        (lambda: wav_bytes(sine(200, 0.49)), "a voice needs at least 0.5 s"),
        (lambda: wav_bytes(sine(200, 61.0)), "at most 60 s"),
        (lambda: wav_bytes(sine(200, 1.0), rate=4000), "sample rate is 4000 Hz"),
        (lambda: wav_bytes(sine(200, 1.0), channels=3), "3 channels"),
        (lambda: wav_bytes(np.zeros(SR)), "digital silence"),
        (lambda: b"", "not a RIFF/WAVE file"),
        (lambda: b"RIFF\0\0\0\0WAVE", "no fmt chunk"),
        (lambda: wav_bytes(sine(200, 1.0))[:36], "no data chunk"),
        (lambda: wav_bytes(sine(200, 1.0))[:30], "fmt chunk is truncated"),
    ],
)
def test_reference_wav_faults_are_named(sa, make, fragment):
    assert fragment in sa.check_reference_wav(make())


def test_reference_wav_with_a_non_finite_sample_is_refused(sa):
    x = sine(200, 1.0)
    x[1234] = np.nan
    wav = wav_bytes(x, subtype="FLOAT")
    assert sa.check_reference_wav(wav) == "sample 1234 is not a finite number"
    x[1234] = np.inf
    assert "not a finite number" in sa.check_reference_wav(wav_bytes(x, subtype="DOUBLE"))


def test_reference_wav_reader_survives_random_corruption(sa):
    good = wav_bytes(sine(200, 1.0))
    rng = np.random.default_rng(3)
    for _ in range(300):
        data = bytearray(good[: rng.integers(0, 200)] if rng.random() < 0.3 else good)
        for pos in rng.integers(0, min(len(data), 64) or 1, size=rng.integers(1, 6)):
            if pos < len(data):
                data[pos] = rng.integers(0, 256)
        assert isinstance(sa.check_reference_wav(bytes(data)), str)
