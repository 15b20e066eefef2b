"""A llama-server that a speech tool starts (bound to 127.0.0.1, always stopped) and the HTTP client of
its speech routes — one lifecycle and one client for validate, bench and the tests."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

from q3build import proc
from q3build.speech import argv as speech_argv
from q3build.speech.facts import SAMPLE_RATE

SPEECH = "/v1/audio/speech"
VOICES = "/v1/audio/voices"


def cloned_voice(voices: Path, name: str, recording: Path, transcript: str | None) -> list[str]:
    """A voices directory (created) holding one cloned voice: the recording as <name>.wav and, for
    in-context cloning, its transcript as <name>.txt. The llama-server arguments that serve it."""
    voices.mkdir()
    (voices / f"{name}.wav").write_bytes(Path(recording).read_bytes())
    if transcript:
        (voices / f"{name}.txt").write_text(transcript, encoding="utf-8")
    return ["--tts-voices-dir", str(voices)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A llama-server process, output in a log file; stopped on exit."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_file: Path, port: int):
        self.argv, self.env, self.log_file, self.port = list(argv), dict(env), log_file, port
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        self.proc = proc.spawn(self.argv, log_file=self.log_file, env=self.env)
        return self

    def wait_healthy(self, timeout: float) -> str | None:
        """None when /health answers 200, else why not."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                return f"llama-server exited with code {self.proc.returncode} before it was healthy: {self.tail()}"
            try:
                if requests.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return None
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                return f"llama-server not healthy after {timeout:.0f} s: {self.tail()}"
            time.sleep(0.2)

    def tail(self, n: int = 6) -> str:
        lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) or "(no output)"

    def peak_rss_mib(self) -> float | None:
        return proc.peak_rss_mib(self.proc.pid) if self.proc else None

    def client(self, timeout: float = 120.0) -> "SpeechClient":
        return SpeechClient(self.base, timeout)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def measured_server(llama_server: Path, model_dir: Path, env: Mapping[str, str], *, threads: int,
                    options: Sequence[str], reference_wav: Path | None = None, reference_text: str | None = None,
                    log_path: Path | None = None, startup_timeout: float = 600) -> Iterator[tuple[Server, Path, str | None]]:
    """llama-server on a free 127.0.0.1 port with the speech options, answering /health, for a bench to
    measure; a reference recording is served as the cloned voice "bench". Yields the server, its log
    and that voice (None without a recording). RuntimeError when it does not start; always stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        args, voice = list(options), None
        if reference_wav is not None:
            args += cloned_voice(Path(tmp) / "voices", "bench", reference_wav, reference_text)
            voice = "bench"
        port = free_port()
        argv = speech_argv.llama_server(llama_server, model_dir, port=port, threads=threads, extra=args)
        log = Path(log_path) if log_path else Path(tmp) / "llama-server.log"
        with Server(argv, env, log, port) as server:
            why = server.wait_healthy(startup_timeout)
            if why:
                raise RuntimeError(why)
            yield server, log, voice


class SpeechClient:
    """`GET /health`, `GET /v1/audio/voices` and `POST /v1/audio/speech` of one server."""

    def __init__(self, base: str, timeout: float = 120.0):
        self.base, self.timeout = base.rstrip("/"), timeout

    def health(self) -> requests.Response:
        return requests.get(f"{self.base}/health", timeout=self.timeout)

    def voices(self) -> requests.Response:
        return requests.get(f"{self.base}{VOICES}", timeout=self.timeout)

    def speech(self, body: Mapping, *, stream: bool = False) -> requests.Response:
        body = {k: v for k, v in body.items() if v is not None}
        return requests.post(f"{self.base}{SPEECH}", json=body, timeout=self.timeout, stream=stream)

    def time_stream(self, body: Mapping, *, whole: bool) -> dict:
        """Time a streamed pcm request to its first non-empty chunk (TTFA) and, with `whole`, to the end
        of the body; without `whole` the connection is closed after the first chunk."""
        t0 = time.perf_counter()
        first = None
        n_bytes = chunks = 0
        with self.speech(body, stream=True) as r:
            if r.status_code != 200:
                raise RuntimeError(f"POST {SPEECH}: HTTP {r.status_code}: {r.text[:300]}")
            for chunk in r.iter_content(chunk_size=None):
                if chunk and first is None:
                    first = time.perf_counter() - t0
                n_bytes += len(chunk)
                chunks += int(bool(chunk))
                if first is not None and not whole:
                    break
        out = {"ttfa_ms": first * 1000 if first is not None else None,
               "bytes" if whole else "first_chunk_bytes": n_bytes}
        if whole:
            total = time.perf_counter() - t0
            audio_s = n_bytes / 2 / SAMPLE_RATE  # pcm: s16le mono
            out.update({"total_s": total, "chunks": chunks, "audio_s": audio_s,
                        "rtf": total / audio_s if audio_s else None})
        return out
