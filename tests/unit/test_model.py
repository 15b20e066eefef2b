"""Tiny checkpoint layout, determinism, vocabulary merges, and the parity comparison logic."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from q3build.speech.model import parity, shapes, tiny, vocab


def names(specs):
    return [s.name for s in specs]


@pytest.mark.parametrize("variant", tiny.VARIANTS)
def test_variant_layouts(variant):
    main = names(tiny.main_tensors(shapes.TINY, variant))
    assert len(main) == len(set(main))
    has_spk = any(n.startswith("speaker_encoder.") for n in main)
    assert has_spk == (variant == "base")
    cfg = tiny.model_config(shapes.TINY, variant)
    assert ("speaker_encoder_config" in cfg) == (variant == "base")
    assert cfg["tts_model_type"] == variant
    spk = cfg["talker_config"]["spk_id"]
    if variant == "custom_voice":
        assert spk["ryan"] == 3061 and cfg["talker_config"]["spk_is_dialect"]["eric"] == "sichuan_dialect"
        assert cfg["talker_config"]["codec_language_id"]["beijing_dialect"] == 2074
    else:
        assert spk == {}


def test_released_structure_is_kept():
    t = tiny.speech_tokenizer_config(shapes.TINY)
    # 12.5 Hz frames at 24 kHz: the decoder upsamples each frame by 8·5·4·3 · 2·2 = 1920
    assert t["decode_upsample_rate"] == 1920 == np.prod(t["decoder_config"]["upsample_rates"]) * \
        np.prod(t["decoder_config"]["upsampling_ratios"])
    assert t["decoder_config"]["num_quantizers"] == 16 and t["decoder_config"]["sliding_window"] == 72
    main = names(tiny.main_tensors(shapes.TINY, "base"))
    assert sum(n.startswith("talker.code_predictor.lm_head.") for n in main) == 15
    # predictor narrower than the talker: the 1.7B projection is present
    assert "talker.code_predictor.small_to_mtp_projection.weight" in main
    eq = dataclasses.replace(shapes.TINY, predictor=dataclasses.replace(shapes.TINY.predictor, hidden=64))
    assert "talker.code_predictor.small_to_mtp_projection.weight" not in names(tiny.main_tensors(eq, "base"))


def test_release_shapes_are_documented():
    s = shapes.SHAPE_0_6B
    assert (s.talker.hidden, s.talker.layers, s.talker.ffn, s.predictor.layers) == (1024, 28, 3072, 5)
    assert shapes.SHAPE_1_7B.talker.hidden == 2048 and shapes.SHAPE_1_7B.source


def test_materialize_is_deterministic_and_seeded():
    specs = tiny.decoder_tensors(shapes.TINY)
    a = tiny.materialize(specs, np.random.default_rng([0, 2]))
    b = tiny.materialize(specs, np.random.default_rng([0, 2]))
    c = tiny.materialize(specs, np.random.default_rng([1, 2]))
    key = "decoder.decoder.6.conv.weight"
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[key], c[key])
    assert all(v.dtype == np.float32 for v in a.values())
    # residual-unit conv2 and the output conv are scaled down (random SnakeBeta stacks amplify noise)
    assert np.std(a[key]) < 0.1 * np.std(a["decoder.decoder.0.conv.weight"]) * 3


def test_write_checkpoint_same_seed_same_bytes(tmp_path):
    def digest(d):
        return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.rglob("*")) if p.is_file()}
    one = tiny.write_checkpoint(tmp_path / "a", shapes.TINY, "voice_design", seed=7, vocab_cache=tmp_path / "v")
    tiny.write_checkpoint(tmp_path / "b", shapes.TINY, "voice_design", seed=7, vocab_cache=tmp_path / "v")
    tiny.write_checkpoint(tmp_path / "c", shapes.TINY, "voice_design", seed=8, vocab_cache=tmp_path / "v")
    assert {p.name for p in one} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt",
                                     "tokenizer_config.json", "generation_config.json", "preprocessor_config.json"}
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"] and a["config.json"] == c["config.json"]
    tok = json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())
    assert tok["added_tokens_decoder"]["151671"]["content"] == "<tts_pad>"


def test_bpe_merges_are_recovered_from_ranks():
    ranks = {bytes([i]): i for i in range(256)}
    ranks.update({b"ab": 256, b"abc": 257, b"cab": 258})
    vocab_map, merges = vocab.build(ranks)
    assert merges == ["a b", "ab c", "c ab"]
    assert vocab_map["ab"] == 256 and vocab_map["Ġ"] == 32  # the space byte as GPT-2 spells it


def test_real_vocabulary_size():
    ranks = vocab.load_ranks(vocab.tiktoken_file())
    assert len(ranks) == vocab.SPECIAL_START_ID
    assert vocab.SPECIAL_START_ID + vocab.SPECIAL_TOKENS.index("<tts_pad>") == 151671


def _run(frames=5, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2048, (frames, 16))
    logits = rng.standard_normal((frames + 1, 3072)).astype(np.float32)
    return {"prompt_embd": rng.standard_normal((10, 8)).astype(np.float32), "talker_logits": logits,
            "codes": codes, "wav": rng.standard_normal(frames * 1920).astype(np.float32)}


def test_parity_identical_runs_have_no_divergence():
    ref = _run()
    report = parity.compare(ref, {k: v.copy() for k, v in ref.items()})
    assert report.first_divergence is None
    assert [s.name for s in report.stages] == ["prompt_embd", "talker_logits", "codes", "waveform"]


def test_parity_names_the_first_divergent_stage_and_position():
    ref = _run()
    ours = {k: v.copy() for k, v in ref.items()}
    ours["codes"][3, 5] += 1
    ours["wav"][4000:] *= -1
    report = parity.compare(ref, ours)
    assert report.first_divergence == "codes"
    codes = report.stages[2]
    assert "first difference at frame 3 codebook 5" in codes.detail and codes.metrics["frames_identical"] == 4
    ours["prompt_embd"][2, 1] += 0.1
    assert parity.compare(ref, ours).first_divergence == "prompt_embd"


def test_parity_pick_follows_official_suppression():
    logits = np.zeros((3, 3072), np.float32)
    logits[0, 2500] = 9.0   # a suppressed control id: ignored
    logits[0, 17] = 1.0
    logits[1:, parity.CODEC_EOS] = 5.0  # no EOS before the third step (qwen-tts's min_new_tokens=2)
    logits[1, 40] = 0.5
    assert list(parity.pick(logits)) == [17, 40, parity.CODEC_EOS]


def test_parity_pick_applies_the_repetition_penalty_as_transformers():
    logits = np.zeros((4, 3072), np.float32)
    logits[:3, 7] = 2.0                     # picked first, then penalised: 2 / 1.05 < 1.95
    logits[1:3, 9] = 1.95                   # picked at step 1; at step 2 both are penalised: 7 again
    logits[3] = -1.0
    logits[3, 7], logits[3, 11] = -0.1, -0.104  # below zero a penalised logit is multiplied: -0.105 < -0.104
    assert list(parity.pick(logits)) == [7, 7, 7, 7]
    assert list(parity.pick(logits, 1.05)) == [7, 9, 7, 11]
    report = parity.compare(_run() | {"talker_logits": logits}, _run() | {"talker_logits": logits}, penalty=1.05)
    stage = next(s for s in report.stages if s.name == "talker_logits")
    assert stage.metrics["penalty_decided"] == [1, 3] and "decided 2 pick(s) (first at step 1)" in stage.detail


def test_parity_official_repetition_penalty_reads_generation_config(tmp_path):
    assert parity.official_repetition_penalty(tmp_path) == 1.05   # qwen-tts's own default
    (tmp_path / "generation_config.json").write_text('{"repetition_penalty": 1.1}')
    assert parity.official_repetition_penalty(tmp_path) == 1.1
    (tmp_path / "generation_config.json").write_text('{"repetition_penalty": "high"}')
    with pytest.raises(parity.InputError, match="generation_config.json: repetition_penalty 'high'"):
        parity.official_repetition_penalty(tmp_path)
