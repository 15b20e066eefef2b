"""Speech performance at real model shapes, side by side with the official implementation.

One bench run measures one checkpoint (Hugging Face layout, e.g. `q3build model tiny --shape 0.6b`)
in every requested configuration (talker quantisation × threads) with the staged `llama-tts`, and
the official `qwen-tts` (torch CPU) on the same checkpoint, in the same run, so ratios are taken
under the same machine conditions. Every run generates a fixed number of frames: our side asks for
`-n FRAMES` (random weights practically never pick EOS; the frames actually generated are read from
the log and every per-frame figure uses them), the reference suppresses EOS until the last frame.

Figures per configuration (all times exclude model loading; `process_s` includes it):

  synth_s            prompt + generation + final decode, as the program itself times them
  rtf                synth_s / audio seconds, audio = frames / 12.5 (80 ms per frame)
  frames_per_s       frames / synth_s
  stages             prompt ms, talker ms per step, code predictor ms per frame, codec decode ms per
                     frame (ours: llama-tts's `stages:` line; reference: forward hooks)
  ttfa_ms            POST /v1/audio/speech (streamed) to the first non-empty body chunk (ours only)
  peak_rss_mib        the process's peak resident set (wait4 rusage)
  weight_read_gbps   weight bytes read per frame × frames/s (talker layers + output once, code
                     predictor layers 15 times: one pass per acoustic codebook)
  bandwidth_share    weight_read_gbps / the STREAM-style read bandwidth at the same thread count

The pure functions (parsing, arithmetic, the Markdown table) are separate from the ones that start
processes, so they can be unit tested.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

FRAME_RATE = 12.5            # 24 kHz / 1920 samples per frame (speech tokenizer config); 80 ms per frame
SAMPLE_RATE = 24000
QUANTS = ("f32", "f16", "q8_0", "q4_0")
SCHEMA = 1

# llama-tts's per-stage timer line (patch "stage timings")
STAGES_RE = re.compile(
    r"stages: prompt (?P<prompt_ms>[0-9.]+) ms \((?P<prompt_tokens>\d+) tokens\), "
    r"talker (?P<talker_ms>[0-9.]+) ms \((?P<talker_steps>\d+) steps\), "
    r"code predictor (?P<predictor_ms>[0-9.]+) ms \((?P<predictor_frames>\d+) frames\), "
    r"codec decode (?P<decode_ms>[0-9.]+) ms \((?P<decode_frames>\d+) frames\)")
FRAMES_RE = re.compile(r"generated (\d+) frames")
TIMINGS_RE = re.compile(r"timings: prompt eval ([0-9.]+)s \+ generation ([0-9.]+)s \+ vocoder ([0-9.]+)s "
                        r"= total ([0-9.]+)s")


# --- parsing ------------------------------------------------------------------------------------

def parse_llama_tts_log(text: str) -> dict:
    """Frames, the coarse timings line and (when present) the per-stage line of a llama-tts log."""
    out: dict = {}
    m = FRAMES_RE.search(text)
    if m:
        out["frames"] = int(m.group(1))
    m = TIMINGS_RE.search(text)
    if m:
        prompt, gen, vocoder, total = (float(g) for g in m.groups())
        out["timings"] = {"prompt_s": prompt, "generation_s": gen, "vocoder_s": vocoder, "total_s": total}
    m = STAGES_RE.search(text)
    if m:
        g = m.groupdict()
        out["stages_raw"] = {k: (int(v) if k.endswith(("_tokens", "_steps", "_frames")) else float(v))
                             for k, v in g.items()}
    return out


def per_frame_stages(raw: Mapping[str, float]) -> dict:
    """Totals and counts (the `stages:` line, or the reference's hooks) → per-step/per-frame ms."""
    def div(a: float, n: float) -> float | None:
        return a / n if n else None

    return {
        "prompt_ms": raw["prompt_ms"], "prompt_tokens": raw.get("prompt_tokens"),
        "talker_ms_per_step": div(raw["talker_ms"], raw["talker_steps"]),
        "predictor_ms_per_frame": div(raw["predictor_ms"], raw["predictor_frames"]),
        "decode_ms_per_frame": div(raw["decode_ms"], raw["decode_frames"]),
        "total_ms": {k: raw[k] for k in ("prompt_ms", "talker_ms", "predictor_ms", "decode_ms")},
        "counts": {k: raw.get(k) for k in ("talker_steps", "predictor_frames", "decode_frames")},
    }


def dominant_stage(stages: Mapping) -> tuple[str, float] | None:
    """The stage with the largest share of the summed stage time, and that share."""
    totals = stages.get("total_ms") if stages else None
    if not totals:
        return None
    s = sum(totals.values())
    if s <= 0:
        return None
    name = max(totals, key=lambda k: totals[k])
    return name.removesuffix("_ms"), totals[name] / s


def summarize(frames: int, synth_s: float) -> dict:
    """RTF and frames/s from frames generated and synthesis wall time."""
    audio_s = frames / FRAME_RATE
    return {"frames": frames, "synth_s": synth_s, "audio_s": audio_s,
            "rtf": synth_s / audio_s if audio_s else None,
            "frames_per_s": frames / synth_s if synth_s > 0 else None}


# --- weights read per frame ---------------------------------------------------------------------

_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


class _Reader:
    def __init__(self, f):
        self.f = f

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)

    def string(self) -> str:
        (n,) = self.unpack("Q")
        return self.f.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = self.unpack("IQ")
            if etype in _GGUF_SCALARS:  # skip scalar arrays in one read
                fmt = _GGUF_SCALARS[etype]
                self.f.seek(struct.calcsize("<" + fmt) * n, os.SEEK_CUR)
                return None
            for _ in range(n):
                self.value(etype)
            return None
        if vtype in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[vtype])[0]
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_tensor_bytes(path: Path) -> dict[str, int]:
    """Bytes of every tensor in a GGUF file (from the header: the distance between data offsets)."""
    return read_gguf_header(path)[1]


def gguf_tensor_types(path: Path) -> dict[str, int]:
    """The ggml type id of every tensor in a GGUF file (0 = F32, 1 = F16, 8 = Q8_0, 2 = Q4_0)."""
    return read_gguf_header(path)[2]


def read_gguf_header(path: Path) -> tuple[dict, dict[str, int], dict[str, int]]:
    """(scalar and string metadata, bytes of every tensor, ggml type of every tensor) of a GGUF file."""
    meta: dict = {}
    types: dict[str, int] = {}
    with open(path, "rb") as f:
        r = _Reader(f)
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        (version,) = r.unpack("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} not supported")
        n_tensors, n_kv = r.unpack("QQ")
        alignment = 32
        for _ in range(n_kv):
            key = r.string()
            (vtype,) = r.unpack("I")
            v = r.value(vtype)
            if v is not None:
                meta[key] = v
            if key == "general.alignment" and isinstance(v, int):
                alignment = v
        infos = []
        for _ in range(n_tensors):
            name = r.string()
            (n_dims,) = r.unpack("I")
            r.unpack("Q" * n_dims)
            gtype, offset = r.unpack("IQ")
            types[name] = gtype
            infos.append((offset, name))
        data_start = -(-f.tell() // alignment) * alignment
    size = path.stat().st_size - data_start
    infos.sort()
    out = {}
    for i, (offset, name) in enumerate(infos):
        end = infos[i + 1][0] if i + 1 < len(infos) else size
        out[name] = end - offset
    return meta, out, types


def kv_cache_bytes(meta: Mapping, *, n_ctx: int | None = None, bytes_per_value: int = 2) -> int | None:
    """The talker's KV cache (K and V, f16 by default) at n_ctx tokens, default the model's context
    length (what llama-tts and llama-server allocate with -c 0)."""
    arch = meta.get("general.architecture")
    get = (lambda k: meta.get(f"{arch}.{k}")) if arch else (lambda k: None)
    layers, kv_heads = get("block_count"), get("attention.head_count_kv")
    k_len = get("attention.key_length") or (get("embedding_length") or 0) // max(get("attention.head_count") or 1, 1)
    v_len = get("attention.value_length") or k_len
    ctx = n_ctx or get("context_length")
    if not (layers and kv_heads and k_len and ctx):
        return None
    return int(ctx * layers * kv_heads * (k_len + v_len) * bytes_per_value)


def weight_bytes_per_frame(talker: Mapping[str, int], mmproj: Mapping[str, int], *, predictor_passes: int = 15) -> dict:
    """Weight bytes one frame reads.

    The talker runs one step per frame and reads every tensor except its token embedding table
    (a row lookup). The code predictor runs `predictor_passes` passes per frame (one per acoustic
    codebook) and reads its layers and input projection (1.7B) each pass; its per-codebook heads
    are stacked, each pass reads one slice, so the stack is read once per frame. Embedding tables
    are row lookups and not counted; neither is the codec decoder (its own stage, conv-dominated).
    """
    talker_b = sum(v for k, v in talker.items() if not k.startswith("token_embd"))
    layers = sum(v for k, v in mmproj.items()
                 if k.startswith(("a.gen.code.blk.", "a.gen.code.proj_in.", "a.gen.code.output_norm.")))
    heads = sum(v for k, v in mmproj.items() if k.startswith("a.gen.code.head."))
    predictor_b = layers * predictor_passes + heads
    return {"talker_bytes": talker_b, "predictor_layer_bytes": layers, "predictor_head_bytes": heads,
            "predictor_bytes": predictor_b, "bytes_per_frame": talker_b + predictor_b}


_NORMS = ("norm.weight", ".ln1.weight", ".ln2.weight")


def model_weights(model_dir: Path) -> dict:
    """Weight bytes per frame of a converted model directory, the f32 matrices of the code predictor,
    the talker's KV cache at its default context, and the file sizes."""
    meta, talker_bytes, _ = read_gguf_header(model_dir / "talker.gguf")
    _, mm_bytes, mm_types = read_gguf_header(model_dir / "mmproj.gguf")
    w = weight_bytes_per_frame(talker_bytes, mm_bytes)
    # matrices the converter keeps in f32 whatever the outtype (read on every predictor pass)
    w["predictor_f32_matrix_bytes"] = sum(v for k, v in mm_bytes.items() if k.startswith("a.gen.code.blk.")
                                          and mm_types.get(k) == 0 and not k.endswith(_NORMS))
    w["kv_cache_bytes"] = kv_cache_bytes(meta)
    w["context_length"] = meta.get(f"{meta.get('general.architecture')}.context_length")
    w["file_bytes"] = sum((model_dir / n).stat().st_size for n in ("talker.gguf", "mmproj.gguf"))
    return w


def bandwidth_share(bytes_per_frame: int, frames_per_s: float | None, read_gbps: float | None) -> dict:
    if not frames_per_s or not read_gbps:
        return {"weight_read_gbps": None, "bandwidth_share": None}
    rate = bytes_per_frame * frames_per_s / 1e9
    return {"weight_read_gbps": rate, "bandwidth_share": rate / read_gbps}


# --- memory bandwidth ---------------------------------------------------------------------------

def read_bandwidth(threads: int, *, mib: int = 1024, repeats: int = 5) -> dict:
    """STREAM-style read: numpy sums a `mib` MiB float32 array split across `threads` threads
    (numpy releases the GIL in reductions); the best of `repeats` passes, in GB/s (1e9 bytes)."""
    import numpy as np

    a = np.ones(mib * 1024 * 1024 // 4, dtype=np.float32)
    parts = np.array_split(a, threads)
    sums = [0.0] * threads

    def work(i: int) -> None:
        sums[i] = float(parts[i].sum(dtype=np.float32))

    best = float("inf")
    for _ in range(repeats):
        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        best = min(best, time.perf_counter() - t0)
    if abs(sum(sums) - a.size) > a.size * 1e-3:  # float32 pairwise sums of ones stay exact enough
        raise RuntimeError("bandwidth kernel summed wrongly")
    return {"threads": threads, "bytes": int(a.nbytes), "best_s": best, "gbps": a.nbytes / best / 1e9}


# --- processes ----------------------------------------------------------------------------------

@dataclass
class Measured:
    returncode: int
    output: str
    wall_s: float
    peak_rss_mib: float


def run_measured(argv: Sequence[str | os.PathLike], env: Mapping[str, str], *, timeout: float = 3600) -> Measured:
    """Run argv (output to a file), wall time and peak RSS from wait4's rusage of that very child."""
    args = [os.fspath(a) for a in argv]
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return Measured(p.returncode, text, wall, usage.ru_maxrss / 1024.0)


def vm_hwm_mb(pid: int) -> float | None:
    """A running process's peak resident set (VmHWM in /proc/<pid>/status), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


SERVER_STAGES_RE = re.compile(r"prompt=([0-9.]+) talker=([0-9.]+) code=([0-9.]+) decode=([0-9.]+)")


def parse_server_headers(headers: Mapping[str, str]) -> dict | None:
    """The speech service's figures of a whole (non-streamed) response: frames, wall seconds and
    per-stage milliseconds (X-Speech-Frames, X-Wall-Seconds, X-Speech-Stages-Ms)."""
    m = SERVER_STAGES_RE.search(headers.get("X-Speech-Stages-Ms", ""))
    try:
        frames = int(headers["X-Speech-Frames"])
        wall = float(headers["X-Wall-Seconds"])
    except (KeyError, ValueError):
        return None
    if not m:
        return None
    prompt, talker, code, decode = (float(g) for g in m.groups())
    raw = {"prompt_ms": prompt, "talker_ms": talker, "talker_steps": frames, "predictor_ms": code,
           "predictor_frames": frames, "decode_ms": decode, "decode_frames": frames}
    return {**summarize(frames, wall), "stages": per_frame_stages(raw)}


def stream_request(base: str, body: Mapping, *, whole: bool) -> dict:
    """POST a streamed speech request; time to the first non-empty chunk (and, with `whole`, to the
    end of the body). Without `whole` the connection is closed after the first chunk."""
    import requests

    t0 = time.perf_counter()
    first = None
    n_bytes = chunks = 0
    with requests.post(f"{base}/v1/audio/speech", json=dict(body), stream=True, timeout=1800) as r:
        if r.status_code != 200:
            raise RuntimeError(f"POST /v1/audio/speech: HTTP {r.status_code}: {r.text[:300]}")
        for chunk in r.iter_content(chunk_size=None):
            if chunk and first is None:
                first = time.perf_counter() - t0
            n_bytes += len(chunk)
            chunks += int(bool(chunk))
            if first is not None and not whole:
                break
    out = {"ttfa_ms": first * 1000 if first is not None else None, "first_chunk_bytes" if not whole else "bytes":
           n_bytes}
    if whole:
        total = time.perf_counter() - t0
        audio_s = n_bytes / 2 / SAMPLE_RATE  # pcm: s16le mono 24 kHz
        out.update({"total_s": total, "chunks": chunks, "audio_s": audio_s,
                    "rtf": total / audio_s if audio_s else None})
    return out


def server_synthesis(base: str, body: Mapping) -> dict:
    import requests

    body = {k: v for k, v in body.items() if v is not None}
    r = requests.post(f"{base}/v1/audio/speech", json=body, timeout=1800)
    if r.status_code != 200:
        return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
    return parse_server_headers(r.headers) or {"error": "no X-Speech-* figures in the response"}


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every run synthesises."""

    text: str
    frames: int
    language: str = "english"
    speaker: str | None = None      # CustomVoice
    instruct: str | None = None     # VoiceDesign
    reference_wav: Path | None = None  # Base


LANG_CODES = {"english": "en", "chinese": "zh", "german": "de", "spanish": "es", "japanese": "ja", "french": "fr",
              "korean": "ko", "russian": "ru", "italian": "it", "portuguese": "pt"}


def llama_tts_argv(llama_tts: Path, model_dir: Path, job: Job, threads: int, wav: Path) -> list[str]:
    argv = [str(llama_tts), "-m", str(model_dir / "talker.gguf"), "--mmproj", str(model_dir / "mmproj.gguf"),
            "-p", job.text, "--tts-lang", LANG_CODES.get(job.language, job.language), "-n", str(job.frames),
            "-o", str(wav), "-t", str(threads), "--temp", "0", "--top-k", "1", "-fa", "off",
            # as parity: no repacking (ggml's AMX q8_0 repack crashes on tiny shapes); weights read into
            # memory at load (excluded from the timings), as the reference does, so the first pass does
            # not page the model in from disk
            "--no-repack", "--load-mode", "none"]
    if job.speaker:
        argv += ["--tts-speaker", job.speaker]
    if job.instruct:
        argv += ["--tts-instruct", job.instruct]
    if job.reference_wav:
        argv += ["--tts-speaker-file", str(job.reference_wav)]
    return argv


def run_ours(llama_tts: Path, model_dir: Path, job: Job, threads: int, env: Mapping[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="q3-bench-") as tmp:
        m = run_measured(llama_tts_argv(llama_tts, model_dir, job, threads, Path(tmp) / "out.wav"), env)
    if m.returncode != 0:
        tail = "\n".join(m.output.strip().splitlines()[-10:])
        raise RuntimeError(f"llama-tts failed (exit {m.returncode}):\n{tail}")
    parsed = parse_llama_tts_log(m.output)
    if "frames" not in parsed or "timings" not in parsed:
        raise RuntimeError("llama-tts log has no 'generated N frames' / 'timings:' line")
    frames = parsed["frames"]
    result = {**summarize(frames, parsed["timings"]["total_s"]), "frames_requested": job.frames,
              "process_s": m.wall_s, "peak_rss_mib": m.peak_rss_mib, "timings": parsed["timings"]}
    if "stages_raw" in parsed:
        result["stages"] = per_frame_stages(parsed["stages_raw"])
        result["stages_source"] = "llama-tts stages line"
    else:
        result["stages"] = None
        result["stages_source"] = "not available (llama-tts without the stage timer)"
    return result


def run_reference(checkpoint: Path, job: Job, threads: int, env: Mapping[str, str]) -> dict:
    """The official implementation in its own process (`q3build.model.reference_bench`)."""
    with tempfile.TemporaryDirectory(prefix="q3-bench-ref-") as tmp:
        req = Path(tmp) / "request.json"
        out = Path(tmp) / "result.json"
        req.write_text(json.dumps({"checkpoint": str(checkpoint), "text": job.text, "language": job.language,
                                   "frames": job.frames, "threads": threads, "speaker": job.speaker,
                                   "instruct": job.instruct,
                                   "reference_wav": str(job.reference_wav) if job.reference_wav else None}))
        renv = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        m = run_measured([sys.executable, "-m", "q3build.speech.model.reference_bench", req, out], renv)
        if m.returncode != 0 or not out.is_file():
            tail = "\n".join(m.output.strip().splitlines()[-10:])
            raise RuntimeError(f"the official reference failed (exit {m.returncode}):\n{tail}")
        r = json.loads(out.read_text())
    result = {**summarize(r["frames"], r["synth_s"]), "frames_requested": job.frames, "process_s": m.wall_s,
              "peak_rss_mib": m.peak_rss_mib, "stages": per_frame_stages(r["stages_raw"]),
              "stages_source": "forward hooks in the reference process", "torch": r.get("torch")}
    return result


def measure_ttfa(llama_server: Path, model_dir: Path, job: Job, threads: int, env: Mapping[str, str], *,
                 voice: str | None = None, startup_timeout: float = 600, log_path: Path | None = None,
                 whole: bool = False, synthesis: bool = True) -> dict:
    """Start llama-server on 127.0.0.1 with the model, POST one streamed /v1/audio/speech request,
    time it to the first non-empty body chunk; the server is always stopped. With `whole` the body is
    read to the end (total time and audio too), otherwise the connection is closed after the first
    chunk, which saves the rest of the synthesis. With `synthesis` a second, non-streamed request
    reads the server's own figures (llama-server gives -t to both the talker and the mtmd context,
    llama-tts only to the talker)."""
    from q3build.speech.validate import Server, free_port

    port = free_port()
    argv = [str(llama_server), "-m", str(model_dir / "talker.gguf"), "--mmproj", str(model_dir / "mmproj.gguf"),
            "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "--tts-max-frames", str(job.frames),
            "-fa", "off", "--no-repack", "--load-mode", "none"]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        with Server(argv, env, Path(log_path) if log_path else Path(tmp) / "llama-server.log", port) as server:
            why = server.wait_healthy(startup_timeout)
            if why:
                raise RuntimeError(why)
            body = {"input": job.text, "voice": voice or job.speaker or "default", "response_format": "pcm",
                    "stream_format": "audio", "max_frames": job.frames, "top_k": 1, "seed": 0}
            if job.instruct:
                body["instructions"] = job.instruct
            if whole:
                result = stream_request(base, body, whole=True)
            else:
                # the first request after start-up, then (after the whole synthesis, so the one slot is
                # free again) the same request once more: cold and warm time to first audio
                result = stream_request(base, body, whole=False)
                if synthesis:
                    result["synthesis"] = server_synthesis(base, {**body, "stream_format": None})
                    warm = stream_request(base, body, whole=False)
                    result["ttfa_warm_ms"] = warm["ttfa_ms"]
            result["peak_rss_mib"] = vm_hwm_mb(server.proc.pid)
            return result


# --- the whole run ------------------------------------------------------------------------------

def best_of(n: int, measure) -> dict:
    """Run `measure` n times; the result with the shortest synthesis, with every run's synth_s."""
    runs = [measure() for _ in range(max(1, n))]
    best = min(runs, key=lambda r: r["synth_s"])
    return {**best, "synth_s_runs": [r["synth_s"] for r in runs]}


def configurations(quants: Iterable[str], threads: Iterable[int]) -> list[tuple[str, int]]:
    return [(q, t) for q in quants for t in threads]


def combine(ours: Mapping, ref: Mapping | None) -> dict:
    """The side-by-side figures of one configuration."""
    out: dict = {}
    if ref and ours.get("rtf") and ref.get("rtf"):
        out["rtf_ratio"] = ours["rtf"] / ref["rtf"]          # < 1: we are faster
        out["speedup"] = ref["rtf"] / ours["rtf"]
    return out


def _fmt(v, spec: str = ".2f", none: str = "–") -> str:
    return none if v is None else format(v, spec)


def _bandwidth_text(rows: Sequence[Mapping]) -> str:
    return ", ".join(f"{b['gbps']:.1f} GB/s on {b['threads']} thread{'s' if b['threads'] > 1 else ''}" for b in rows)


def render_markdown(runs: Sequence[Mapping]) -> str:
    """docs/performance.md from one or more bench JSON documents."""
    lines = ["# Performance", "",
             "Generated by `q3build bench --markdown` from the bench JSON (`docs/bench/*.json`); do not edit by "
             "hand. Random weights at the released shapes (`q3build model tiny --shape …`), CustomVoice, greedy, "
             f"a fixed frame count (80 ms of audio per frame). RTF = synthesis wall / audio seconds (< 1 is "
             "faster than real time), model loading excluded. The reference is the official `qwen-tts` "
             "(torch CPU, f32) on the same checkpoint in the same run; ratio = our RTF / reference RTF "
             "(< 1: we are faster). TTFA: request to first audio bytes through `llama-server`'s streaming "
             "`POST /v1/audio/speech` (`stream_format: audio`, pcm; the server's default chunk of "
             "`--tts-stream-frames` frames).", "",
             "Reproduce (keep the checkpoints outside the repository; 1.7B in f32 is ~7.7 GB):", "",
             "```sh",
             "q3build model tiny --variant custom_voice --shape 0.6b --out CKPT-0.6B",
             "q3build bench --target host --model CKPT-0.6B --quant f32,f16,q8_0,q4_0 --threads 1,all --frames 48 "
             "--out docs/bench/0.6b.json",
             "q3build bench --markdown docs/bench/*.json --out docs/performance.md",
             "```", "",
             "Per frame the talker reads its weights once (its token table is a row lookup) and the code "
             "predictor its layers 15 times (one pass per acoustic codebook); `weights MB/frame` counts those "
             "bytes from the GGUF headers, and `weight GB/s` is that times frames/s. The read bandwidth is a "
             "numpy sum over a 1 GiB array split across the threads, measured in the same run.", ""]
    for run in runs:
        m = run.get("machine", {})
        bw = {b["threads"]: b["gbps"] for b in run.get("bandwidth", [])}
        lines += [f"## {run['shape']} shape, {run['frames']} frames", "",
                  f"Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs; "
                  f"read bandwidth {_bandwidth_text(run.get('bandwidth', []))}; "
                  f"load average at start {m.get('loadavg', '?')}. Build: `{run.get('build', '?')}`.", ""]
        lines += ["| quant | threads | frames | our RTF | ref RTF | ratio | TTFA ms | prompt ms | talker ms/step "
                  "| predictor ms/frame | decode ms/frame | dominant | peak RSS MiB | weights MB/frame | "
                  "weight GB/s | share of bandwidth |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in run["configs"]:
            o, r = c["ours"], c.get("reference") or {}
            st = o.get("stages") or {}
            dom = dominant_stage(st)
            ttfa = (c.get("server") or {}).get("ttfa_ms")
            lines.append(
                f"| {c['quant']} | {c['threads']} | {o['frames']} | {_fmt(o['rtf'])} | {_fmt(r.get('rtf'))} "
                f"| {_fmt(c.get('rtf_ratio'))} | {_fmt(ttfa, '.0f')} | {_fmt(st.get('prompt_ms'), '.0f')} "
                f"| {_fmt(st.get('talker_ms_per_step'), '.1f')} | {_fmt(st.get('predictor_ms_per_frame'), '.1f')} "
                f"| {_fmt(st.get('decode_ms_per_frame'), '.1f')} "
                f"| {f'{dom[0]} {dom[1]:.0%}' if dom else '–'} | {_fmt(o.get('peak_rss_mib'), '.0f')} "
                f"| {_fmt(c['weights']['bytes_per_frame'] / 1e6, '.0f')} | {_fmt(c.get('weight_read_gbps'), '.1f')} "
                f"| {_fmt(c.get('bandwidth_share') * 100 if c.get('bandwidth_share') is not None else None, '.0f')}% |")
        refs = {}
        for c in run["configs"]:
            r = c.get("reference")
            if r and c["threads"] not in refs:
                refs[c["threads"]] = r
        if refs:
            lines += ["", "Reference per-stage split (same run):", "",
                      "| threads | RTF | prompt ms | talker ms/step | predictor ms/frame | decode ms/frame | dominant "
                      "| peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
            for t, r in sorted(refs.items()):
                st = r.get("stages") or {}
                dom = dominant_stage(st)
                lines.append(f"| {t} | {_fmt(r['rtf'])} | {_fmt(st.get('prompt_ms'), '.0f')} "
                             f"| {_fmt(st.get('talker_ms_per_step'), '.1f')} "
                             f"| {_fmt(st.get('predictor_ms_per_frame'), '.1f')} "
                             f"| {_fmt(st.get('decode_ms_per_frame'), '.1f')} "
                             f"| {f'{dom[0]} {dom[1]:.0%}' if dom else '–'} | {_fmt(r.get('peak_rss_mib'), '.0f')} |")
        served = [c for c in run["configs"] if (c.get("server") or {}).get("synthesis", {}).get("stages")]
        if served:
            lines += ["", "Through `llama-server` (`POST /v1/audio/speech`, same run; the service's own figures from a "
                      "non-streamed request, and TTFA from a streamed one):", "",
                      "| quant | threads | frames | server RTF | ref RTF | ratio | TTFA ms cold / warm | prompt ms "
                      "| talker ms/step "
                      "| predictor ms/frame | decode ms/frame | dominant | weight GB/s | share of bandwidth "
                      "| peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for c in served:
                sv = c["server"]["synthesis"]
                st = sv["stages"]
                r = c.get("reference") or {}
                dom = dominant_stage(st)
                share = bandwidth_share(c["weights"]["bytes_per_frame"], sv.get("frames_per_s"), bw.get(c["threads"]))
                ratio = sv["rtf"] / r["rtf"] if r.get("rtf") and sv.get("rtf") else None
                lines.append(
                    f"| {c['quant']} | {c['threads']} | {sv['frames']} | {_fmt(sv['rtf'])} | {_fmt(r.get('rtf'))} "
                    f"| {_fmt(ratio)} | {_fmt(c['server'].get('ttfa_ms'), '.0f')} / "
                    f"{_fmt(c['server'].get('ttfa_warm_ms'), '.0f')} | {_fmt(st.get('prompt_ms'), '.0f')} "
                    f"| {_fmt(st.get('talker_ms_per_step'), '.1f')} | {_fmt(st.get('predictor_ms_per_frame'), '.1f')} "
                    f"| {_fmt(st.get('decode_ms_per_frame'), '.1f')} | {f'{dom[0]} {dom[1]:.0%}' if dom else '–'} "
                    f"| {_fmt(share['weight_read_gbps'], '.1f')} "
                    f"| {_fmt(share['bandwidth_share'] * 100 if share['bandwidth_share'] is not None else None, '.0f')}% "
                    f"| {_fmt(c['server'].get('peak_rss_mib'), '.0f')} |")
        notes = list(run.get("notes") or []) + analysis(run, [r for r in runs if r.get("shape") == "tiny"])
        if notes:
            lines += [""] + [f"- {n}" for n in notes]
        lines.append("")
    return "\n".join(lines)


_STAGE_KEYS = {"talker": "talker_ms_per_step", "predictor": "predictor_ms_per_frame", "decode": "decode_ms_per_frame"}


def analysis(run: Mapping, tiny_runs: Sequence[Mapping] = ()) -> list[str]:
    """Computed observations for one run: the dominant stage, how close the weight reads come to the
    read bandwidth, and (given a tiny-shape run of the same build) how much of each per-frame stage
    time is fixed per-step cost: the tiny shape's time for the same stage, quantisation and threads.
    Both for llama-tts and, when measured, for the server's own figures."""
    out = []
    if run.get("shape") == "tiny":
        return out
    bw = {b["threads"]: b["gbps"] for b in run.get("bandwidth", [])}

    def tiny_for(c: Mapping, server: bool) -> Mapping | None:
        for r in tiny_runs:
            for t in r["configs"]:
                if t["quant"] != c["quant"] or t["threads"] != c["threads"]:
                    continue
                st = ((t.get("server") or {}).get("synthesis") or {}).get("stages") if server else \
                    t["ours"].get("stages")
                if st:
                    return st
        return None

    def describe(st: Mapping, frames_per_s: float | None, c: Mapping, tiny: Mapping | None) -> list[str]:
        parts = []
        dom = dominant_stage(st)
        if dom:
            parts.append(f"{dom[0]} dominates ({dom[1]:.0%} of the stage time)")
        share = bandwidth_share(c["weights"]["bytes_per_frame"], frames_per_s, bw.get(c["threads"]))
        if share["bandwidth_share"] is not None:
            parts.append(f"weights are read at {share['weight_read_gbps']:.1f} GB/s, "
                         f"{share['bandwidth_share']:.0%} of the measured read bandwidth")
        if tiny:
            shares = []
            for name, key in _STAGE_KEYS.items():
                a, b = tiny.get(key), st.get(key)
                if a is not None and b:
                    shares.append(f"{name} {a:.1f} of {b:.1f} ms ({min(a / b, 1.0):.0%})")
            if shares:
                parts.append("fixed per-step cost (the same stage at tiny shape): " + ", ".join(shares))
        return parts

    for c in run["configs"]:
        label = f"{c['quant']}, {c['threads']} thread{'s' if c['threads'] > 1 else ''}"
        st = c["ours"].get("stages") or {}
        parts = describe(st, c["ours"].get("frames_per_s"), c, tiny_for(c, False)) if st else []
        if parts:
            out.append(f"{label}, llama-tts: " + "; ".join(parts) + ".")
        sv = (c.get("server") or {}).get("synthesis") or {}
        if sv.get("stages"):
            parts = describe(sv["stages"], sv.get("frames_per_s"), c, tiny_for(c, True))
            if parts:
                out.append(f"{label}, llama-server: " + "; ".join(parts) + ".")
    seen = set()
    for c in run["configs"]:
        w = c["weights"]
        if c["quant"] in seen or not w.get("predictor_f32_matrix_bytes"):
            continue
        seen.add(c["quant"])
        out.append(f"{c['quant']}: the code predictor reads {w['predictor_layer_bytes'] / 1e6:.0f} MB per pass "
                   f"({w['predictor_bytes'] / w['bytes_per_frame']:.0%} of the weight bytes of a frame), of which "
                   f"{w['predictor_f32_matrix_bytes'] / 1e6:.0f} MB are matrices the converter keeps in f32.")
    c = next((c for c in run["configs"] if c["weights"].get("kv_cache_bytes")), None)
    if c:
        w = c["weights"]
        rss = max(x["ours"]["peak_rss_mib"] for x in run["configs"])
        out.append(f"Peak RSS (up to {rss:.0f} MiB) includes the talker's f16 KV cache for its full "
                   f"{w.get('context_length')}-token context, {w['kv_cache_bytes'] / 1e6:.0f} MB, which llama-tts "
                   "allocates by default (-c 0); a speech request needs a few hundred tokens.")
    return out


# --- orchestration ------------------------------------------------------------------------------

def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    compilers = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("cc1plus", "cc1", "ninja", "clang", "clang++", "zig"):
                compilers += 1
        except OSError:
            continue
    return {"cpu": cpu, "cpus": os.cpu_count(), "loadavg": round(os.getloadavg()[0], 2),
            "compiler_processes": compilers}


def shape_name(config: Mapping) -> str:
    """Which geometry of q3build.model.shapes a checkpoint has (by talker width and depth)."""
    from q3build.speech.model import shapes

    t = config.get("talker_config", {})
    for s in shapes.SHAPES.values():
        if (t.get("hidden_size"), t.get("num_hidden_layers"), t.get("intermediate_size")) == \
                (s.talker.hidden, s.talker.layers, s.talker.ffn):
            return s.name
    return f"custom ({t.get('hidden_size')}x{t.get('num_hidden_layers')})"


@dataclass(frozen=True, kw_only=True)
class Plan:
    checkpoint: Path
    gguf_root: Path
    llama_tts: Path
    llama_server: Path | None    # None: no TTFA
    job: Job
    quants: tuple[str, ...]
    threads: tuple[int, ...]
    reference: bool = True
    bandwidth_mib: int = 1024
    repeat: int = 1              # runs per configuration; the fastest is kept (the machine is shared)


def _checkpoint_digest(checkpoint: Path) -> dict:
    st = (checkpoint / "model.safetensors").stat()
    return {"config": (checkpoint / "config.json").read_text(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def ensure_converted(project, checkpoint: Path, out: Path, quant: str, env: Mapping[str, str], target: str) -> Path:
    """The checkpoint converted to `quant` under `out`; reused when converted from the same files."""
    from q3build.speech.model import convert

    stamp = out / ".bench-source.json"
    digest = _checkpoint_digest(checkpoint)
    if (out / convert.TALKER).is_file() and (out / convert.MMPROJ).is_file() and stamp.is_file():
        try:
            if json.loads(stamp.read_text()) == digest:
                return out
        except ValueError:
            pass
    convert.convert(project, checkpoint, out, quant, env, target=target)
    stamp.write_text(json.dumps(digest))
    return out


def run_bench(project, plan: Plan, env: Mapping[str, str], *, target: str, log=print) -> dict:
    from q3build.speech.model import convert

    config = convert.check_checkpoint(plan.checkpoint)
    doc: dict = {"schema": SCHEMA, "checkpoint": str(plan.checkpoint), "shape": shape_name(config),
                 "variant": config.get("tts_model_type"), "frames": plan.job.frames, "text": plan.job.text,
                 "speaker": plan.job.speaker, "layout": "nonstreaming", "target": target, "machine": machine_info(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ver = run_measured([plan.llama_tts, "--version"], env, timeout=60)
    doc["build"] = next((ln.strip() for ln in ver.output.splitlines() if ln.startswith("version:")), "?")
    log(f"read bandwidth ({plan.bandwidth_mib} MiB array)")
    doc["bandwidth"] = [read_bandwidth(t, mib=plan.bandwidth_mib) for t in plan.threads]
    bw = {b["threads"]: b["gbps"] for b in doc["bandwidth"]}
    models, weights = {}, {}
    for q in plan.quants:
        log(f"model {q}")
        models[q] = ensure_converted(project, plan.checkpoint, plan.gguf_root / q, q, env, target)
        weights[q] = model_weights(models[q])
    doc["configs"] = []
    doc["reference"] = {}
    notes = []
    for t in plan.threads:
        ref = None
        if plan.reference:
            log(f"reference, {t} thread(s)")
            try:
                ref = best_of(plan.repeat, lambda: run_reference(plan.checkpoint, plan.job, t, env))
            except RuntimeError as e:
                notes.append(f"reference ({t} threads) not measured: {str(e).splitlines()[0]}")
            doc["reference"][str(t)] = ref
        for q in plan.quants:
            log(f"ours {q}, {t} thread(s)")
            load_before = machine_info()
            ours = best_of(plan.repeat, lambda: run_ours(plan.llama_tts, models[q], plan.job, t, env))
            c = {"quant": q, "threads": t, "ours": ours, "reference": ref, "weights": weights[q],
                 "load_before": {k: load_before[k] for k in ("loadavg", "compiler_processes")},
                 **combine(ours, ref), **bandwidth_share(weights[q]["bytes_per_frame"], ours["frames_per_s"],
                                                         bw.get(t))}
            if plan.llama_server is not None:
                log(f"server TTFA {q}, {t} thread(s)")
                try:
                    c["server"] = measure_ttfa(plan.llama_server, models[q], plan.job, t, env)
                except RuntimeError as e:
                    c["server"] = {"ttfa_ms": None, "error": str(e).splitlines()[0]}
            else:
                c["server"] = {"ttfa_ms": None, "error": "not measured: llama-server has no speech service"}
            doc["configs"].append(c)
    doc["notes"] = notes
    doc["machine_after"] = machine_info()
    return doc
