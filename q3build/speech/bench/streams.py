"""Throughput of concurrent streams (issue 17): llama-server started with `--tts-slots N` for each N
asked for, warmed, then N clients at once, each streaming one fixed-frame request (pcm chunks through
`POST /v1/audio/speech` with `stream_format: audio`; `max_frames` = the bench's frame count, greedy,
its own seed and its own text). Per stream: time to its first audio bytes (TTFA), the audio it
received, its wall time and RTF; per N: the aggregate audio seconds per wall second, the wall time
running from the first request sent to the last stream finished, and the server's peak RSS.

What a stream received is counted from its bytes (pcm: s16le mono at 24 kHz), so the figures do not
depend on the server reporting anything: the same code measures a server that runs each slot alone
and one that batches the slots' frames together. The requests ask for `ignore_eos`, so a stream runs
to `max_frames` (random weights do pick the end of speech now and then); a server without that field
ignores it, and a stream that ended early is counted with the audio it got and named in the document
(`frames`).

The pure functions (parse_counts, stream_record, aggregate, summarize, render_markdown) are separate
from the one that starts processes (measure), so they can be unit tested."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from q3build.speech import argv as speech_argv
from q3build.speech.bench.report import cpu_text, flash_attn_of
from q3build.speech.facts import SAMPLE_RATE
from q3build.speech.server import SpeechClient, measured_server

FRAME_S = 0.08           # audio of one frame (12.5 frames per second)
MAX_STREAMS = 64         # a sanity bound on --streams: every stream is a thread and a server slot

# Distinct texts of similar length for the concurrent clients (client i speaks TEXTS[i % len]): no two
# streams of a run share a prompt, so nothing a server might cache per prompt makes one cheaper.
TEXTS = (
    "Performance depends on tensor shapes, not on weight values.",
    "Every frame of every request reads the talker once.",
    "The code predictor runs fifteen times for each frame.",
    "Several listeners can share one pass over the weights.",
    "A slow client must never stall the other streams.",
    "Throughput is measured in audio seconds per wall second.",
    "The first audio bytes should arrive within one second.",
    "Memory per extra stream is a talker cache and buffers.",
)


def parse_counts(spec: str) -> tuple[int, ...]:
    """--streams 1,2,4,8 -> (1, 2, 4, 8): positive integers up to MAX_STREAMS, distinct, ascending;
    ValueError naming what was wrong otherwise."""
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) <= MAX_STREAMS:
            raise ValueError(f"{part!r} is not a number of streams from 1 to {MAX_STREAMS}")
        out.add(int(part))
    if not out:
        raise ValueError("no number of streams given")
    return tuple(sorted(out))


def stream_record(index: int, *, sent: float, first: float | None, end: float, n_bytes: int, t0: float,
                  frames_requested: int) -> dict:
    """One stream's figures from its timestamps (seconds, one monotonic clock; t0 = the first request of
    the run sent) and the pcm bytes it received."""
    audio_s = n_bytes / 2 / SAMPLE_RATE
    wall_s = end - sent
    return {"stream": index, "sent_s": sent - t0, "end_s": end - t0,
            "ttfa_ms": (first - sent) * 1000 if first is not None else None,
            "bytes": n_bytes, "audio_s": audio_s, "frames": round(audio_s / FRAME_S, 2),
            "frames_requested": frames_requested, "wall_s": wall_s,
            "rtf": wall_s / audio_s if audio_s else None}


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def aggregate(streams: Sequence[Mapping]) -> dict:
    """The figures of one N from its streams' records: aggregate audio seconds per wall second (all the
    audio over the time from the first request sent to the last stream finished), per-stream RTF and
    TTFA mean and max, and the streams that got fewer frames than asked for."""
    if not streams:
        raise ValueError("no streams")
    wall = max(s["end_s"] for s in streams) - min(s["sent_s"] for s in streams)
    audio = sum(s["audio_s"] for s in streams)
    rtfs = [s["rtf"] for s in streams if s.get("rtf") is not None]
    ttfas = [s["ttfa_ms"] for s in streams if s.get("ttfa_ms") is not None]
    return {"audio_s": audio, "wall_s": wall, "audio_per_wall_s": audio / wall if wall > 0 else None,
            "rtf_mean": _mean(rtfs), "rtf_max": max(rtfs) if rtfs else None,
            "ttfa_ms_mean": _mean(ttfas), "ttfa_ms_max": max(ttfas) if ttfas else None,
            "short_streams": [s["stream"] for s in streams
                              if s["frames"] < s.get("frames_requested", s["frames"]) - 0.01]}


def summarize(runs: Sequence[Mapping]) -> list[dict]:
    """The runs in ascending N, each with its throughput relative to one stream (`ratio_to_1`, None
    without a run of N = 1 or when either throughput is unknown)."""
    by_n = sorted(runs, key=lambda r: r["streams"])
    one = next((r.get("audio_per_wall_s") for r in by_n if r["streams"] == 1), None)
    return [{**r, "ratio_to_1": r["audio_per_wall_s"] / one if one and r.get("audio_per_wall_s") else None}
            for r in by_n]


def stream_body(index: int, frames: int, *, voice: str | None, instructions: str | None = None,
                texts: Sequence[str] = TEXTS) -> dict:
    """Client `index`'s request: its own text and seed, pcm chunks, greedy, `frames` frames."""
    return {"input": texts[index % len(texts)], "voice": voice or "default", "response_format": "pcm",
            "stream_format": "audio", "max_frames": frames, "ignore_eos": True, "top_k": 1, "seed": index,
            "instructions": instructions}


def _stream(client: SpeechClient, body: Mapping, start: threading.Barrier | None) -> tuple[float, float | None,
                                                                                             float, int]:
    """POST one streamed request and read it to the end: (sent, first audio, end) on time.monotonic
    and the bytes received. RuntimeError on an HTTP error or a broken transfer."""
    if start is not None:
        start.wait()
    sent = time.monotonic()
    first = None
    n = 0
    try:
        with client.speech(body, stream=True) as r:
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
            for chunk in r.iter_content(chunk_size=None):
                if chunk:
                    if first is None:
                        first = time.monotonic()
                    n += len(chunk)
    except OSError as e:   # requests' ConnectionError / ChunkedEncodingError derive from it
        raise RuntimeError(f"the stream broke after {n} bytes: {e}") from None
    return sent, first, time.monotonic(), n


def concurrent_streams(client: SpeechClient, bodies: Sequence[Mapping], frames_requested: int) -> list[dict]:
    """All bodies streamed at once (released together by a barrier), each read to its end; their records
    relative to the first request sent. RuntimeError naming every stream that failed."""
    n = len(bodies)
    start = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        try:
            results[i] = _stream(client, bodies[i], start)
        except RuntimeError as e:
            results[i] = e

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(one, range(n)))
    errors = [f"stream {i}: {r}" for i, r in enumerate(results) if isinstance(r, Exception)]
    if errors:
        raise RuntimeError("; ".join(errors))
    t0 = min(r[0] for r in results)
    return [stream_record(i, sent=s, first=f, end=e, n_bytes=b, t0=t0, frames_requested=frames_requested)
            for i, (s, f, e, b) in enumerate(results)]


def measure(llama_server: Path, model_dir: Path, n_streams: int, env: Mapping[str, str], *, threads: int,
            frames: int, voice: str | None = None, instructions: str | None = None,
            reference_wav: Path | None = None, reference_text: str | None = None,
            texts: Sequence[str] = TEXTS, warm_frames: int = 2,
            numerics: Sequence[str] = speech_argv.bench_numerics(repack=False), extra: Sequence[str] = (),
            log_path: Path | None = None, startup_timeout: float = 600) -> dict:
    """One server with n_streams slots: warmed by n_streams short streams at once (warm_frames frames,
    so every slot has run a request and a cloned voice is encoded), then n_streams measured streams at
    once. RuntimeError when the server does not start or a stream fails; the server is always stopped."""
    options = [*numerics, "--tts-slots", str(n_streams), "--tts-queue", str(max(16, 2 * n_streams)), *extra]
    with measured_server(llama_server, model_dir, env, threads=threads, options=options, reference_wav=reference_wav,
                         reference_text=reference_text, log_path=log_path,
                         startup_timeout=startup_timeout) as (server, _, cloned):
        voice = cloned or voice
        idle = server.peak_rss_mib()
        client = server.client(timeout=1800)
        bodies = [stream_body(i, frames, voice=voice, instructions=instructions, texts=texts)
                  for i in range(n_streams)]
        t = time.monotonic()
        concurrent_streams(client, [{**b, "max_frames": warm_frames, "seed": 1000 + i}
                                    for i, b in enumerate(bodies)], warm_frames)
        warm_s = time.monotonic() - t
        streams = concurrent_streams(client, bodies, frames)
        peak = server.peak_rss_mib()
    return {"streams": n_streams, "idle_mib": idle, "peak_mib": peak, "warmup_s": warm_s,
            **aggregate(streams), "per_stream": streams}


def fmt(v, spec: str = ".2f") -> str:
    return "–" if v is None else format(v, spec)


def render_markdown(docs: Sequence[Mapping], names: Sequence[str] = (), *, heading: str = "##") -> str:
    """The throughput tables of `q3build bench --streams` documents, one section per document (named by
    its file): rows N, columns aggregate audio s per wall s, its ratio to one stream, per-stream RTF and
    TTFA (mean / max) and the server's peak RSS."""
    lines: list[str] = []
    for i, d in enumerate(docs):
        m = d.get("machine") or {}
        name = names[i] if i < len(names) else f"run {i + 1}"
        load = m.get("loadavg", "?")
        if m.get("loadavg_after") is not None:
            load = f"{load} → {m['loadavg_after']}"
        lines += [f"{heading} Concurrent streams: {name} ({d.get('shape', '?')} shape, {d.get('quant')}, "
                  f"{d.get('threads')} thread{'s' if d.get('threads') != 1 else ''}, {d.get('frames')} frames)", "",
                  f"Machine: {cpu_text(m)}; load average {load}. "
                  f"Build: `{d.get('build', '?')}`. Each N: one `llama-server --tts-slots N`, warmed, then N "
                  "clients at once, each streaming (pcm, `stream_format: audio`) its own text with its own "
                  "seed, greedy, `max_frames` = the frame count. Aggregate = all the audio / the wall time from "
                  "the first request sent to the last stream finished; RTF and TTFA are each stream's own; load = the "
                  "1-minute load average when N's streams had finished. "
                  f"Measured by `q3build bench --model CKPT --streams "
                  f"{','.join(str(r['streams']) for r in sorted(d.get('runs') or [], key=lambda r: r['streams']))} "
                  f"--quant {d.get('quant')} --threads {d.get('threads')} --frames {d.get('frames')}"
                  f"{' --repack' if d.get('repack') else ''} --flash-attn {flash_attn_of(d)}`.", "",
                  "| streams | aggregate audio s / wall s | ratio to 1 stream | per-stream RTF mean / max "
                  "| TTFA ms mean / max | wall s | peak RSS MiB (idle) | load after |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in summarize(d.get("runs") or []):
            lines.append(f"| {r['streams']} | {fmt(r.get('audio_per_wall_s'), '.3f')} | {fmt(r.get('ratio_to_1'))} "
                         f"| {fmt(r.get('rtf_mean'))} / {fmt(r.get('rtf_max'))} "
                         f"| {fmt(r.get('ttfa_ms_mean'), '.0f')} / {fmt(r.get('ttfa_ms_max'), '.0f')} "
                         f"| {fmt(r.get('wall_s'), '.1f')} "
                         f"| {fmt(r.get('peak_mib'), '.0f')} ({fmt(r.get('idle_mib'), '.0f')}) "
                         f"| {fmt(r.get('loadavg'))} |")
        short = [f"{r['streams']} streams: stream(s) {', '.join(map(str, r['short_streams']))}"
                 for r in d.get("runs") or [] if r.get("short_streams")]
        notes = list(d.get("notes") or [])
        if short:
            notes.append("Ended before the frame count (EOS): " + "; ".join(short) + ".")
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)
