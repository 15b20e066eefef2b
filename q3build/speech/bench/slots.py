"""Memory per speech slot (issue 12): llama-server started with `--tts-slots N` for each N asked for,
N short requests sent at once through /v1/audio/speech, the process's peak resident set (VmHWM) read
once all of them have answered; next to it what each slot reserves, from the server's log (the
speech engine logs every slot's talker context: cells, KV cache and compute buffer).

The slots are sized as a deployed server sizes them (no --tts-max-frames: room for the longest
segment); the requests carry `max_frames`, so they stay short. Peak RSS counts the pages written:
the KV cache is cleared (written) when a slot is created, its compute buffer only as far as a
request's graphs reach, so the reserved bytes are the worst case and the RSS what these requests
touched."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from q3build.speech import argv as speech_argv
from q3build.speech.server import measured_server

SLOT_LINE = re.compile(r"speech: slot (\d+): talker context of (\d+) cells: KV cache ([0-9.]+) MiB, "
                       r"compute buffer ([0-9.]+) MiB")


def parse_slot_lines(log_text: str) -> list[dict]:
    """The speech engine's per-slot lines of a llama-server log, in slot order."""
    out = [{"slot": int(m[1]), "cells": int(m[2]), "kv_mib": float(m[3]), "compute_mib": float(m[4])}
           for m in SLOT_LINE.finditer(log_text)]
    return sorted(out, key=lambda s: s["slot"])


def parse_counts(spec: str) -> tuple[int, ...]:
    """--slots 1,4 -> (1, 4): positive, distinct, ascending; ValueError otherwise."""
    out = sorted({int(p) for p in spec.split(",") if p.strip()})
    if not out or out[0] <= 0:
        raise ValueError(spec)
    return tuple(out)


def summarize(runs: Sequence[Mapping]) -> dict:
    """The cost of one extra slot between the fewest and the most slots measured: in peak RSS, and
    in what the slots reserve (KV cache and compute buffer, from the log); with one count measured,
    what its largest slot reserves."""
    out: dict = {}
    by_n = sorted(runs, key=lambda r: r["slots"])
    lo, hi = by_n[0], by_n[-1]
    if hi["slots"] > lo["slots"] and lo.get("peak_mib") and hi.get("peak_mib"):
        out["per_extra_slot_mib"] = (hi["peak_mib"] - lo["peak_mib"]) / (hi["slots"] - lo["slots"])
        if lo.get("idle_mib") and hi.get("idle_mib"):
            out["per_extra_slot_idle_mib"] = (hi["idle_mib"] - lo["idle_mib"]) / (hi["slots"] - lo["slots"])
    per_slot = hi.get("per_slot") or []
    if per_slot:
        # the slots are sequences of one talker context: its compute buffer is one for all of them and
        # each slot's line shows its share, so what one more slot reserves is what the total grows by
        lo_slots = lo.get("per_slot") or []
        if hi["slots"] > lo["slots"] and lo_slots:
            out["reserved_per_slot_mib"] = (_reserved(per_slot) - _reserved(lo_slots)) / (hi["slots"] - lo["slots"])
        else:
            out["reserved_per_slot_mib"] = max(s["kv_mib"] + s["compute_mib"] for s in per_slot)
        out["cells_per_slot"] = per_slot[0]["cells"]
    return out


def _reserved(per_slot: Sequence[Mapping]) -> float:
    """What the slots of one server reserve together (KV cache and compute buffer, MiB)."""
    return sum(s["kv_mib"] + s["compute_mib"] for s in per_slot)


def measure(llama_server: Path, model_dir: Path, n_slots: int, env: Mapping[str, str], *, threads: int,
            frames: int, text: str, voice: str | None = None, instructions: str | None = None,
            reference_wav: Path | None = None, reference_text: str | None = None,
            numerics: Sequence[str] = speech_argv.bench_numerics(repack=False), extra: Sequence[str] = (),
            log_path: Path | None = None, startup_timeout: float = 600) -> dict:
    """One server with n_slots slots, n_slots requests at once (seeds 0 .. n-1, greedy); its peak RSS
    idle and after the requests, the wall time of the requests and what each slot reserves. RuntimeError
    when the server does not start or a request fails; the server is always stopped."""
    options = [*numerics, "--tts-slots", str(n_slots), "--tts-queue", str(n_slots), *extra]
    with measured_server(llama_server, model_dir, env, threads=threads, options=options, reference_wav=reference_wav,
                         reference_text=reference_text, log_path=log_path,
                         startup_timeout=startup_timeout) as (server, log, cloned):
        voice = cloned or voice
        idle = server.peak_rss_mib()
        client = server.client(timeout=1800)

        def one(seed: int) -> str | None:
            body = {"input": text, "voice": voice or "default", "response_format": "pcm", "max_frames": frames,
                    "top_k": 1, "seed": seed, "instructions": instructions}
            r = client.speech(body)
            if r.status_code != 200 or not r.content:
                return f"request {seed}: HTTP {r.status_code}: {r.text[:200]}"
            return None

        t0 = time.monotonic()
        with ThreadPoolExecutor(n_slots) as pool:
            errors = [e for e in pool.map(one, range(n_slots)) if e]
        wall = time.monotonic() - t0
        peak = server.peak_rss_mib()
        if errors:
            raise RuntimeError("; ".join(errors))
        per_slot = parse_slot_lines(log.read_text(errors="replace"))
    return {"slots": n_slots, "requests": n_slots, "idle_mib": idle, "peak_mib": peak, "wall_s": wall,
            "per_slot": per_slot}


def render_markdown(docs: Sequence[Mapping], names: Sequence[str] = ()) -> str:
    """A table of `q3build bench --slots` documents: one row per document (named by its file)."""
    lines = ["| run | CPU (load) | quant, threads | slots | peak RSS MiB (idle) | per extra slot MiB | "
             "reserved per extra slot MiB (cells) |", "|---|---|---|---|---|---|---|"]
    for i, d in enumerate(docs):
        m = d.get("machine") or {}
        runs = sorted(d.get("runs") or [], key=lambda r: r["slots"])
        name = names[i] if i < len(names) else d.get("build") or f"run {i + 1}"
        peaks = " / ".join(f"{r['peak_mib']:.0f} ({r['idle_mib']:.0f})" for r in runs)
        extra = d.get("per_extra_slot_mib")
        reserved = d.get("reserved_per_slot_mib")
        reserved_text = "–" if reserved is None else f"{reserved:.1f} ({d.get('cells_per_slot')})"
        lines.append(f"| {name} | {m.get('cpu', '?')} ({m.get('loadavg', '?')}) | {d.get('quant')}, {d.get('threads')} "
                     f"| {' / '.join(str(r['slots']) for r in runs)} | {peaks} "
                     f"| {'–' if extra is None else f'{extra:.0f}'} "
                     f"| {reserved_text} |")
    return "\n".join(lines) + "\n"
