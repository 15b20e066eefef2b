"""Decode a llama-tts codes dump with the official f32 decoder and compare our wavs with it.

Usage: python codes_vs_reference.py CHECKPOINT_DIR DUMP_DIR/codes.i32 OUT.npy OURS.wav [OURS2.wav ...]

codes.i32 is what MTMD_GEN_AUDIO_DUMP=DUMP_DIR writes (frames x 16 int32). The official decoder
(PyPI qwen-tts, torch CPU, f32, 2 threads) decodes all frames in one `speech_tokenizer.decode` call;
for every wav given, the difference to it: max abs (and in int16 steps), rms in int16 steps, SNR
(reference power over difference power) and correlation. Used for the BF16 decoder kernels (0046).
"""

import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    from q3build.speech.model.reference import _stub_torchaudio

    _stub_torchaudio()
    import torch
    from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer

    ckpt, codes_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    torch.set_num_threads(2)
    codes = np.fromfile(codes_path, dtype=np.int32).reshape(-1, 16)
    tok = Qwen3TTSTokenizer.from_pretrained(str(Path(ckpt) / "speech_tokenizer"), dtype=torch.float32)
    with torch.inference_mode():
        wavs, sr = tok.decode({"audio_codes": torch.from_numpy(codes.astype(np.int64))})
    w = np.asarray(wavs[0], dtype=np.float32).reshape(-1)
    np.save(out, w)
    print("frames", len(codes), "samples", len(w), "sr", sr)
    for p in sys.argv[4:]:
        x, _ = sf.read(p, dtype="float32")
        n = min(len(x), len(w))
        d = x[:n] - w[:n]
        snr = 10 * np.log10((w[:n].astype(np.float64) ** 2).sum() / (d.astype(np.float64) ** 2).sum())
        print(f"{p} vs official f32 decode: n={n} ({len(x)}/{len(w)}) max_abs={np.abs(d).max():.3e} "
              f"({np.abs(d).max() * 32768:.0f} int16 steps) rms={np.sqrt((d ** 2).mean()) * 32768:.1f} steps "
              f"SNR={snr:.1f} dB corr={np.corrcoef(x[:n], w[:n])[0, 1]:.6f}")


if __name__ == "__main__":
    main()
