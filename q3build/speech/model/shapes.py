"""Model geometries: tiny (tests) and the released 0.6B / 1.7B shapes (benchmarks).

Released values follow the official package's config classes (qwen_tts/core/models/
configuration_qwen3_tts.py, tokenizer_12hz/configuration_qwen3_tts_tokenizer_v2.py) as
documented in shared/docs/qwen3-tts-architecture.md §2.3-2.6; the structure that is the same for
every released size (16 codebooks, 4 DAC blocks of 3 residual units, 2× upsampling twice, three
SE-Res2Net stages, 12.5 Hz frames) is kept at every size, only widths and layer counts shrink.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class TalkerShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    text_hidden: int
    mrope_section: tuple[int, int, int]
    text_vocab: int = 151936
    codec_vocab: int = 3072
    code_groups: int = 16


@dataclass(frozen=True, kw_only=True)
class PredictorShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int = 2048


@dataclass(frozen=True, kw_only=True)
class SpeakerShape:
    channels: tuple[int, int, int, int, int]
    attention: int
    se: int
    kernels: tuple[int, ...] = (5, 3, 3, 3, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    res2net_scale: int = 8


@dataclass(frozen=True, kw_only=True)
class DecoderShape:
    codebook_dim: int
    latent: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    decoder_dim: int
    codebook_size: int = 2048
    quantizers: int = 16
    sliding_window: int = 72
    upsample_rates: tuple[int, ...] = (8, 5, 4, 3)
    upsampling_ratios: tuple[int, ...] = (2, 2)


@dataclass(frozen=True, kw_only=True)
class MimiShape:
    filters: int
    hidden: int
    layers: int
    heads: int
    head_dim: int
    ffn: int
    codebook_dim: int
    vq_hidden: int
    codebook_size: int = 2048
    quantizers: int = 32
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    name: str
    size_tag: str  # config tts_model_size ("0b6" makes the official API drop instruct text)
    talker: TalkerShape
    predictor: PredictorShape
    speaker: SpeakerShape
    decoder: DecoderShape
    mimi: MimiShape
    source: str = field(default="")


TINY = ModelShape(
    name="tiny", size_tag="1b7",  # "1b7" keeps instruct text (VoiceDesign / CustomVoice instruct)
    talker=TalkerShape(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, ffn=128, text_hidden=16,
                       mrope_section=(4, 2, 2)),
    # predictor narrower than the talker: exercises small_to_mtp_projection as 1.7B does.
    # head_dim 16, not 8: with head_dim 8 the CPU flash-attention path of the clip graph diverges
    # from the reference (found with this fixture; released models use 128)
    predictor=PredictorShape(hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, ffn=64),
    speaker=SpeakerShape(channels=(32, 32, 32, 32, 96), attention=16, se=16),
    decoder=DecoderShape(codebook_dim=32, latent=64, hidden=32, layers=2, heads=4, kv_heads=4, head_dim=8, ffn=64,
                         decoder_dim=64),
    mimi=MimiShape(filters=8, hidden=32, layers=1, heads=4, head_dim=8, ffn=64, codebook_dim=16, vq_hidden=16),
    source="small widths and layer counts, released structure",
)

# --- the released shapes ------------------------------------------------------------------------
# Where each value comes from. "CFG" = the official package's config classes, read from the
# installed qwen_tts 0.1.1 (qwen_tts/core/models/configuration_qwen3_tts.py: Qwen3TTSTalkerConfig,
# Qwen3TTSTalkerCodePredictorConfig, Qwen3TTSSpeakerEncoderConfig; qwen_tts/core/tokenizer_12hz/
# configuration_qwen3_tts_tokenizer_v2.py: Qwen3TTSTokenizerV2DecoderConfig, whose encoder is
# transformers' MimiConfig). "UP" = the pinned upstream llama.cpp: conversion/qwen3tts.py (the
# converter) and tools/mtmd/clip.cpp at the pin (b11312), which hard-codes the released codec decoder
# geometry ("Qwen3-TTS hard-code part of the hparams to clip.cpp", tools/mtmd/README-dev.md).
# "NOTES" = shared/docs/qwen3-tts-architecture.md §2.3-2.6, which reproduces the released
# config.json files from several independent third-party sources (§2.8: no hub access here).
#
# Code predictor (both sizes), all = CFG Qwen3TTSTalkerCodePredictorConfig defaults: hidden 1024,
# 5 layers, 16 heads, 8 KV heads, head_dim 128, intermediate 3072, vocab 2048 (NOTES §2.4 agrees;
# the released configs override only num_code_groups 32 → 16, rope_theta, max positions).
_PREDICTOR = PredictorShape(hidden=1024, layers=5, heads=16, kv_heads=8, head_dim=128, ffn=3072)
# Speaker encoder (Base), CFG Qwen3TTSSpeakerEncoderConfig defaults: enc_channels [512,512,512,512,
# 1536], attention 128, SE 128, Res2Net scale 8, kernels [5,3,3,3,1], dilations [1,2,3,4,1]; UP: the
# converter writes audio embedding length 1536 (= the last channel count) and 128 mel bins.
# enc_dim is the talker width (NOTES §2.5), set per size by tiny.speaker_config.
_SPEAKER = SpeakerShape(channels=(512, 512, 512, 512, 1536), attention=128, se=128)
# Codec decoder: UP clip.cpp at the pin hard-codes 8 layers, width 512, FFN 1024, 16 heads, 16 KV
# heads, 2 upsample blocks, 4 DAC blocks of 3 residual units, window 72; head_dim 64, latent 1024,
# codebook_dim 512, decoder_dim 1536 from NOTES §2.6. CFG Qwen3TTSTokenizerV2DecoderConfig gives
# latent 1024, 8 layers, 16/16 heads, decoder_dim 1536, window 72, upsample rates (8,5,4,3) and
# ratios (2,2); its hidden_size/intermediate_size defaults (1024/3072) are NOT the released values
# (UP and NOTES agree on 512/1024).
_DECODER = DecoderShape(codebook_dim=512, latent=1024, hidden=512, layers=8, heads=16, kv_heads=16, head_dim=64,
                        ffn=1024, decoder_dim=1536)
# Speech encoder (Mimi; only Base's in-context cloning uses it): transformers.MimiConfig defaults
# (64 filters, ratios [8,6,5,4], width 512, 8 layers, 8 heads, head_dim 64, FFN 2048, codebook_dim
# 256, VQ hidden 256, 32 quantizers), which NOTES §2.6 lists as the released values.
_MIMI = MimiShape(filters=64, hidden=512, layers=8, heads=8, head_dim=64, ffn=2048, codebook_dim=256, vq_hidden=256)

# Talker. CFG defaults are not a released size (1024 wide, 20 layers, 2 KV heads, FFN 2048), so the
# widths and depths come from NOTES §2.3: 0.6B 1024 × 28 layers, 16 heads / 8 KV heads, head_dim
# 128, FFN 3072; 1.7B 2048 × 28, same heads, FFN 6144 (NOTES §2.8: one source says 8192, every config
# fixture 6144, which is also the Qwen3-1.7B LLM's). Consistent with CFG: text_hidden_size 2048 and
# codec vocab 3072 are the CFG defaults, and the code predictor's small_to_mtp_projection exists
# exactly when the talker is wider than the predictor (1.7B). text_vocab 151936 is the Qwen
# vocabulary (CFG docstring). mrope_section [24,20,20] (NOTES §2.3) sums to head_dim / 2.
# size_tag: config tts_model_size, "0b6" / "1b7" (NOTES §2.2).
SHAPE_0_6B = ModelShape(
    name="0.6b", size_tag="0b6",
    talker=TalkerShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072, text_hidden=2048,
                       mrope_section=(24, 20, 20)),
    predictor=_PREDICTOR, speaker=_SPEAKER, decoder=_DECODER, mimi=_MIMI,
    source="Qwen3-TTS-12Hz-0.6B: talker 1024×28, GQA 16/8, head 128, FFN 3072 (architecture notes §2.3)",
)

SHAPE_1_7B = ModelShape(
    name="1.7b", size_tag="1b7",
    talker=TalkerShape(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=6144, text_hidden=2048,
                       mrope_section=(24, 20, 20)),
    predictor=_PREDICTOR, speaker=_SPEAKER, decoder=_DECODER, mimi=_MIMI,
    source="Qwen3-TTS-12Hz-1.7B: talker 2048×28, FFN 6144 (the value every config fixture gives; §2.8)",
)

SHAPES = {s.name: s for s in (TINY, SHAPE_0_6B, SHAPE_1_7B)}
