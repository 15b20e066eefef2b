"""`q3build bench`: speech performance at real model shapes, side by side with the official implementation.

One bench run measures one checkpoint (Hugging Face layout, e.g. `q3build model tiny --shape 0.6b`)
in every requested configuration (talker quantisation × threads) with the staged `llama-tts`, and
the official `qwen-tts` (torch CPU) on the same checkpoint, in the same run, so ratios are taken
under the same machine conditions. Every run generates a fixed number of frames: our side asks for
`-n FRAMES` (random weights practically never pick EOS; the frames actually generated are read from
the log and every per-frame figure uses them), the reference suppresses EOS until the last frame.

Figures per configuration (all times exclude model loading; `process_s` includes it):

  synth_s            prompt + generation + final decode, as the program itself times them
  rtf                synth_s / audio seconds, audio = frames / 12.5 (80 ms per frame)
  frames_per_s       frames / synth_s
  stages             prompt ms, talker ms per step, code predictor ms per frame, codec decode ms per
                     frame (ours: llama-tts's `stages:` line; reference: forward hooks)
  ttfa_ms            POST /v1/audio/speech (streamed) to the first non-empty body chunk (ours only)
  peak_rss_mib        the process's peak resident set (wait4 rusage)
  weight_read_gbps   weight bytes read per frame × frames/s (talker layers + output once, code
                     predictor layers 15 times: one pass per acoustic codebook)
  bandwidth_share    weight_read_gbps / the STREAM-style read bandwidth at the same thread count

The pure functions (parsing, arithmetic, the Markdown table) are separate from the ones that start
processes, so they can be unit tested.
"""
#
# The package, by job:  logs (what llama-tts and the server report, parsed into figures), weights
# (weight bytes a frame reads, from the GGUF headers), bandwidth (the machine's read bandwidth),
# runs (processes: llama-tts, the reference, the server; the whole run), report (docs/performance.md),
# slots (memory per speech slot) and streams (throughput of concurrent streams through llama-server).
