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

_DECODER = DecoderShape(codebook_dim=512, latent=1024, hidden=512, layers=8, heads=16, kv_heads=16, head_dim=64,
                        ffn=1024, decoder_dim=1536)
_MIMI = MimiShape(filters=64, hidden=512, layers=8, heads=8, head_dim=64, ffn=2048, codebook_dim=256, vq_hidden=256)
_PREDICTOR = PredictorShape(hidden=1024, layers=5, heads=16, kv_heads=8, head_dim=128, ffn=3072)

SHAPE_0_6B = ModelShape(
    name="0.6b", size_tag="0b6",
    talker=TalkerShape(hidden=1024, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=3072, text_hidden=2048,
                       mrope_section=(24, 20, 20)),
    predictor=_PREDICTOR,
    speaker=SpeakerShape(channels=(512, 512, 512, 512, 1536), attention=128, se=128),
    decoder=_DECODER, mimi=_MIMI,
    source="Qwen3-TTS-12Hz-0.6B: talker 1024×28, GQA 16/8, head 128, FFN 3072 (architecture notes §2.3)",
)

SHAPE_1_7B = ModelShape(
    name="1.7b", size_tag="1b7",
    talker=TalkerShape(hidden=2048, layers=28, heads=16, kv_heads=8, head_dim=128, ffn=6144, text_hidden=2048,
                       mrope_section=(24, 20, 20)),
    predictor=_PREDICTOR,
    speaker=SpeakerShape(channels=(512, 512, 512, 512, 1536), attention=128, se=128),
    decoder=_DECODER, mimi=_MIMI,
    source="Qwen3-TTS-12Hz-1.7B: talker 2048×28, FFN 6144 (the value every config fixture gives; §2.8)",
)

SHAPES = {s.name: s for s in (TINY, SHAPE_0_6B, SHAPE_1_7B)}
