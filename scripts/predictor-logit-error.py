#!/usr/bin/env python3
"""Per-codebook logit error of a quantised Qwen3-TTS code predictor against its f32 conversion.

    predictor-logit-error.py --config HF_DIR/config.json --gguf-py TREE/gguf-py \
        --ref mmproj-f32.gguf --quant q8_0=mmproj-q8_0.gguf --quant q4_0=mmproj-q4_0.gguf [--frames 8]

Runs the code predictor (5 Qwen3 layers, 15 heads) in numpy the way ggml's CPU backend computes it:
f32 weights multiply f32 activations, f16 weights f16-rounded ones; quantised weights multiply activations rounded to q8_0 blocks
(32 values, f16 scale amax/127), which is the vec_dot type of q8_0 and q4_0. Inputs are random talker
hidden states (unit RMS) and random codebook-0 codes; the f32 run picks each code greedily and the
quantised runs are teacher-forced with the same codes, so every codebook's logits are compared on the
same context. Prints, per codebook, the max |logit error| relative to the f32 logits' standard deviation
and how often the greedy code agrees; and the largest activation entering ffn_down (what overflowed f16).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

QK = 32


def q8_0_roundtrip(x: np.ndarray) -> np.ndarray:
    """x rounded through ggml's quantize_row_q8_0 (per 32-block f16 scale amax/127, round to nearest)."""
    b = x.reshape(-1, QK).astype(np.float32)
    amax = np.abs(b).max(axis=1, keepdims=True)
    d = amax / 127.0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.round(b / np.where(d > 0, d, 1)), 0)
    d16 = d.astype(np.float16).astype(np.float32)
    return (q * d16).reshape(x.shape)


class Weights:
    def __init__(self, path: str, gguf):
        self.r = gguf.GGUFReader(path)
        self.gguf = gguf
        self.t = {t.name: t for t in self.r.tensors}
        self.cache: dict[str, np.ndarray] = {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.cache:
            t = self.t[name]
            a = self.gguf.quants.dequantize(t.data, t.tensor_type)
            shape = [int(s) for s in reversed(t.shape)]
            self.cache[name] = np.asarray(a, dtype=np.float32).reshape(shape)
        return self.cache[name]

    def quantised(self, name: str) -> bool:
        return self.t[name].tensor_type.name not in ("F32", "F16", "BF16")

    def type_of(self, name: str) -> str:
        return self.t[name].tensor_type.name


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope_neox(x, pos, theta):
    # x: [n_head, d]
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float32) / d)
    ang = pos * inv
    cos, sin = np.cos(ang), np.sin(ang)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


class Predictor:
    def __init__(self, w: Weights, cfg: dict, stats: dict | None = None):
        self.w, self.cfg, self.stats = w, cfg, stats
        self.n_layer = cfg["num_hidden_layers"]
        self.n_head, self.n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.d_head = cfg.get("head_dim", cfg["hidden_size"] // self.n_head)
        self.eps, self.theta = cfg["rms_norm_eps"], cfg["rope_theta"]

    def mm(self, name: str, x: np.ndarray, view=None) -> np.ndarray:
        W = self.w.get(name) if view is None else self.w.get(name)[view]
        if self.w.quantised(name):
            x = q8_0_roundtrip(x)
        elif self.w.type_of(name) == "F16":  # ggml converts the activations to the weight type
            x = x.astype(np.float16).astype(np.float32)
        return W @ x

    def layer(self, il, x, pos, kc, vc):
        p = f"a.gen.code.blk.{il}."
        h = rms_norm(x, self.w.get(p + "ln1.weight"), self.eps)
        q = self.mm(p + "attn_q.weight", h).reshape(self.n_head, self.d_head)
        k = self.mm(p + "attn_k.weight", h).reshape(self.n_kv, self.d_head)
        v = self.mm(p + "attn_v.weight", h).reshape(self.n_kv, self.d_head)
        q = rope_neox(rms_norm(q, self.w.get(p + "attn_q_norm.weight"), self.eps), pos, self.theta)
        k = rope_neox(rms_norm(k, self.w.get(p + "attn_k_norm.weight"), self.eps), pos, self.theta)
        kc.append(k)
        vc.append(v)
        K, V = np.stack(kc, 1), np.stack(vc, 1)  # [n_kv, T, d]
        rep = self.n_head // self.n_kv
        out = np.empty((self.n_head, self.d_head), np.float32)
        for hh in range(self.n_head):
            s = K[hh // rep] @ q[hh] / np.sqrt(self.d_head)
            s = np.exp(s - s.max())
            out[hh] = (s / s.sum()) @ V[hh // rep]
        x = x + self.mm(p + "attn_out.weight", out.reshape(-1))
        h2 = rms_norm(x, self.w.get(p + "ln2.weight"), self.eps)
        g = self.mm(p + "ffn_gate.weight", h2)
        u = self.mm(p + "ffn_up.weight", h2)
        gu = g / (1 + np.exp(-g)) * u
        if self.stats is not None:
            self.stats["ffn_down_in_max"] = max(self.stats.get("ffn_down_in_max", 0.0), float(np.abs(gu).max()))
        return x + self.mm(p + "ffn_down.weight", gu)

    def frame(self, h, code0, forced=None):
        """Returns (codes 1..G-1, logits per codebook); forced: codes to feed instead of the argmax."""
        caches = [([], []) for _ in range(self.n_layer)]
        n_g = self.w.get("a.gen.code.head.weight").shape[0]

        def run(x, pos):
            if "a.gen.code.proj_in.weight" in self.w.t:  # small_to_mtp_projection (talker width != predictor width)
                x = self.mm("a.gen.code.proj_in.weight", x)
                if "a.gen.code.proj_in.bias" in self.w.t:
                    x = x + self.w.get("a.gen.code.proj_in.bias")
            for il in range(self.n_layer):
                x = self.layer(il, x, pos, *caches[il])
            return x

        run(h.copy(), 0)
        x = run(self.w.get("a.gen.code.out_embd.weight")[code0].copy(), 1)
        codes, logits = [], []
        for g in range(n_g):
            if g > 0:
                x = run(self.w.get("a.gen.code.embd.weight")[g - 1][codes[-1]].copy(), g + 1)
            y = rms_norm(x, self.w.get("a.gen.code.output_norm.weight"), self.eps)
            lg = self.mm("a.gen.code.head.weight", y, view=g)
            logits.append(lg)
            codes.append(int(forced[g]) if forced is not None else int(np.argmax(lg)))
        return codes, logits


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--gguf-py", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--quant", action="append", default=[], metavar="NAME=GGUF")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    sys.path.insert(0, a.gguf_py)
    import gguf

    cfg = json.load(open(a.config))["talker_config"]["code_predictor_config"]
    rng = np.random.default_rng(a.seed)
    ref_w = Weights(a.ref, gguf)
    d_talker = ref_w.get("a.gen.code.out_embd.weight").shape[1]
    inputs = []
    for _ in range(a.frames):
        h = rng.standard_normal(d_talker).astype(np.float32)
        inputs.append((h / np.sqrt(np.mean(h * h)), int(rng.integers(0, 2048))))

    stats: dict = {}
    ref = Predictor(ref_w, cfg, stats)
    ref_runs = [ref.frame(h, c0) for h, c0 in inputs]
    result = {"frames": a.frames, "ffn_down_in_max": stats["ffn_down_in_max"], "quants": {}}
    for spec in a.quant:
        name, path = spec.split("=", 1)
        qw = Weights(path, gguf)
        qp = Predictor(qw, cfg)
        n_g = len(ref_runs[0][1])
        rel = np.zeros((a.frames, n_g))
        agree = np.zeros((a.frames, n_g))
        for i, ((h, c0), (codes, lref)) in enumerate(zip(inputs, ref_runs)):
            _, lq = qp.frame(h, c0, forced=codes)
            for g in range(n_g):
                rel[i, g] = np.abs(lq[g] - lref[g]).max() / (lref[g].std() + 1e-12)
                agree[i, g] = float(np.argmax(lq[g]) == codes[g])
        types = sorted({qw.type_of(n) for n in qw.t if n.startswith("a.gen.code.blk.") and n.endswith(".weight")
                        and "norm" not in n and not n.endswith(("ln1.weight", "ln2.weight"))})
        result["quants"][name] = {
            "matrix_types": types,
            "ffn_down_type": qw.type_of("a.gen.code.blk.0.ffn_down.weight"),
            "max_rel_err_per_codebook": [float(v) for v in rel.max(axis=0)],
            "mean_rel_err_per_codebook": [float(v) for v in rel.mean(axis=0)],
            "greedy_agreement_per_codebook": [float(v) for v in agree.mean(axis=0)],
        }
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"largest activation entering ffn_down (f32 run): {result['ffn_down_in_max']:.4g} "
          f"(f16 max 65504; its q8_0 block scale {result['ffn_down_in_max'] / 127:.4g})")
    for name, q in result["quants"].items():
        print(f"{name}: matrices {','.join(q['matrix_types'])}, ffn_down {q['ffn_down_type']}")
        print("  codebook  " + " ".join(f"{g + 1:>6d}" for g in range(len(q['max_rel_err_per_codebook']))))
        print("  max err   " + " ".join(f"{v:6.3f}" for v in q["max_rel_err_per_codebook"]))
        print("  mean err  " + " ".join(f"{v:6.3f}" for v in q["mean_rel_err_per_codebook"]))
        print("  argmax eq " + " ".join(f"{v:6.2f}" for v in q["greedy_agreement_per_codebook"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
