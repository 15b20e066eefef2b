"""Validating a built llama-server as a speech service, over HTTP, against the contract of
``POST /v1/audio/speech`` and ``GET /v1/audio/voices``.

The checks run against a base URL: either a server that ``q3build validate`` starts itself from the
staged build (natively or under the target's emulator, bound to 127.0.0.1, always stopped), or one
already running (``--url``). Every check has a name, a status (ok, failed, skipped) and a detail; a
skipped check says why. Requests cap the generated frames (``max_frames``) and decode greedily
(``top_k`` 1), because random tiny checkpoints rarely end on their own.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from q3build import ui
from q3build.speech.audio import Wav, parse_sse, parse_wav, rms
from q3build.speech.facts import FRAME_RATE, SAMPLE_RATE
from q3build.speech.server import SpeechClient

SILENCE_RMS = 1.0                  # int16 RMS at or below this is silence (all zeros or ±1 LSB dither)
TEXT = "Hello from q3build."


@dataclass
class Check:
    name: str
    status: str = "ok"             # ok, failed, skipped
    detail: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail, "seconds": round(self.seconds, 3)}


class Failed(Exception):
    """A check's expectation was not met; the message is the check's detail."""


def duration_bounds(max_frames: int) -> tuple[float, float]:
    """Plausible length of one short sentence capped at max_frames frames: at least one frame, at
    most the cap (plus a little for trimming and the decoder's tail)."""
    return 1 / FRAME_RATE, max_frames / FRAME_RATE + 0.25


# --- checks -----------------------------------------------------------------------------------

@dataclass
class Settings:
    max_frames: int = 16
    seed: int = 1234
    timeout: float = 120.0            # per request
    voice: str | None = None          # default: the first voice the server lists


@dataclass
class Run:
    base: str
    settings: Settings
    checks: list[Check] = field(default_factory=list)
    voice: str | None = None
    wav: Wav | None = None
    formats: list | None = None       # response_formats the server lists (None: it does not say)

    def check(self, name: str, fn: Callable[[], str]) -> Check:
        c = Check(name)
        t0 = time.monotonic()
        try:
            c.detail = fn() or ""
        except Failed as e:
            c.status, c.detail = "failed", str(e)
        except requests.RequestException as e:
            c.status, c.detail = "failed", f"request failed: {e}"
        c.seconds = time.monotonic() - t0
        self.checks.append(c)
        return c

    def skip(self, name: str, reason: str) -> None:
        self.checks.append(Check(name, "skipped", reason))

    def body(self, **extra) -> dict:
        b = {"model": "qwen3-tts", "input": TEXT, "voice": self.voice, "seed": self.settings.seed,
             "top_k": 1, "max_frames": self.settings.max_frames}
        b.update(extra)
        return b

    @property
    def client(self) -> SpeechClient:
        return SpeechClient(self.base, self.settings.timeout)

    def post(self, body: dict, *, stream: bool = False) -> requests.Response:
        return self.client.speech(body, stream=stream)


def _ok(r: requests.Response, what: str) -> requests.Response:
    if r.status_code != 200:
        raise Failed(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
    return r


def _audio_checks(pcm: bytes, what: str, s: Settings) -> str:
    try:
        level = rms(pcm)
    except ValueError as e:
        raise Failed(f"{what}: {e}") from None
    seconds = len(pcm) / 2 / SAMPLE_RATE
    lo, hi = duration_bounds(s.max_frames)
    if not lo <= seconds <= hi:
        raise Failed(f"{what}: duration {seconds:.3f} s outside {lo:.3f}–{hi:.3f} s (max_frames {s.max_frames})")
    if level <= SILENCE_RMS:
        raise Failed(f"{what}: silent (RMS {level:.2f} of 32767)")
    return f"{seconds:.3f} s, RMS {level:.0f}"


def check_health(run: Run) -> str:
    r = run.client.health()
    if r.status_code != 200:
        raise Failed(f"GET /health: HTTP {r.status_code}: {r.text[:200]}")
    return r.text.strip()[:80]


def check_voices(run: Run) -> str:
    r = _ok(run.client.voices(), "GET /v1/audio/voices")
    try:
        voices = r.json()["voices"]
        run.formats = r.json().get("response_formats")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise Failed(f"GET /v1/audio/voices: expected {{\"voices\": [...]}}, got {r.text[:200]}") from None
    if not voices:
        raise Failed("GET /v1/audio/voices: no voices")
    for v in voices:
        if not isinstance(v, dict) or not {"id", "name", "type"} <= set(v) or v["type"] not in ("builtin", "cloned"):
            raise Failed(f"GET /v1/audio/voices: voice {v!r} lacks id/name/type (builtin|cloned)")
    names = [v["id"] for v in voices]
    if run.settings.voice:
        if run.settings.voice not in names and run.settings.voice not in [v["name"] for v in voices]:
            raise Failed(f"--voice {run.settings.voice!r} is not listed (have {', '.join(names[:8])})")
        run.voice = run.settings.voice
    else:
        run.voice = names[0]
    return f"{len(voices)} voices, using {run.voice!r}"


def check_wav(run: Run) -> str:
    r = _ok(run.post(run.body(response_format="wav")), "wav")
    try:
        wav = parse_wav(r.content)
    except ValueError as e:
        raise Failed(f"wav: {e}") from None
    if (wav.rate, wav.channels, wav.bits) != (SAMPLE_RATE, 1, 16):
        raise Failed(f"wav: {wav.rate} Hz, {wav.channels} channel(s), {wav.bits} bit; expected {SAMPLE_RATE} Hz mono 16 bit")
    detail = _audio_checks(wav.data, "wav", run.settings)
    missing = [h for h in ("X-Audio-Seconds", "X-Real-Time-Factor") if h not in r.headers]
    if missing:
        raise Failed(f"wav: response headers lack {', '.join(missing)}")
    try:
        said = float(r.headers["X-Audio-Seconds"])
    except ValueError:
        raise Failed(f"wav: X-Audio-Seconds {r.headers['X-Audio-Seconds']!r} is not a number") from None
    if abs(said - wav.seconds) > 0.05:
        raise Failed(f"wav: X-Audio-Seconds says {said} but the body holds {wav.seconds:.3f} s")
    run.wav = wav
    return f"{detail}, RTF {r.headers['X-Real-Time-Factor']}, backend {r.headers.get('X-Speech-Backend', '?')}"


def check_determinism(run: Run) -> str:
    a = _ok(run.post(run.body(response_format="wav")), "first request").content
    b = _ok(run.post(run.body(response_format="wav")), "second request").content
    if a != b:
        diff = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) if len(a) == len(b) else None
        raise Failed(f"seed {run.settings.seed}: two identical requests gave different audio "
                     + (f"(first difference at byte {diff})" if diff is not None else f"({len(a)} vs {len(b)} bytes)"))
    return f"seed {run.settings.seed}: identical {len(a)} bytes"


def check_pcm(run: Run) -> str:
    r = _ok(run.post(run.body(response_format="pcm")), "pcm")
    detail = _audio_checks(r.content, "pcm", run.settings)
    if run.wav is not None and r.content != run.wav.data:
        raise Failed(f"pcm: {len(r.content)} bytes differ from the wav body's {len(run.wav.data)} bytes of samples "
                     "for the same seed")
    return detail + (", same samples as wav" if run.wav is not None else "")


def check_flac(run: Run) -> str:
    r = _ok(run.post(run.body(response_format="flac")), "flac")
    if r.content[:4] != b"fLaC":
        raise Failed(f"flac: body starts with {r.content[:4]!r}, not fLaC")
    try:
        import soundfile
    except ImportError:
        return f"{len(r.content)} bytes, fLaC magic (soundfile not installed: not decoded)"
    return _audio_checks(_decoded_mono(soundfile, r.content, "flac").tobytes(), "flac", run.settings)


def _decoded_mono(soundfile, content: bytes, fmt: str):
    """A compressed response decoded by libsndfile to int16 samples, which must be 24 kHz mono."""
    try:
        data, rate = soundfile.read(io.BytesIO(content), dtype="int16")
    except RuntimeError as e:
        raise Failed(f"{fmt}: does not decode: {e}") from None
    if rate != SAMPLE_RATE or data.ndim != 1:
        raise Failed(f"{fmt}: {rate} Hz, shape {data.shape}; expected {SAMPLE_RATE} Hz mono")
    return data


def check_compressed(run: Run) -> str:
    """mp3 and Ogg Opus, where the build serves them (GET /v1/audio/voices lists response_formats):
    each decodes (libsndfile) to 24 kHz mono of exactly the wav's length (LAME's Info tag, Opus
    pre-skip and end trimming)."""
    served = [f for f in ("mp3", "opus") if f in (run.formats or [])]
    if not served:
        listed = ", ".join(run.formats) if run.formats else "no response_formats listed"
        return f"mp3 and opus not served by this build ({listed})"
    try:
        import soundfile
    except ImportError:
        soundfile = None
    decodable = {"mp3": "MP3", "opus": "OGG"}
    out = []
    for fmt in served:
        r = _ok(run.post(run.body(response_format=fmt)), fmt)
        magic = b"OggS" if fmt == "opus" else None
        if magic and r.content[:4] != magic:
            raise Failed(f"{fmt}: body starts with {r.content[:4]!r}, not {magic!r}")
        if soundfile is None or decodable[fmt] not in soundfile.available_formats():
            out.append(f"{fmt} {len(r.content)} bytes (this libsndfile cannot decode it: not decoded)")
            continue
        data = _decoded_mono(soundfile, r.content, fmt)
        if run.wav is not None and len(data) != len(run.wav.data) // 2:
            raise Failed(f"{fmt}: decodes to {len(data)} samples, the wav of the same seed has {len(run.wav.data) // 2}")
        _audio_checks(data.tobytes(), fmt, run.settings)
        out.append(f"{fmt} {len(r.content)} bytes" + (", the wav's length" if run.wav is not None else ""))
    return "; ".join(out)


def check_stream(run: Run) -> str:
    r = run.post(run.body(response_format="pcm", stream_format="sse"), stream=True)
    _ok(r, "sse")
    ctype = r.headers.get("Content-Type", "")
    if not ctype.startswith("text/event-stream"):
        raise Failed(f"sse: Content-Type {ctype!r}, expected text/event-stream")
    try:
        pcm, events = parse_sse(r.text)
    except ValueError as e:
        raise Failed(f"sse: {e}") from None
    deltas = [e for e in events if e.get("type") == "speech.audio.delta"]
    if not deltas:
        raise Failed(f"sse: no speech.audio.delta events ({len(events)} events)")
    if not events or events[-1].get("type") != "speech.audio.done":
        raise Failed(f"sse: last event is {events[-1].get('type') if events else None!r}, expected speech.audio.done")
    return f"{len(deltas)} deltas, " + _audio_checks(pcm, "sse", run.settings)


def check_bad_request(run: Run) -> str:
    r = run.post(run.body(speed=100))
    if not 400 <= r.status_code < 500:
        raise Failed(f"speed 100 (allowed 0.25–4): HTTP {r.status_code}, expected 4xx")
    try:
        err = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = None
    if not isinstance(err, dict) or not {"message", "type"} <= set(err):
        raise Failed(f"speed 100: HTTP {r.status_code} without an OpenAI error object: {r.text[:200]}")
    return f"HTTP {r.status_code}: {err['message'][:80]}"


CHECKS: tuple[tuple[str, Callable[[Run], str]], ...] = (
    ("health", check_health),
    ("voices", check_voices),
    ("speech-wav", check_wav),
    ("determinism", check_determinism),
    ("speech-pcm", check_pcm),
    ("speech-flac", check_flac),
    ("speech-mp3-opus", check_compressed),
    ("speech-stream", check_stream),
    ("bad-request", check_bad_request),
)


def run_checks(base: str, settings: Settings) -> list[Check]:
    run = Run(base=base.rstrip("/"), settings=settings)
    for name, fn in CHECKS:
        c = run.check(name, lambda fn=fn: fn(run))
        if name == "health" and c.status != "ok":
            for later, _ in CHECKS[1:]:
                run.skip(later, "server not healthy")
            break
        if name == "voices" and c.status != "ok":
            run.voice = settings.voice      # try the speech routes anyway (default voice)
    return run.checks


def check_server(server, settings: Settings, *, where: str | None = None) -> list[Check]:
    """Every check against a server that was just started (`speech.server.Server`): it must become
    healthy within the settings' timeout, else `health` fails and the rest are skipped. `where` names
    the machine it runs on when that is not this one."""
    why = server.wait_healthy(settings.timeout)
    if why is not None:
        return [Check("health", "failed", f"{where}: {why}" if where else why),
                *(Check(n, "skipped", "server not healthy") for n, _ in CHECKS[1:])]
    with ui.step(f"Checking the speech service {where or 'on ' + server.base}"):
        return run_checks(server.base, settings)
