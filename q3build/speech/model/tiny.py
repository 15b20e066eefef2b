"""Random Qwen3-TTS checkpoints in the released Hugging Face layout.

    <dir>/config.json, generation_config.json, model.safetensors
    <dir>/vocab.json, merges.txt, tokenizer_config.json          (the real Qwen vocabulary)
    <dir>/speech_tokenizer/config.json, model.safetensors, preprocessor_config.json

Tensor names and shapes follow the official classes (checked by tests against
`qwen_tts` itself); values come from one seeded numpy generator in a fixed order, so the same
seed gives byte-identical files. Scales keep activations O(1) so greedy decoding has no ties,
and the decoder's residual-unit and output convolutions are scaled down (random weights there
amplify float noise through SnakeBeta's sin, see architecture notes §10.6).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from q3build.speech.facts import FRAME_RATE, SAMPLE_RATE
from q3build.speech.model import vocab
from q3build.speech.model.shapes import ModelShape

Variant = Literal["base", "custom_voice", "voice_design"]
VARIANTS: tuple[str, ...] = ("base", "custom_voice", "voice_design")

# released ids (architecture notes §5.1-5.2)
LANGUAGES = {"english": 2050, "german": 2053, "spanish": 2054, "chinese": 2055, "japanese": 2058,
             "french": 2061, "korean": 2064, "russian": 2069, "italian": 2070, "portuguese": 2071}
DIALECTS = {"beijing_dialect": 2074, "sichuan_dialect": 2062}
SPEAKERS = {"serena": 3066, "vivian": 3065, "uncle_fu": 3010, "ryan": 3061, "aiden": 2861,
            "ono_anna": 2873, "sohee": 2864, "eric": 2875, "dylan": 2878}
SPEAKER_DIALECT = {"eric": "sichuan_dialect", "dylan": "beijing_dialect"}

GENERATION_CONFIG = {
    "do_sample": True, "temperature": 0.9, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.05,
    "subtalker_dosample": True, "subtalker_temperature": 0.9, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
    "max_new_tokens": 8192,
}


@dataclass(frozen=True)
class Spec:
    """One tensor: name, shape, and how to fill it."""

    name: str
    shape: tuple[int, ...]
    init: str          # weight | bias | norm | embed | scale:<v> | log | usage | one
    gain: float = 1.0
    fan_in: int = 0


# --- configs ------------------------------------------------------------------------------------

def talker_config(shape: ModelShape, variant: Variant) -> dict:
    t, p = shape.talker, shape.predictor
    languages = dict(LANGUAGES)
    if variant == "custom_voice":
        languages.update(DIALECTS)
    return {
        "hidden_size": t.hidden, "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads, "head_dim": t.head_dim, "intermediate_size": t.ffn,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "rope_scaling": {"mrope_section": list(t.mrope_section), "interleaved": True, "rope_type": "default"},
        "max_position_embeddings": 32768, "vocab_size": t.codec_vocab, "text_vocab_size": t.text_vocab,
        "text_hidden_size": t.text_hidden, "num_code_groups": t.code_groups,
        "codec_pad_id": 2148, "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_think_id": 2154,
        "codec_nothink_id": 2155, "codec_think_bos_id": 2156, "codec_think_eos_id": 2157,
        "codec_language_id": languages,
        "spk_id": dict(SPEAKERS) if variant == "custom_voice" else {},
        "spk_is_dialect": ({s: SPEAKER_DIALECT.get(s, False) for s in SPEAKERS} if variant == "custom_voice" else {}),
        "position_id_per_seconds": 13, "attention_bias": False, "use_sliding_window": False,
        "initializer_range": 0.02,
        "code_predictor_config": {
            "hidden_size": p.hidden, "num_hidden_layers": p.layers, "num_attention_heads": p.heads,
            "num_key_value_heads": p.kv_heads, "head_dim": p.head_dim, "intermediate_size": p.ffn,
            "vocab_size": p.vocab, "num_code_groups": t.code_groups, "hidden_act": "silu",
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 65536,
            "attention_bias": False, "use_sliding_window": False, "initializer_range": 0.02,
        },
    }


def speaker_config(shape: ModelShape) -> dict:
    s = shape.speaker
    return {"mel_dim": 128, "enc_dim": shape.talker.hidden, "enc_channels": list(s.channels),
            "enc_kernel_sizes": list(s.kernels), "enc_dilations": list(s.dilations),
            "enc_attention_channels": s.attention, "enc_res2net_scale": s.res2net_scale,
            "enc_se_channels": s.se, "sample_rate": SAMPLE_RATE}


def model_config(shape: ModelShape, variant: Variant) -> dict:
    cfg = {
        "architectures": ["Qwen3TTSForConditionalGeneration"], "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz", "tts_model_size": shape.size_tag, "tts_model_type": variant,
        "im_start_token_id": 151644, "im_end_token_id": 151645, "tts_pad_token_id": 151671,
        "tts_bos_token_id": 151672, "tts_eos_token_id": 151673, "assistant_token_id": 77091,
        "talker_config": talker_config(shape, variant),
        "torch_dtype": "float32", "transformers_version": "4.57.3",
    }
    if variant == "base":  # released non-Base configs have no speaker encoder (§10.1)
        cfg["speaker_encoder_config"] = speaker_config(shape)
    return cfg


def speech_tokenizer_config(shape: ModelShape) -> dict:
    d, m = shape.decoder, shape.mimi
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"], "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": d.quantizers, "input_sample_rate": SAMPLE_RATE, "output_sample_rate": SAMPLE_RATE,
        "encode_downsample_rate": 1920, "decode_upsample_rate": 1920,
        "decoder_config": {
            "codebook_size": d.codebook_size, "codebook_dim": d.codebook_dim, "latent_dim": d.latent,
            "hidden_size": d.hidden, "num_hidden_layers": d.layers, "num_attention_heads": d.heads,
            "num_key_value_heads": d.kv_heads, "head_dim": d.head_dim, "intermediate_size": d.ffn,
            "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": d.sliding_window,
            "layer_scale_initial_scale": 0.01, "max_position_embeddings": 8000, "num_quantizers": d.quantizers,
            "upsample_rates": list(d.upsample_rates), "upsampling_ratios": list(d.upsampling_ratios),
            "decoder_dim": d.decoder_dim, "num_semantic_quantizers": 1, "semantic_codebook_size": 4096,
            "vector_quantization_hidden_dimension": d.codebook_dim, "attention_bias": False,
        },
        "encoder_config": {
            "model_type": "mimi", "_frame_rate": FRAME_RATE, "sampling_rate": SAMPLE_RATE, "audio_channels": 1,
            "num_filters": m.filters, "upsampling_ratios": list(m.upsampling_ratios), "kernel_size": 7,
            "residual_kernel_size": 3, "last_kernel_size": 3, "num_residual_layers": 1, "dilation_growth_rate": 2,
            "compress": 2, "use_causal_conv": True, "pad_mode": "constant", "hidden_size": m.hidden,
            "num_hidden_layers": m.layers, "num_attention_heads": m.heads, "num_key_value_heads": m.heads,
            "head_dim": m.head_dim, "intermediate_size": m.ffn, "hidden_act": "gelu", "norm_eps": 1e-5,
            "rope_theta": 10000.0, "sliding_window": 250, "layer_scale_initial_scale": 0.01,
            "num_quantizers": m.quantizers, "num_semantic_quantizers": 1, "codebook_size": m.codebook_size,
            "codebook_dim": m.codebook_dim, "vector_quantization_hidden_dimension": m.vq_hidden,
            "upsample_groups": m.hidden, "max_position_embeddings": 8000, "use_conv_shortcut": False,
            "trim_right_ratio": 1.0, "normalize": False,
        },
        "transformers_version": "4.57.3",
    }


PREPROCESSOR_CONFIG = {"feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
                       "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
                       "sampling_rate": SAMPLE_RATE, "chunk_length_s": None, "overlap": None}


# --- tensor layout ------------------------------------------------------------------------------

def _lin(name: str, out: int, inp: int, bias: bool = False, gain: float = 1.0) -> list[Spec]:
    specs = [Spec(f"{name}.weight", (out, inp), "weight", gain, inp)]
    if bias:
        specs.append(Spec(f"{name}.bias", (out,), "bias"))
    return specs


def _conv(name: str, out: int, inp: int, k: int, bias: bool = True, gain: float = 1.0) -> list[Spec]:
    specs = [Spec(f"{name}.weight", (out, inp, k), "weight", gain, inp * k)]
    if bias:
        specs.append(Spec(f"{name}.bias", (out,), "bias"))
    return specs


def _decoder_layer(prefix: str, d: int, heads: int, kv: int, hd: int, ffn: int) -> list[Spec]:
    return [
        *_lin(f"{prefix}.self_attn.q_proj", heads * hd, d), *_lin(f"{prefix}.self_attn.k_proj", kv * hd, d),
        *_lin(f"{prefix}.self_attn.v_proj", kv * hd, d), *_lin(f"{prefix}.self_attn.o_proj", d, heads * hd),
        Spec(f"{prefix}.self_attn.q_norm.weight", (hd,), "norm"), Spec(f"{prefix}.self_attn.k_norm.weight", (hd,), "norm"),
        *_lin(f"{prefix}.mlp.gate_proj", ffn, d), *_lin(f"{prefix}.mlp.up_proj", ffn, d),
        *_lin(f"{prefix}.mlp.down_proj", d, ffn),
        Spec(f"{prefix}.input_layernorm.weight", (d,), "norm"),
        Spec(f"{prefix}.post_attention_layernorm.weight", (d,), "norm"),
    ]


def main_tensors(shape: ModelShape, variant: Variant) -> list[Spec]:
    t, p, s = shape.talker, shape.predictor, shape.speaker
    out: list[Spec] = []
    for i in range(t.layers):
        out += _decoder_layer(f"talker.model.layers.{i}", t.hidden, t.heads, t.kv_heads, t.head_dim, t.ffn)
    out += [
        Spec("talker.model.norm.weight", (t.hidden,), "norm"),
        Spec("talker.model.codec_embedding.weight", (t.codec_vocab, t.hidden), "embed"),
        Spec("talker.model.text_embedding.weight", (t.text_vocab, t.text_hidden), "embed"),
        *_lin("talker.text_projection.linear_fc1", t.text_hidden, t.text_hidden, bias=True),
        *_lin("talker.text_projection.linear_fc2", t.hidden, t.text_hidden, bias=True),
        *_lin("talker.codec_head", t.codec_vocab, t.hidden),
    ]
    for i in range(p.layers):
        out += _decoder_layer(f"talker.code_predictor.model.layers.{i}", p.hidden, p.heads, p.kv_heads, p.head_dim,
                              p.ffn)
    out.append(Spec("talker.code_predictor.model.norm.weight", (p.hidden,), "norm"))
    for j in range(t.code_groups - 1):
        out.append(Spec(f"talker.code_predictor.model.codec_embedding.{j}.weight", (p.vocab, t.hidden), "embed"))
    for j in range(t.code_groups - 1):
        out += _lin(f"talker.code_predictor.lm_head.{j}", p.vocab, p.hidden)
    if p.hidden != t.hidden:
        out += _lin("talker.code_predictor.small_to_mtp_projection", p.hidden, t.hidden, bias=True)
    if variant == "base":
        out += speaker_tensors(s, t.hidden)
    return out


def speaker_tensors(s, enc_dim: int) -> list[Spec]:
    c = s.channels
    out = _conv("speaker_encoder.blocks.0.conv", c[0], 128, s.kernels[0])
    for b in range(1, 4):
        pre = f"speaker_encoder.blocks.{b}"
        width = c[b] // s.res2net_scale
        out += _conv(f"{pre}.tdnn1.conv", c[b], c[b - 1], 1)
        for r in range(s.res2net_scale - 1):
            out += _conv(f"{pre}.res2net_block.blocks.{r}.conv", width, width, s.kernels[b])
        out += _conv(f"{pre}.tdnn2.conv", c[b], c[b], 1)
        out += _conv(f"{pre}.se_block.conv1", s.se, c[b], 1) + _conv(f"{pre}.se_block.conv2", c[b], s.se, 1)
    out += _conv("speaker_encoder.mfa.conv", c[4], 3 * c[3], s.kernels[4])
    out += _conv("speaker_encoder.asp.tdnn.conv", s.attention, 3 * c[4], 1)
    out += _conv("speaker_encoder.asp.conv", c[4], s.attention, 1)
    out += _conv("speaker_encoder.fc", enc_dim, 2 * c[4], 1)
    return out


def tokenizer_tensors(shape: ModelShape) -> list[Spec]:
    return mimi_tensors(shape) + decoder_tensors(shape)


def mimi_tensors(shape: ModelShape) -> list[Spec]:
    m = shape.mimi
    out = _conv("encoder.encoder.layers.0.conv", m.filters, 1, 7)
    c, idx = m.filters, 1
    for ratio in reversed(m.upsampling_ratios):
        out += _conv(f"encoder.encoder.layers.{idx}.block.1.conv", c // 2, c, 3)
        out += _conv(f"encoder.encoder.layers.{idx}.block.3.conv", c, c // 2, 1)
        out += _conv(f"encoder.encoder.layers.{idx + 2}.conv", 2 * c, c, 2 * ratio)
        c, idx = 2 * c, idx + 3
    out += _conv(f"encoder.encoder.layers.{idx + 1}.conv", m.hidden, c, 3)
    for i in range(m.layers):
        pre = f"encoder.encoder_transformer.layers.{i}"
        out += [*_lin(f"{pre}.self_attn.q_proj", m.heads * m.head_dim, m.hidden),
                *_lin(f"{pre}.self_attn.k_proj", m.heads * m.head_dim, m.hidden),
                *_lin(f"{pre}.self_attn.v_proj", m.heads * m.head_dim, m.hidden),
                *_lin(f"{pre}.self_attn.o_proj", m.hidden, m.heads * m.head_dim),
                *_lin(f"{pre}.mlp.fc1", m.ffn, m.hidden), *_lin(f"{pre}.mlp.fc2", m.hidden, m.ffn),
                Spec(f"{pre}.input_layernorm.weight", (m.hidden,), "norm"),
                Spec(f"{pre}.input_layernorm.bias", (m.hidden,), "bias"),
                Spec(f"{pre}.post_attention_layernorm.weight", (m.hidden,), "norm"),
                Spec(f"{pre}.post_attention_layernorm.bias", (m.hidden,), "bias"),
                Spec(f"{pre}.self_attn_layer_scale.scale", (m.hidden,), "scale:0.1"),
                Spec(f"{pre}.mlp_layer_scale.scale", (m.hidden,), "scale:0.1")]
    out += _conv("encoder.downsample.conv", m.hidden, m.hidden, 4, bias=False)
    for kind, n in (("semantic", 1), ("acoustic", m.quantizers - 1)):
        pre = f"encoder.quantizer.{kind}_residual_vector_quantizer"
        for j in range(n):
            out += [Spec(f"{pre}.layers.{j}.codebook.initialized", (1,), "one"),
                    Spec(f"{pre}.layers.{j}.codebook.cluster_usage", (m.codebook_size,), "usage"),
                    Spec(f"{pre}.layers.{j}.codebook.embed_sum", (m.codebook_size, m.codebook_dim), "embed")]
        out += _conv(f"{pre}.input_proj", m.vq_hidden, m.hidden, 1, bias=False)
        out += _conv(f"{pre}.output_proj", m.hidden, m.vq_hidden, 1, bias=False)
    return out


def decoder_tensors(shape: ModelShape) -> list[Spec]:
    d = shape.decoder
    half = d.codebook_dim // 2
    out: list[Spec] = []
    for i in range(d.layers):
        pre = f"decoder.pre_transformer.layers.{i}"
        out += [*_lin(f"{pre}.self_attn.q_proj", d.heads * d.head_dim, d.hidden),
                *_lin(f"{pre}.self_attn.k_proj", d.kv_heads * d.head_dim, d.hidden),
                *_lin(f"{pre}.self_attn.v_proj", d.kv_heads * d.head_dim, d.hidden),
                *_lin(f"{pre}.self_attn.o_proj", d.hidden, d.heads * d.head_dim),
                *_lin(f"{pre}.mlp.gate_proj", d.ffn, d.hidden), *_lin(f"{pre}.mlp.up_proj", d.ffn, d.hidden),
                *_lin(f"{pre}.mlp.down_proj", d.hidden, d.ffn),
                Spec(f"{pre}.input_layernorm.weight", (d.hidden,), "norm"),
                Spec(f"{pre}.post_attention_layernorm.weight", (d.hidden,), "norm"),
                Spec(f"{pre}.self_attn_layer_scale.scale", (d.hidden,), "scale:0.1"),
                Spec(f"{pre}.mlp_layer_scale.scale", (d.hidden,), "scale:0.1")]
    out += [Spec("decoder.pre_transformer.norm.weight", (d.hidden,), "norm"),
            *_lin("decoder.pre_transformer.input_proj", d.hidden, d.latent, bias=True),
            *_lin("decoder.pre_transformer.output_proj", d.latent, d.hidden, bias=True)]
    for part, n in (("rvq_first", 1), ("rvq_rest", d.quantizers - 1)):
        pre = f"decoder.quantizer.{part}"
        out += _conv(f"{pre}.input_proj", half, d.codebook_dim, 1, bias=False)
        out += _conv(f"{pre}.output_proj", d.codebook_dim, half, 1, bias=False)
        for j in range(n):
            out += [Spec(f"{pre}.vq.layers.{j}._codebook.cluster_usage", (d.codebook_size,), "usage"),
                    Spec(f"{pre}.vq.layers.{j}._codebook.embedding_sum", (d.codebook_size, half), "embed")]
    out += _conv("decoder.pre_conv.conv", d.latent, d.codebook_dim, 3)
    for u in range(len(d.upsampling_ratios)):
        pre = f"decoder.upsample.{u}"
        L, r = d.latent, d.upsampling_ratios[u]
        out += [Spec(f"{pre}.0.conv.weight", (L, L, r), "weight", 1.0, L), Spec(f"{pre}.0.conv.bias", (L,), "bias"),
                Spec(f"{pre}.1.gamma", (L,), "scale:0.1"),
                *_conv(f"{pre}.1.dwconv.conv", L, 1, 7),
                Spec(f"{pre}.1.norm.weight", (L,), "norm"), Spec(f"{pre}.1.norm.bias", (L,), "bias"),
                *_lin(f"{pre}.1.pwconv1", 4 * L, L, bias=True), *_lin(f"{pre}.1.pwconv2", L, 4 * L, bias=True)]
    out += _conv("decoder.decoder.0.conv", d.decoder_dim, d.latent, 7)
    ch = d.decoder_dim
    for b, rate in enumerate(d.upsample_rates):
        pre = f"decoder.decoder.{b + 1}.block"
        nxt = ch // 2
        out += [Spec(f"{pre}.0.alpha", (ch,), "log"), Spec(f"{pre}.0.beta", (ch,), "log"),
                Spec(f"{pre}.1.conv.weight", (ch, nxt, 2 * rate), "weight", 1.0, ch * 2),
                Spec(f"{pre}.1.conv.bias", (nxt,), "bias")]
        for r in range(3):
            ru = f"{pre}.{r + 2}"
            out += [Spec(f"{ru}.act1.alpha", (nxt,), "log"), Spec(f"{ru}.act1.beta", (nxt,), "log"),
                    *_conv(f"{ru}.conv1.conv", nxt, nxt, 7),
                    Spec(f"{ru}.act2.alpha", (nxt,), "log"), Spec(f"{ru}.act2.beta", (nxt,), "log"),
                    *_conv(f"{ru}.conv2.conv", nxt, nxt, 1, gain=0.1)]
        ch = nxt
    out += [Spec("decoder.decoder.5.alpha", (ch,), "log"), Spec("decoder.decoder.5.beta", (ch,), "log"),
            *_conv("decoder.decoder.6.conv", 1, ch, 7, gain=0.1)]
    return out


# --- values -------------------------------------------------------------------------------------

def materialize(specs: list[Spec], rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for s in specs:
        if s.init == "weight":
            v = rng.standard_normal(s.shape) * (s.gain / np.sqrt(max(s.fan_in, 1)))
        elif s.init == "bias":
            v = rng.standard_normal(s.shape) * 0.02
        elif s.init == "norm":
            v = 1.0 + rng.standard_normal(s.shape) * 0.05
        elif s.init == "embed":
            v = rng.standard_normal(s.shape)
        elif s.init == "log":  # SnakeBeta keeps log(alpha), log(beta)
            v = rng.standard_normal(s.shape) * 0.1
        elif s.init == "usage":  # EMA cluster counts: positive
            v = rng.uniform(0.5, 2.0, s.shape)
        elif s.init == "one":
            v = np.ones(s.shape)
        elif s.init.startswith("scale:"):
            v = np.full(s.shape, float(s.init.split(":", 1)[1]))
        else:
            raise ValueError(s.init)
        out[s.name] = np.ascontiguousarray(v, dtype=np.float32)
    return out


# --- files --------------------------------------------------------------------------------------

def _dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_checkpoint(out: Path, shape: ModelShape, variant: Variant, *, seed: int = 0,
                     vocab_cache: Path | None = None) -> list[Path]:
    """Write a checkpoint; returns the files written, in a stable order."""
    from safetensors.numpy import save_file

    if variant not in VARIANTS:
        raise ValueError(variant)
    out.mkdir(parents=True, exist_ok=True)
    st = out / "speech_tokenizer"
    st.mkdir(exist_ok=True)
    # independent streams per file: adding a tensor to one file leaves the other unchanged
    rng_main = np.random.default_rng([seed, 1])
    rng_tok = np.random.default_rng([seed, 2])
    _dump(out / "config.json", model_config(shape, variant))
    _dump(out / "generation_config.json", GENERATION_CONFIG)
    save_file(materialize(main_tensors(shape, variant), rng_main), str(out / "model.safetensors"),
              metadata={"format": "pt"})
    vocab.write(out, cache=vocab_cache)
    _dump(out / "tokenizer_config.json", vocab.tokenizer_config())
    _dump(st / "config.json", speech_tokenizer_config(shape))
    _dump(st / "preprocessor_config.json", PREPROCESSOR_CONFIG)
    save_file(materialize(tokenizer_tensors(shape), rng_tok), str(st / "model.safetensors"),
              metadata={"format": "pt"})
    return sorted(p for p in out.rglob("*") if p.is_file())
