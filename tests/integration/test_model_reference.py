"""The tiny checkpoints against the official implementation (PyPI qwen-tts, torch CPU): the same
tensor names and shapes as the official classes build, loaded by the official loader with every
tensor intact, and generating audio for all three variants."""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from q3build.speech.model import reference, shapes, tiny

reference._stub_torchaudio()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402  (after the torchaudio stand-in)
from qwen_tts import Qwen3TTSModel  # noqa: E402
from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSConfig  # noqa: E402
from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSForConditionalGeneration  # noqa: E402
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2Config,  # noqa: E402
)
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
    Qwen3TTSTokenizerV2Model,  # noqa: E402
)

pytestmark = pytest.mark.slow


def _official_shapes(module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if "rotary_emb" not in k}


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_layout_equals_the_official_classes(variant):
    cfg = tiny.model_config(shapes.TINY, variant)
    official = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**{k: v for k, v in cfg.items()
                                                                   if k not in ("architectures",)}))
    mine = {s.name: s.shape for s in tiny.main_tensors(shapes.TINY, variant)}
    off = _official_shapes(official)
    if variant != "base":  # the official class always builds a speaker encoder; released files omit it
        off = {k: v for k, v in off.items() if not k.startswith("speaker_encoder.")}
    assert mine == off


def test_speech_tokenizer_layout_equals_the_official_class():
    official = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**tiny.speech_tokenizer_config(shapes.TINY)))
    mine = {s.name: s.shape for s in tiny.tokenizer_tensors(shapes.TINY)}
    assert mine == _official_shapes(official)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {v: tiny.write_checkpoint(root / v, shapes.TINY, v, vocab_cache=root / "vocab") and root / v
            for v in tiny.VARIANTS}


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_official_loader_loads_every_tensor_and_generates(checkpoints, variant):
    d = checkpoints[variant]
    model = Qwen3TTSModel.from_pretrained(str(d), dtype=torch.float32)
    state = model.model.state_dict()
    for name, value in load_file(str(d / "model.safetensors")).items():
        assert np.array_equal(state[name].numpy(), value), name
    tok_state = model.model.speech_tokenizer.model.state_dict()
    for name, value in load_file(str(d / "speech_tokenizer" / "model.safetensors")).items():
        assert np.array_equal(tok_state[name].numpy(), value), name
    kw = dict(do_sample=False, subtalker_dosample=False, max_new_tokens=12)
    if variant == "custom_voice":
        wavs, sr = model.generate_custom_voice(text="Hello.", speaker="vivian", language="english", **kw)
    elif variant == "voice_design":
        wavs, sr = model.generate_voice_design(text="Hello.", instruct="A calm voice.", language="english", **kw)
    else:
        ref = (np.sin(np.arange(24000) * 2 * np.pi * 220 / 24000) * 0.3).astype(np.float32)
        wavs, sr = model.generate_voice_clone(text="Hello.", language="english", ref_audio=(ref, 24000),
                                              x_vector_only_mode=True, **kw)
    wav = wavs[0]
    assert sr == 24000 and len(wav) % 1920 == 0 and len(wav) >= 1920
    # the fixture's scaled decoder keeps the output unclipped and audible
    assert 0.01 < float(np.std(wav)) and float(np.abs(wav).max()) < 1.0
