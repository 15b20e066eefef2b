"""Time the official implementation (PyPI qwen-tts, torch CPU, f32) on a checkpoint, per stage.

Runs as `python -m q3build.model.reference_bench REQUEST.json OUT.json` in its own process (q3build
never imports torch). Request: checkpoint, text, language, frames, threads, and speaker (CustomVoice),
instruct (VoiceDesign) or reference_wav (Base).

A fixed frame count: the talker's `generate` is wrapped so that `min_new_tokens` equals
`max_new_tokens` (frames + 1, see below; transformers' MinNewTokensLengthLogitsProcessor then masks
EOS until the last step). Greedy on both levels, like our side (`--top-k 1`), and the non-streaming
text layout (all text in the prompt), which is the official default and llama-tts's.

Stages, from timers around the official modules (the same boundaries as llama-tts's stage line):
  prompt        the call up to the end of the talker's prefill forward (prompt building included)
  talker        the talker's per-step forwards, minus the code predictor run inside them
  predictor     `code_predictor.generate` (15 codebooks per frame)
  decode        `speech_tokenizer.decode` of all frames (the official API decodes once, at the end)
"""

from __future__ import annotations

import json
import sys
import time

from q3build.speech.model.reference import _stub_torchaudio


def run(request: dict) -> dict:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _stub_torchaudio()
    import torch
    from qwen_tts import Qwen3TTSModel

    threads = int(request["threads"])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    frames = int(request["frames"])
    model = Qwen3TTSModel.from_pretrained(request["checkpoint"], dtype=torch.float32)
    talker = model.model.talker
    predictor = talker.code_predictor
    tokenizer = model.model.speech_tokenizer

    clock = time.perf_counter
    state = {"t0": 0.0, "prompt_end": None, "fwd_start": 0.0, "talker_ms": 0.0, "talker_steps": 0,
             "pred_ms": 0.0, "pred_calls": 0, "pred_in_fwd": 0.0, "decode_ms": 0.0, "frames": 0}

    original_generate = talker.generate

    def fixed_length_generate(*args, **kwargs):
        kwargs["min_new_tokens"] = kwargs.get("max_new_tokens", frames)
        return original_generate(*args, **kwargs)

    talker.generate = fixed_length_generate

    original_pred = predictor.generate

    def timed_pred(*args, **kwargs):
        t = clock()
        try:
            return original_pred(*args, **kwargs)
        finally:
            dt = (clock() - t) * 1000
            state["pred_ms"] += dt
            state["pred_in_fwd"] += dt
            state["pred_calls"] += 1

    predictor.generate = timed_pred

    def pre_fwd(module, args, kwargs):
        state["fwd_start"] = clock()
        state["pred_in_fwd"] = 0.0

    def post_fwd(module, args, kwargs, output):
        end = clock()
        if state["prompt_end"] is None:
            state["prompt_end"] = end
            embeds = kwargs.get("inputs_embeds")
            state["prompt_tokens"] = int(embeds.shape[1]) if embeds is not None else None
        else:
            state["talker_ms"] += (end - state["fwd_start"]) * 1000 - state["pred_in_fwd"]
            state["talker_steps"] += 1

    hooks = [talker.register_forward_pre_hook(pre_fwd, with_kwargs=True),
             talker.register_forward_hook(post_fwd, with_kwargs=True)]

    original_decode = tokenizer.decode

    def timed_decode(*args, **kwargs):
        first = args[0] if args else next(iter(kwargs.values()))
        for item in (first if isinstance(first, list) else [first]):
            codes = item.get("audio_codes") if isinstance(item, dict) else item
            state["frames"] += int(codes.shape[0])
        t = clock()
        try:
            return original_decode(*args, **kwargs)
        finally:
            state["decode_ms"] += (clock() - t) * 1000

    tokenizer.decode = timed_decode

    # frame k's acoustic codes are predicted in the talker step that samples frame k+1's first code,
    # so F complete frames take F + 1 talker tokens (the prefill's included)
    kw = dict(do_sample=False, top_k=1, subtalker_dosample=False, subtalker_top_k=1, repetition_penalty=1.0,
              max_new_tokens=frames + 1, non_streaming_mode=True)
    text, lang = request["text"], request.get("language", "english")
    with torch.inference_mode():
        state["t0"] = clock()
        if request.get("speaker"):
            wavs, sr = model.generate_custom_voice(text=text, speaker=request["speaker"], language=lang,
                                                   instruct=request.get("instruct") or None, **kw)
        elif request.get("instruct"):
            wavs, sr = model.generate_voice_design(text=text, instruct=request["instruct"], language=lang, **kw)
        else:
            import soundfile as sf

            ref, ref_sr = sf.read(request["reference_wav"], dtype="float32")
            wavs, sr = model.generate_voice_clone(text=text, language=lang, ref_audio=(ref, ref_sr),
                                                  x_vector_only_mode=True, **kw)
        synth_s = clock() - state["t0"]
    for h in hooks:
        h.remove()
    prompt_ms = ((state["prompt_end"] or state["t0"]) - state["t0"]) * 1000
    n = state["frames"]
    return {
        "frames": n, "synth_s": synth_s, "samples": int(len(wavs[0])), "sample_rate": int(sr),
        "threads": threads, "torch": torch.__version__,
        "stages_raw": {"prompt_ms": prompt_ms, "prompt_tokens": state.get("prompt_tokens"),
                       "talker_ms": state["talker_ms"], "talker_steps": state["talker_steps"],
                       "predictor_ms": state["pred_ms"], "predictor_frames": state["pred_calls"],
                       "decode_ms": state["decode_ms"], "decode_frames": n},
    }


def main(argv: list[str]) -> int:
    request = json.loads(open(argv[0]).read())
    result = run(request)
    with open(argv[1], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
