"""The processes of a bench run — llama-tts, the official reference, llama-server — and the whole run."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from q3build import proc
from q3build.errors import Q3BuildError
from q3build.speech import argv as speech_argv
from q3build.speech import reference
from q3build.speech.bench.bandwidth import read_bandwidth
from q3build.speech.bench.logs import (
    decoder_cost_curve,
    parse_llama_tts_log,
    parse_server_headers,
    per_frame_stages,
    summarize,
)
from q3build.speech.bench.weights import bandwidth_share, model_weights
from q3build.speech.facts import missing_model_files
from q3build.speech.server import Server, SpeechClient, cloned_voice, free_port

QUANTS = ("f32", "f16", "q8_0", "q4_0")
SCHEMA = 1


class BenchError(Q3BuildError):
    """A program the bench runs failed (llama-tts, the reference, llama-server): exit 6 with its last lines."""

    exit_code = 6


@dataclass(frozen=True, kw_only=True)
class Job:
    """What every run synthesises."""

    text: str
    frames: int
    language: str = "english"
    voice: speech_argv.Voice = field(default_factory=speech_argv.Voice)
    repack: bool = False   # ggml-cpu repacks weights (the servers do; `bench` resolves it per shape)
    flash_attn: str = speech_argv.SERVER_FLASH_ATTN   # llama's -fa for the talker and the mmproj graphs

    @property
    def numerics(self) -> tuple[str, ...]:
        return speech_argv.bench_numerics(repack=self.repack, flash_attn=self.flash_attn)


@dataclass(frozen=True, kw_only=True)
class Synthesis:
    """One measured synthesis (ours or the reference's); `to_record()` is its JSON form."""

    frames: int
    synth_s: float
    frames_requested: int
    process_s: float
    peak_rss_mib: float
    stages: dict | None
    stages_source: str
    extra: dict = field(default_factory=dict)

    def to_record(self) -> dict:
        return {**summarize(self.frames, self.synth_s), "frames_requested": self.frames_requested,
                "process_s": self.process_s, "peak_rss_mib": self.peak_rss_mib, **self.extra,
                "stages": self.stages, "stages_source": self.stages_source}


def _tail(output: str, n: int = 10) -> str:
    return " | ".join(output.strip().splitlines()[-n:])


def run_ours(llama_tts: Path, model_dir: Path, job: Job, threads: int, env: Mapping[str, str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="q3-bench-") as tmp:
        argv = speech_argv.llama_tts(llama_tts, model_dir, job.text, language=job.language, wav=Path(tmp) / "out.wav",
                                     voice=job.voice, frames=job.frames, threads=threads,
                                     extra=job.numerics)
        m = proc.run_measured(argv, env)
    if m.returncode != 0:
        raise BenchError(f"llama-tts failed (exit {m.returncode}): {_tail(m.output)}")
    parsed = parse_llama_tts_log(m.output)
    if "frames" not in parsed or "timings" not in parsed:
        raise BenchError(f"llama-tts log has no 'generated N frames' / 'timings:' line: {_tail(m.output)}")
    stages = per_frame_stages(parsed["stages_raw"]) if "stages_raw" in parsed else None
    return Synthesis(frames=parsed["frames"], synth_s=parsed["timings"]["total_s"], frames_requested=job.frames,
                     process_s=m.wall_s, peak_rss_mib=m.peak_rss_mib, stages=stages,
                     stages_source="llama-tts stages line" if stages else
                     "not available (llama-tts without the stage timer)",
                     extra={"timings": parsed["timings"],
                            **({"reference_encode": parsed["reference_encode"]} if "reference_encode" in parsed else {})}
                     ).to_record()


DECODE_MAX_FRAMES_VAR = "MTMD_QWEN3TTS_DECODE_MAX_FRAMES"   # the generation helper's batch cap (default 16)


def decoder_curve(llama_tts: Path, model_dir: Path, job: Job, threads: int, env: Mapping[str, str], *,
                  max_batch: int) -> dict:
    """The codec decoder's cost per call for batches of 1, 2, 4 … max_batch frames: one llama-tts run
    long enough for the batches to double up to the raised cap (1, 1, 2, 4, … max_batch, max_batch),
    its verbose log read for every decoder call."""
    frames = 2 * max_batch + 1
    with tempfile.TemporaryDirectory(prefix="q3-bench-curve-") as tmp:
        argv = speech_argv.llama_tts(llama_tts, model_dir, job.text, language=job.language, wav=Path(tmp) / "out.wav",
                                     voice=job.voice, frames=frames, threads=threads,
                                     extra=[*job.numerics, "-v"])
        m = proc.run_measured(argv, {**env, DECODE_MAX_FRAMES_VAR: str(max_batch)})
    if m.returncode != 0:
        raise BenchError(f"llama-tts (decoder curve) failed (exit {m.returncode}): {_tail(m.output)}")
    curve = decoder_cost_curve(m.output)
    if curve is None:
        raise BenchError("llama-tts -v logged no codec decoder calls ('decoded N of a M-frame batch'): "
                         "a build without the batched decoder")
    return {"threads": threads, "max_batch": max_batch, "frames_requested": frames, **curve}


def run_reference(checkpoint: Path, job: Job, threads: int, env: Mapping[str, str]) -> dict:
    """The official implementation in its own process (`q3build.speech.model.reference_bench`)."""
    with tempfile.TemporaryDirectory(prefix="q3-bench-ref-") as tmp:
        req = Path(tmp) / "request.json"
        out = Path(tmp) / "result.json"
        v = job.voice
        req.write_text(json.dumps({"checkpoint": str(checkpoint), "text": job.text, "language": job.language,
                                   "frames": job.frames, "threads": threads, "speaker": v.speaker,
                                   "instruct": v.instruct,
                                   "reference_wav": str(v.reference_wav) if v.reference_wav else None}))
        renv = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        m = proc.run_measured([sys.executable, "-m", "q3build.speech.model.reference_bench", req, out], renv)
        if m.returncode != 0 or not out.is_file():
            raise BenchError(f"the official reference failed (exit {m.returncode}): {_tail(m.output)}")
        r = json.loads(out.read_text())
    return Synthesis(frames=r["frames"], synth_s=r["synth_s"], frames_requested=job.frames, process_s=m.wall_s,
                     peak_rss_mib=m.peak_rss_mib, stages=per_frame_stages(r["stages_raw"]),
                     stages_source="forward hooks in the reference process",
                     extra={"torch": r.get("torch")}).to_record()


def server_synthesis(client: SpeechClient, body: Mapping) -> dict:
    """The service's own figures of a whole (non-streamed) request."""
    r = client.speech(body)
    if r.status_code != 200:
        return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
    return parse_server_headers(r.headers) or {"error": "no X-Speech-* figures in the response"}


def ttfa_figures(client: SpeechClient, job: Job, *, voice: str | None = None, whole: bool = False,
                 synthesis: bool = True) -> dict:
    """One streamed request timed to its first audio (the whole body with `whole`). Otherwise, with
    `synthesis`, then a non-streamed one for the service's own figures (after it the one slot is free
    again) and the streamed one once more: cold and warm time to first audio. RuntimeError from a
    request that fails."""
    body = {"input": job.text, "voice": voice or job.voice.speaker or "default", "response_format": "pcm",
            "stream_format": "audio", "max_frames": job.frames, "ignore_eos": True, "top_k": 1, "seed": 0,
            "instructions": job.voice.instruct}
    if whole:
        return client.time_stream(body, whole=True)
    result = client.time_stream(body, whole=False)
    if synthesis:
        result["synthesis"] = server_synthesis(client, {**body, "stream_format": None})
        result["ttfa_warm_ms"] = client.time_stream(body, whole=False)["ttfa_ms"]
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
    port = free_port()
    extra = list(job.numerics)
    with tempfile.TemporaryDirectory() as tmp:
        clone = job.voice.reference_wav is not None and voice is None
        if clone:
            # a Base model speaks with the job's recording as a cloned voice of the server: in context
            # with its transcript beside it. The first request encodes it (cold TTFA), the warm one
            # finds it cached
            extra += cloned_voice(Path(tmp) / "voices", "bench", job.voice.reference_wav, job.voice.reference_text)
            voice = "bench"
        argv = speech_argv.llama_server(llama_server, model_dir, port=port, threads=threads, max_frames=job.frames,
                                        extra=extra)
        with Server(argv, env, Path(log_path) if log_path else Path(tmp) / "llama-server.log", port) as server:
            why = server.wait_healthy(startup_timeout)
            if why:
                raise BenchError(why)
            try:
                result = ttfa_figures(server.client(timeout=1800), job, voice=voice, whole=whole,
                                      synthesis=synthesis)
            except RuntimeError as e:
                raise BenchError(str(e)) from None
            result["peak_rss_mib"] = server.peak_rss_mib()
            if clone:  # ttfa_ms includes encoding the voice, ttfa_warm_ms is with the voice cached
                result["voice"] = {"mode": "icl" if job.voice.reference_text else "xvector",
                                   "recording_s": _wav_seconds(Path(job.voice.reference_wav))}
            return result


def _wav_seconds(path: Path) -> float | None:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except RuntimeError:
        return None
    return info.frames / info.samplerate if info.samplerate else None


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


# CPU features that decide which ggml-cpu kernels run (AMX takes q4_0/q8_0 weights first, AVX512_BF16 gives
# the codec decoder BF16 kernels, AVX2 the repacked q4_0 ones): a figure is only comparable with the same set
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def cpu_description(cpuinfo: str) -> tuple[str, list[str]]:
    """The model name and the KERNEL_FEATURES present, from /proc/cpuinfo's text (its first processor)."""
    cpu, flags = "?", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and cpu == "?":
            cpu = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return cpu, [f for f in KERNEL_FEATURES if f in flags]


def host_cpu() -> tuple[str, list[str]]:
    """cpu_description of this machine ("?" and no features where /proc/cpuinfo cannot be read)."""
    try:
        return cpu_description(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "?", []


def machine_info() -> dict:
    cpu, features = host_cpu()
    compilers = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("cc1plus", "cc1", "ninja", "clang", "clang++", "zig"):
                compilers += 1
        except OSError:
            continue
    return {"cpu": cpu, "cpu_features": features, "cpus": os.cpu_count(), "loadavg": round(os.getloadavg()[0], 2),
            "compiler_processes": compilers}


def shape_name(config: Mapping) -> str:
    """Which geometry of q3build.speech.model.shapes a checkpoint has (by talker width and depth)."""
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
    decoder_curve_max: int = 64  # largest batch of the decoder cost curve; 0: no curve
    repeat: int = 1              # runs per configuration; the fastest is kept (the machine is shared)


def _checkpoint_digest(checkpoint: Path) -> dict:
    st = (checkpoint / "model.safetensors").stat()
    return {"config": (checkpoint / "config.json").read_text(), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def ensure_converted(project, checkpoint: Path, out: Path, quant: str, env: Mapping[str, str], target: str) -> Path:
    """The checkpoint converted to `quant` under `out`; reused when converted from the same files."""
    from q3build.speech.model import convert

    stamp = out / ".bench-source.json"
    digest = _checkpoint_digest(checkpoint)
    if not missing_model_files(out) and stamp.is_file():
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

    if plan.reference:
        reference.require("bench (its reference side; --no-reference measures ours alone)")
    config = convert.check_checkpoint(plan.checkpoint)
    doc: dict = {"schema": SCHEMA, "checkpoint": str(plan.checkpoint), "shape": shape_name(config),
                 "variant": config.get("tts_model_type"), "frames": plan.job.frames, "text": plan.job.text,
                 "repack": plan.job.repack, "flash_attn": plan.job.flash_attn,
                 "speaker": plan.job.voice.speaker, "layout": "nonstreaming", "target": target, "machine": machine_info(),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    ver = proc.run_measured([plan.llama_tts, "--version"], env, timeout=60)
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
            except BenchError as e:
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
                except BenchError as e:
                    c["server"] = {"ttfa_ms": None, "error": str(e).splitlines()[0]}
            else:
                c["server"] = {"ttfa_ms": None, "error": "not measured: llama-server has no speech service"}
            doc["configs"].append(c)
    if plan.decoder_curve_max:
        doc["decoder_curve"] = []
        for t in plan.threads:
            log(f"codec decoder cost curve (batches up to {plan.decoder_curve_max}), {t} thread(s)")
            try:
                doc["decoder_curve"].append({"quant": plan.quants[0], **decoder_curve(
                    plan.llama_tts, models[plan.quants[0]], plan.job, t, env, max_batch=plan.decoder_curve_max)})
            except BenchError as e:
                notes.append(f"decoder cost curve ({t} threads) not measured: {str(e).splitlines()[0]}")
    doc["notes"] = notes
    doc["machine_after"] = machine_info()
    return doc
