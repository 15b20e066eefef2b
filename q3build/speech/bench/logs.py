"""What llama-tts and llama-server report about a synthesis, parsed into per-stage figures (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from q3build.speech.facts import audio_seconds

# llama-tts's per-stage timer line (patch "stage timings")
STAGES_RE = re.compile(
    r"stages: prompt (?P<prompt_ms>[0-9.]+) ms \((?P<prompt_tokens>\d+) tokens\), "
    r"talker (?P<talker_ms>[0-9.]+) ms \((?P<talker_steps>\d+) steps\), "
    r"code predictor (?P<predictor_ms>[0-9.]+) ms \((?P<predictor_frames>\d+) frames\), "
    r"codec decode (?P<decode_ms>[0-9.]+) ms \((?P<decode_frames>\d+) frames\)")
FRAMES_RE = re.compile(r"generated (\d+) frames")
TIMINGS_RE = re.compile(r"timings: prompt eval ([0-9.]+)s \+ generation ([0-9.]+)s \+ vocoder ([0-9.]+)s "
                        r"= total ([0-9.]+)s")
# the generation helper's debug line for each codec decoder call (patch "codec decoder decodes exactly
# the new frames"; llama-tts prints it with -v)
DECODE_CALL_RE = re.compile(r"decoded (\d+) of a (\d+)-frame batch in ([0-9.]+) ms")
# llama-tts with --tts-ref-text: the speech encoder's time for the reference recording (in-context cloning)
REF_ENCODE_RE = re.compile(r"reference: (?P<codes>\d+) codes encoded in (?P<ms>[0-9.]+) ms")
# the speech service's X-Speech-Stages-Ms header
SERVER_STAGES_RE = re.compile(r"prompt=([0-9.]+) talker=([0-9.]+) code=([0-9.]+) decode=([0-9.]+)")


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
    m = REF_ENCODE_RE.search(text)
    if m:
        out["reference_encode"] = {"frames": int(m["codes"]) // 16, "ms": float(m["ms"])}
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
    audio_s = audio_seconds(frames)
    return {"frames": frames, "synth_s": synth_s, "audio_s": audio_s,
            "rtf": synth_s / audio_s if audio_s else None,
            "frames_per_s": frames / synth_s if synth_s > 0 else None}


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


def decoder_cost_curve(text: str) -> dict | None:
    """Milliseconds per codec decoder call by batch size (frames decoded in one call), from a verbose
    llama-tts log: the fastest full call of each size (the first call of a size may pay a page-in),
    with every call kept. None when the log has no decoder calls (a build without the batched decoder)."""
    calls = [(int(n), int(b), float(ms)) for n, b, ms in DECODE_CALL_RE.findall(text)]
    if not calls:
        return None
    by_batch: dict[int, list[float]] = {}
    for n, b, ms in calls:
        if n == b:  # a padded (unfinished) batch costs a full one but yields fewer frames
            by_batch.setdefault(b, []).append(ms)
    curve = {str(b): {"ms_per_call": min(v), "ms_per_frame": min(v) / b, "calls": len(v)}
             for b, v in sorted(by_batch.items())}
    return {"curve": curve, "calls": [{"frames": n, "batch": b, "ms": ms} for n, b, ms in calls]}
