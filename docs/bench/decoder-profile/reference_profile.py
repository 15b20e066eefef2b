"""Torch profiler of the official Qwen3-TTS codec decoder (PyPI qwen-tts, torch CPU, f32).

Usage: python reference_profile.py CHECKPOINT_DIR [--frames 48] [--threads 2] [--repeat 3]

Loads only the speech tokenizer (CHECKPOINT_DIR/speech_tokenizer), decodes `frames` frames of
seeded random codes once to warm up, times `repeat` more decodes, then profiles one decode with
torch.profiler and prints the top ops by self CPU time. The decode is the one the official pipeline
runs (`speech_tokenizer.decode`, one chunk for up to 300 frames).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from q3build.speech.model.reference import _stub_torchaudio

    _stub_torchaudio()
    import torch
    from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer

    torch.set_num_threads(a.threads)
    tok = Qwen3TTSTokenizer.from_pretrained(str(Path(a.checkpoint) / "speech_tokenizer"), dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2048, (a.frames, 16), generator=g)
    with torch.inference_mode():
        tok.decode({"audio_codes": codes})
        times = []
        for _ in range(a.repeat):
            t = time.perf_counter()
            tok.decode({"audio_codes": codes})
            times.append((time.perf_counter() - t) * 1000)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.frames} frames: decode ms "
              f"{', '.join(f'{x:.0f}' for x in times)} (best {min(times):.0f}, {min(times) / a.frames:.1f} ms/frame)")
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            tok.decode({"audio_codes": codes})
    ka = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ka)
    print(f"profiled decode: self CPU total {total / 1000:.0f} ms")
    print("| # | op | calls | self CPU ms | % |\n|---|---|---|---|---|")
    for i, e in enumerate(sorted(ka, key=lambda e: -e.self_cpu_time_total)[:a.top], 1):
        print(f"| {i} | {e.key} | {e.count} | {e.self_cpu_time_total / 1000:.1f} | {100 * e.self_cpu_time_total / total:.1f} |")
    print()
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20,
                                                             max_name_column_width=40, max_shapes_column_width=60))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
