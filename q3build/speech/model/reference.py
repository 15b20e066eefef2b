"""Run the official implementation (PyPI qwen-tts, torch CPU) on a checkpoint, greedily, with the
request's repetition penalty.

Runs as `python -m q3build.model.reference REQUEST.json OUT.npz` in its own process, so q3build
itself never imports torch. The 25 Hz tokenizer that `import qwen_tts` pulls in imports
torchaudio, which has no CPU wheel matching torch here; the 12 Hz path never calls it, so an
empty stand-in module is registered first. Codes are captured where the official model hands
them to its speech-tokenizer decoder.
"""

from __future__ import annotations

import json
import os
import sys
import types


def _stub_torchaudio() -> None:
    if "torchaudio" in sys.modules:
        return
    try:
        import torchaudio  # noqa: F401  (a working install is used as is)
        return
    except Exception:
        pass
    import importlib.machinery

    for name in ("torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"):
        mod = types.ModuleType(name)
        # a spec, so importlib.util.find_spec() (used by availability checks) does not raise
        mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        mod.__path__ = []
        sys.modules[name] = mod
    sys.modules["torchaudio"].compliance = sys.modules["torchaudio.compliance"]
    sys.modules["torchaudio.compliance"].kaldi = sys.modules["torchaudio.compliance.kaldi"]


def run(request: dict) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    _stub_torchaudio()
    import numpy as np
    import soundfile as sf
    import torch
    from qwen_tts import Qwen3TTSModel

    torch.manual_seed(0)
    model = Qwen3TTSModel.from_pretrained(request["checkpoint"], dtype=torch.float32)
    captured = []
    tokenizer = model.model.speech_tokenizer
    original = tokenizer.decode

    def decode(*args, **kwargs):  # record the codes the talker produced
        first = args[0] if args else next(iter(kwargs.values()))
        for item in (first if isinstance(first, list) else [first]):
            codes = item.get("audio_codes") if isinstance(item, dict) else item
            captured.append(np.asarray(codes.detach().cpu().numpy() if hasattr(codes, "detach") else codes))
        return original(*args, **kwargs)

    tokenizer.decode = decode

    # the talker's prefill embeddings and the codec logits of every step
    talker = model.model.talker
    prompt_embd, logits = [], []

    def on_talker(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None and not prompt_embd:
            prompt_embd.append(embeds[0].detach().float().numpy().copy())

    def on_head(module, args, output):
        logits.append(output[0, -1].detach().float().numpy().copy())

    hooks = [talker.register_forward_pre_hook(on_talker, with_kwargs=True),
             talker.codec_head.register_forward_hook(on_head)]
    # greedy; the repetition penalty as asked (the checkpoint's generation_config.json for the official
    # defaults): qwen-tts applies it to the talker's first codebook only, over every code generated so far
    kw = dict(do_sample=False, subtalker_dosample=False, repetition_penalty=float(request.get("repetition_penalty", 1.0)),
              max_new_tokens=int(request["frames"]), non_streaming_mode=request["layout"] == "nonstreaming")
    variant, text, lang = request["variant"], request["text"], request["language"]
    extra: dict = {}
    if variant == "custom_voice":
        wavs, sr = model.generate_custom_voice(text=text, speaker=request["speaker"], language=lang,
                                               instruct=request.get("instruct") or None, **kw)
    elif variant == "voice_design":
        wavs, sr = model.generate_voice_design(text=text, instruct=request["instruct"], language=lang, **kw)
    else:
        from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem

        ref, ref_sr = sf.read(request["reference_wav"], dtype="float32")
        ref_text = request.get("reference_text") or None
        own = model.create_voice_clone_prompt(ref_audio=(ref, ref_sr), ref_text=ref_text,
                                              x_vector_only_mode=ref_text is None)[0]
        if ref_text is not None:  # in-context cloning: the speech tokenizer's encoder codes
            extra["ref_codes"] = own.ref_code.detach().cpu().numpy().astype(np.int64).reshape(-1, 16)
        extra["speaker_embd"] = own.ref_spk_embedding.detach().float().numpy().reshape(-1)
        spk = own.ref_spk_embedding
        if request.get("speaker_embd"):
            # the other side's x-vector: generate with it, so the stages after the speaker encoder
            # are compared on identical inputs
            spk = torch.from_numpy(np.load(request["speaker_embd"])).to(own.ref_spk_embedding.dtype)
            extra["other_speaker_embd"] = spk.detach().float().numpy().reshape(-1)
        item = VoiceClonePromptItem(ref_code=own.ref_code, ref_spk_embedding=spk, x_vector_only_mode=ref_text is None,
                                    icl_mode=ref_text is not None, ref_text=ref_text)
        wavs, sr = model.generate_voice_clone(text=text, language=lang, voice_clone_prompt=[item], **kw)
    for h in hooks:
        h.remove()
    codes = captured[-1] if captured else np.zeros((0, 16), dtype=np.int64)
    codes = codes.reshape(-1, codes.shape[-1])
    if "ref_codes" in extra:  # the official decodes the reference's codes ahead of the generated ones
        codes = codes[len(extra["ref_codes"]):]
    return {"wav": np.asarray(wavs[0], dtype=np.float32), "sample_rate": int(sr), "codes": codes.astype(np.int64),
            "prompt_embd": prompt_embd[0] if prompt_embd else np.zeros((0, 0), np.float32),
            "talker_logits": np.stack(logits) if logits else np.zeros((0, 0), np.float32), **extra}


def main(argv: list[str]) -> int:
    import numpy as np

    request = json.loads(open(argv[0]).read())
    result = run(request)
    np.savez(argv[1], **result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
