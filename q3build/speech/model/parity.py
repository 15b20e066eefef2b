"""Stage-by-stage parity between our build and the official implementation.

Both sides run the same checkpoint greedily, in f32 end to end, with the same text, language,
reference audio and text layout. Our side is the built `llama-tts` with MTMD_GEN_AUDIO_DUMP (prompt embeddings,
talker logits, codes); the reference side is `q3build.model.reference` in its own process.
Stages are compared in pipeline order and the first that is out of tolerance is reported:

  speaker_embd  Base: the x-vector from the reference wav     relative max abs diff; the later
                (mel front end + speaker encoder)           stages use our x-vector on both sides
  prompt_embd   talker input rows of the prefill            max abs diff
  talker_logits codec logits per step (after the official   greedy pick agrees; max abs diff
                suppression of non-code ids)
  codes         16 codebooks per frame                      identical
  waveform      24 kHz output                               correlation, max abs diff

With `server` the same request also goes through the staged llama-server's /v1/audio/speech (the product
path: a voices directory, the request's fields, MTMD_GEN_AUDIO_DUMP for its codes), and its stages are
compared with the official run as well (`server_*`); `server_llama_tts` says whether the server gave
llama-tts's codes and samples (within one 16-bit step).

Both sides generate with the official generation defaults made greedy: the checkpoint's
generation_config.json repetition penalty (qwen-tts: on the talker's first codebook, over every code
generated so far), do_sample off.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from q3build import proc
from q3build.errors import InputError, Q3BuildError
from q3build.speech import argv as speech_argv
from q3build.speech import reference

CODEC_EOS = 2150
N_CODES = 2048
HARD_DEFAULT_PENALTY = 1.05   # qwen-tts's when generation_config.json has none
MIN_NEW_TOKENS = 2            # qwen-tts's talker generate: no EOS at the first two steps
@dataclass(frozen=True, kw_only=True)
class Request:
    checkpoint: Path
    model_dir: Path
    variant: str
    text: str = "Hello from a tiny model."
    language: str = "english"
    layout: str = "nonstreaming"          # nonstreaming | streaming
    frames: int = 30
    reference_wav: Path | None = None
    reference_text: str | None = None     # Base: in-context cloning (the recording's codes + this text)
    speaker: str | None = None
    instruct: str | None = None
    repetition_penalty: float = 1.0       # 1.0: none; `model parity` passes official_repetition_penalty()
    server: bool = True                   # also through llama-server's /v1/audio/speech


def official_repetition_penalty(checkpoint: Path) -> float:
    """The repetition penalty qwen-tts generates with by default: generation_config.json's, else its own 1.05."""
    path = checkpoint / "generation_config.json"
    if not path.is_file():
        return HARD_DEFAULT_PENALTY
    try:
        value = json.loads(path.read_text()).get("repetition_penalty", HARD_DEFAULT_PENALTY)
    except (ValueError, AttributeError) as e:
        raise InputError(f"{path}: not a JSON object ({e})") from None
    if not isinstance(value, (int, float)) or not 0 < value < 10:
        raise InputError(f"{path}: repetition_penalty {value!r} is not a number between 0 and 10")
    return float(value)


@dataclass
class Stage:
    name: str
    ok: bool
    detail: str
    metrics: dict = field(default_factory=dict)


@dataclass
class Report:
    stages: list[Stage]

    @property
    def first_divergence(self) -> str | None:
        return next((s.name for s in self.stages if not s.ok), None)

    def to_json(self) -> dict:
        return {"ok": self.first_divergence is None, "first_divergence": self.first_divergence,
                "stages": [{"name": s.name, "ok": s.ok, "detail": s.detail, **s.metrics} for s in self.stages]}


def pick(logits: np.ndarray, penalty: float = 1.0) -> np.ndarray:
    """The official greedy pick of every step: codes 0..2047 or EOS (not at the first two steps,
    qwen-tts's min_new_tokens=2), everything else suppressed, and the repetition penalty on every
    code picked before (transformers' RepetitionPenaltyLogitsProcessor: a logit below zero times the
    penalty, else divided by it, in f32)."""
    out = np.zeros(len(logits), dtype=np.int64)
    p = np.float32(penalty)
    for t, row in enumerate(logits):
        row = row.astype(np.float32, copy=True)
        if penalty != 1.0 and t:
            seen = np.unique(out[:t])
            s = row[seen]
            row[seen] = np.where(s < 0, s * p, s / p)
        eos = row[CODEC_EOS]
        row[N_CODES:] = -np.inf
        row[CODEC_EOS] = eos if t >= MIN_NEW_TOKENS else -np.inf
        out[t] = int(row.argmax())
    return out


def compare(ref: Mapping[str, np.ndarray], ours: Mapping[str, np.ndarray], *, penalty: float = 1.0,
            embd_tol: float = 5e-3,
            wav_corr: float = 0.9999, wav_maxabs: float = 5e-3, spk_rel_tol: float = 1e-3) -> Report:
    stages = []
    if "ref_codes" in ref:
        a, b = ref["ref_codes"], ours.get("ref_codes", np.zeros((0, 16), np.int64))
        n = min(len(a), len(b))
        same = int((a[:n] == b[:n]).all(axis=1).sum()) if n else 0
        ok = a.shape == b.shape and same == len(a)
        detail = f"{same}/{len(a)} frames identical" + ("" if a.shape == b.shape else f", shape {b.shape} vs reference {a.shape}")
        if n and not ok:
            first = np.argwhere(a[:n] != b[:n])
            if len(first):
                detail += f", first difference at frame {first[0][0]} codebook {first[0][1]}"
        stages.append(Stage("ref_codes", ok, detail, {"frames": len(a), "frames_identical": same}))
    if "speaker_embd" in ref and "other_speaker_embd" in ref:
        a, b = ref["speaker_embd"], ref["other_speaker_embd"]
        d = float(np.abs(a - b).max())
        rel = d / max(float(np.abs(a).max()), 1e-12)
        # relative: the mel front ends differ by float rounding (~3e-4 of the x-vector's scale)
        stages.append(Stage("speaker_embd", rel <= spk_rel_tol, f"max abs diff {d:.2e} ({rel:.1e} relative)",
                            {"max_abs": d, "relative": rel}))
    # prompt embeddings
    a, b = ref["prompt_embd"], ours["prompt_embd"]
    if a.shape != b.shape:
        stages.append(Stage("prompt_embd", False, f"shape {b.shape} vs reference {a.shape}"))
    else:
        rows = np.abs(a - b).max(axis=1) if a.size else np.zeros(0)
        worst = int(rows.argmax()) if rows.size else 0
        exact = int((rows == 0).sum())
        stages.append(Stage("prompt_embd", bool(rows.size) and float(rows.max()) <= embd_tol,
                            f"{exact}/{len(rows)} rows exact, max abs diff {float(rows.max()):.2e} (row {worst})",
                            {"max_abs": float(rows.max()), "rows_exact": exact, "rows": len(rows)}))
    # talker logits: the greedy pick must agree at every common step
    la, lb = ref["talker_logits"], ours["talker_logits"]
    n = min(len(la), len(lb))
    if n == 0 or la.shape[1:] != lb.shape[1:]:
        stages.append(Stage("talker_logits", False, f"no comparable steps ({lb.shape} vs {la.shape})"))
    else:
        pa, pb = pick(la[:n], penalty), pick(lb[:n], penalty)
        diff = np.nonzero(pa != pb)[0]
        maxabs = float(np.abs(la[:n, :N_CODES] - lb[:n, :N_CODES]).max())
        detail = f"{n} steps, greedy pick agrees at all" if not diff.size else \
            f"greedy pick differs first at step {int(diff[0])} ({int(pb[diff[0]])} vs {int(pa[diff[0]])})"
        # the steps whose pick the penalty decided (the official pick differs from its raw argmax):
        # without one, a run does not show that the penalty is applied as the official applies it
        decided = [int(t) for t in np.nonzero(pick(la[:n]) != pa)[0]] if penalty != 1.0 else []
        if penalty != 1.0:
            detail += f", repetition penalty {penalty:g} decided {len(decided)} pick(s)" + \
                (f" (first at step {decided[0]})" if decided else "")
        stages.append(Stage("talker_logits", not diff.size, f"{detail}, max abs diff {maxabs:.2e}",
                            {"steps": n, "max_abs": maxabs, "first_step": int(diff[0]) if diff.size else None,
                             "penalty": penalty, "penalty_decided": decided}))
    # codes
    ca, cb = ref["codes"], ours["codes"]
    n = min(len(ca), len(cb))
    mism = np.argwhere(ca[:n] != cb[:n]) if n else np.zeros((0, 2), int)
    same = int((ca[:n] == cb[:n]).all(axis=1).sum()) if n else 0
    if n == 0:
        stages.append(Stage("codes", False, f"no frames to compare (ours {len(cb)}, reference {len(ca)})"))
    else:
        detail = f"{same}/{n} frames identical" + ("" if not len(mism) else
                                                    f", first difference at frame {mism[0][0]} codebook {mism[0][1]}")
        codes_equal = float((ca[:n] == cb[:n]).mean())
        detail += f" ({codes_equal:.1%} of codes equal)"
        stages.append(Stage("codes", not len(mism), detail,
                            {"frames": n, "frames_identical": same, "agreement": same / n,
                             "codes_equal": codes_equal,
                             "ours_frames": len(cb), "reference_frames": len(ca)}))
    # waveform
    wa, wb = ref["wav"], ours["wav"]
    n = min(len(wa), len(wb))
    if n == 0:
        stages.append(Stage("waveform", False, "empty waveform"))
    else:
        corr = float(np.corrcoef(wa[:n], wb[:n])[0, 1])
        maxabs = float(np.abs(wa[:n] - wb[:n]).max())
        stages.append(Stage("waveform", corr >= wav_corr and maxabs <= wav_maxabs,
                            f"correlation {corr:.6f}, max abs diff {maxabs:.2e} over {n} samples",
                            {"correlation": corr, "max_abs": maxabs, "samples": n}))
    return Report(stages)


def run_reference(req: Request, work: Path, env: Mapping[str, str], *,
                  speaker_embd: Path | None = None) -> dict[str, np.ndarray]:
    request = {"checkpoint": str(req.checkpoint), "variant": req.variant, "text": req.text,
               "language": req.language, "layout": req.layout, "frames": req.frames,
               "reference_wav": str(req.reference_wav) if req.reference_wav else None,
               "reference_text": req.reference_text,
               "speaker": req.speaker, "instruct": req.instruct, "repetition_penalty": req.repetition_penalty,
               "speaker_embd": str(speaker_embd) if speaker_embd else None}
    (work / "request.json").write_text(json.dumps(request))
    out = work / "reference.npz"
    r = subprocess.run([sys.executable, "-m", "q3build.speech.model.reference", str(work / "request.json"), str(out)],
                       env=dict(env), capture_output=True, text=True)
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        raise Q3BuildError(f"the official reference run failed (is qwen-tts installed? see README):\n{tail}")
    data = np.load(out)
    return {k: data[k] for k in data.files}


def _check(req: Request) -> None:
    if req.variant == "custom_voice" and not req.speaker:
        raise InputError("a CustomVoice checkpoint needs --speaker (one of its built-in speakers)")
    if req.variant == "voice_design" and not req.instruct:
        raise InputError("a VoiceDesign checkpoint needs --instruct (the voice description)")
    if req.variant == "base" and not req.reference_wav:
        raise InputError("a Base checkpoint needs --reference-wav (the voice to clone)")


def _read_dump(req: Request, dump: Path, wav: Path) -> dict[str, np.ndarray]:
    import soundfile as sf

    pcm, _ = sf.read(wav, dtype="float32")
    codes = np.fromfile(dump / "codes.i32", dtype=np.int32)
    prompt = np.fromfile(dump / "prompt_embd.f32", dtype=np.float32)
    logits = np.fromfile(dump / "talker_logits.f32", dtype=np.float32)
    spk = dump / "speaker_embd.f32"
    extra = {"speaker_embd": np.fromfile(spk, dtype=np.float32)} if spk.is_file() and spk.stat().st_size else {}
    talker = json.loads((req.checkpoint / "config.json").read_text())["talker_config"]
    rc = dump / "ref_codes.i32"
    if rc.is_file() and rc.stat().st_size:
        extra["ref_codes"] = np.fromfile(rc, dtype=np.int32).reshape(-1, talker["num_code_groups"]).astype(np.int64)
    return {**extra, "wav": pcm, "codes": codes.reshape(-1, talker["num_code_groups"]).astype(np.int64),
            "prompt_embd": prompt.reshape(-1, talker["hidden_size"]),
            "talker_logits": logits.reshape(-1, talker["vocab_size"])}


def run_ours(req: Request, llama_tts: Path, work: Path, env: Mapping[str, str]) -> dict[str, np.ndarray]:
    _check(req)
    dump = work / "ours"
    dump.mkdir()
    wav = work / "ours.wav"
    voice = speech_argv.Voice(speaker=req.speaker, instruct=req.instruct,
                              reference_wav=req.reference_wav if req.variant == "base" else None,
                              reference_text=req.reference_text if req.variant == "base" else None)
    argv = speech_argv.llama_tts(llama_tts, req.model_dir, req.text, language=req.language, wav=wav, voice=voice,
                                 frames=req.frames, threads=2, streaming_text=req.layout == "streaming",
                                 extra=[*speech_argv.PARITY_NUMERICS,
                                        *speech_argv.repetition_penalty(req.repetition_penalty)])
    proc.run(argv, env={**env, "MTMD_GEN_AUDIO_DUMP": str(dump)}, capture=True)
    return _read_dump(req, dump, wav)


def run_server(req: Request, llama_server: Path, work: Path, env: Mapping[str, str]) -> dict[str, np.ndarray]:
    """The request through llama-server's /v1/audio/speech (127.0.0.1, stopped on return): a Base voice
    is a recording in a voices directory, with its transcript beside it for in-context cloning."""
    from q3build.speech import server as speech_server

    _check(req)
    dump = work / "server"
    dump.mkdir()
    extra = [*speech_argv.PARITY_NUMERICS, "--no-tts-trim", "--no-tts-normalize"]
    body = {"input": req.text, "language": speech_argv.lang_code(req.language), "temperature": 0, "top_k": 1,
            "repetition_penalty": req.repetition_penalty, "max_frames": req.frames, "response_format": "wav",
            "text_layout": "streaming" if req.layout == "streaming" else "full"}
    if req.variant == "base":
        extra += speech_server.cloned_voice(work / "voices", "parity", req.reference_wav, req.reference_text)
        body.update(voice="parity", clone_mode="icl" if req.reference_text else "xvector")
    elif req.speaker:
        body["voice"] = req.speaker
    if req.instruct:
        body["instructions"] = req.instruct
    port = speech_server.free_port()
    argv = speech_argv.llama_server(llama_server, req.model_dir, port=port, threads=2, max_frames=req.frames,
                                    extra=extra)
    with speech_server.Server(argv, {**env, "MTMD_GEN_AUDIO_DUMP": str(dump)}, work / "server.log", port) as s:
        why = s.wait_healthy(120)
        if why:
            raise Q3BuildError(why)
        r = s.client(timeout=600).speech(body)
        if r.status_code != 200:
            raise Q3BuildError(f"POST /v1/audio/speech: HTTP {r.status_code}: {r.text[:300]}")
    (work / "server.wav").write_bytes(r.content)
    return _read_dump(req, dump, work / "server.wav")


def compare_server(ref: Mapping[str, np.ndarray], ours: Mapping[str, np.ndarray],
                   server: Mapping[str, np.ndarray], *, penalty: float = 1.0) -> list[Stage]:
    """The server's stages against the official run (`server_*`), and whether it gave llama-tts's
    codes, x-vector and samples (one 16-bit step apart at most)."""
    stages = [Stage(f"server_{s.name}", s.ok, s.detail, s.metrics)
              for s in compare(ref, server, penalty=penalty).stages if s.name != "speaker_embd"]
    a, b = ours["codes"], server["codes"]
    same_codes = a.shape == b.shape and bool((a == b).all())
    sa, sb = np.round(ours["wav"] * 32768), np.round(server["wav"] * 32768)
    lsb = int(np.abs(sa - sb).max()) if len(sa) == len(sb) and len(sa) else None
    spk_same = ("speaker_embd" in ours) == ("speaker_embd" in server) and \
        ("speaker_embd" not in ours or np.array_equal(ours["speaker_embd"], server["speaker_embd"]))
    ok = same_codes and lsb is not None and lsb <= 1 and spk_same
    detail = (f"codes {'identical' if same_codes else f'differ ({len(b)} vs {len(a)} frames)'}, "
              + (f"samples within {lsb} 16-bit step(s)" if lsb is not None else f"{len(sb)} vs {len(sa)} samples")
              + ("" if spk_same else ", x-vector differs"))
    stages.append(Stage("server_llama_tts", ok, detail,
                        {"codes_identical": same_codes, "max_lsb": lsb, "speaker_embd_identical": spk_same}))
    return stages


def parity(req: Request, llama_tts: Path, env: Mapping[str, str], *, llama_server: Path | None) -> Report:
    """llama-tts (and, with `req.server`, llama-server) against the official run."""
    if req.server and llama_server is None:
        raise ValueError("parity through the server (req.server) needs the llama_server binary")
    reference.require("model parity")
    with tempfile.TemporaryDirectory(prefix="q3-parity-") as tmp:
        work = Path(tmp)
        ours = run_ours(req, llama_tts, work, env)
        server = run_server(req, llama_server, work, env) if req.server else None
        spk = None
        if "speaker_embd" in ours:
            spk = work / "speaker_embd.npy"
            np.save(spk, ours["speaker_embd"])
        ref = run_reference(req, work, env, speaker_embd=spk)
        report = compare(ref, ours, penalty=req.repetition_penalty)
        if server is not None:
            report.stages += compare_server(ref, ours, server, penalty=req.repetition_penalty)
        return report
