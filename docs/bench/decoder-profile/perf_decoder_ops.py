"""Attribute a `perf record --call-graph dwarf` profile of llama-tts to the codec decoder's ggml ops.

Usage: perf script -i perf.data -F tid,time,ip,sym > perf.txt
       python perf_decoder_ops.py perf.txt [--top 15]

The decoder runs on the main thread inside decode_gen_wav (mtmd-helper-gen.cpp); the OpenMP worker
threads' call chains do not show which graph they compute, so a worker sample counts as decoder time
when it falls inside an interval in which the main thread's samples are under decode_gen_wav.
Each decoder sample is charged to the nearest ggml_compute_forward_<op> frame of its chain (the op),
and separately to its leaf symbol; samples outside any op (barriers, OpenMP waits, graph set-up) are
named by their leaf.
"""

from __future__ import annotations

import argparse
import collections
import re

DECODER_MARK = "decode_gen_wav"
OP_RE = re.compile(r"ggml_compute_forward_([a-z0-9_]+)")


def samples(path):
    tid = t = None
    frames = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if not line.strip():
                if tid is not None:
                    yield tid, t, frames
                tid, frames = None, []
                continue
            if not line.startswith("\t"):
                head = line.split()
                tid, t = int(head[0]), float(head[1].rstrip(":"))
                frames = []
            else:
                parts = line.strip().split(None, 1)
                sym = parts[1] if len(parts) > 1 else "?"
                sym = re.sub(r"\s+\([^()]*\)$", "", sym)       # drop the "(dso)" tail
                sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
                frames.append(sym)
    if tid is not None:
        yield tid, t, frames


def leaf_name(sym: str) -> str:
    if "tinyBLAS_Q0" in sym:
        return "tinyBLAS q8_0 GEMM (llamafile sgemm)"
    if "tinyBLAS" in sym:
        m = re.search(r"tinyBLAS<(\d+), [^,]+, [^,]+, ([a-z0-9_]+), ([a-z0-9_]+), float>", sym)
        return f"tinyBLAS GEMM {m.group(2)} x {m.group(3)}" if m else "tinyBLAS GEMM"
    if sym.startswith("gomp_") or "GOMP" in sym or sym == "[unknown]":
        return "libgomp (OpenMP barrier / spin wait; unresolved)"
    return sym.split("(")[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--log", help="llama-tts -v log: take the decoder intervals from its 'decoded N of a "
                                  "B-frame batch in X ms' lines (timestamps from the log's start)")
    a = ap.parse_args()
    rows = list(samples(a.script))
    main_tid = min(tid for tid, _, _ in rows)
    # decoder intervals from the main thread's samples: a sample under decode_gen_wav is decoder, one whose
    # chain resolves to nothing but libgomp/unknown frames (an OpenMP barrier wait, unwinding stops there)
    # is neutral, anything else (talker, code predictor, logging) ends the interval
    def kind(fr):
        if any(DECODER_MARK in f for f in fr):
            return "dec"
        if all(f == "[unknown]" or f.startswith("gomp_") for f in fr):
            return "neutral"
        return "other"

    mains = sorted((t, kind(fr)) for tid, t, fr in rows if tid == main_tid)
    intervals, start, last_dec = [], None, None
    for t, k in mains:
        if k == "dec":
            start = t if start is None else start
            last_dec = t
        elif k == "other" and start is not None:
            intervals.append((start, last_dec))
            start = None
    if start is not None:
        intervals.append((start, last_dec))
    slack = 0.004
    if a.log:
        # the log clock starts at common_log_main(), the process's first sampled function
        t0 = min((t for tid, t, fr in rows if any("common_log_main" in f for f in fr)),
                 default=min(t for tid, t, fr in rows if tid == main_tid))
        intervals = []
        for line in open(a.log, errors="replace"):
            m = re.match(r"(\d+)\.(\d+)\.(\d+)\.(\d+) D mtmd_helper_gen_audio: decoded \d+ of a \d+-frame batch "
                         r"in ([0-9.]+) ms", line)
            if m:
                end = t0 + int(m.group(1)) * 60 + int(m.group(2)) + int(m.group(3)) / 1e3 + int(m.group(4)) / 1e6
                intervals.append((end - float(m.group(5)) / 1e3, end))
        slack = 0.0
    outside = collections.Counter()

    def in_decoder(t):
        return any(s - slack <= t <= e + slack for s, e in intervals)

    by_op, by_leaf, n_all, n_dec = collections.Counter(), collections.Counter(), 0, 0
    per_thread = collections.Counter()
    for tid, t, fr in rows:
        n_all += 1
        dec = in_decoder(t)
        if not dec:
            op = next((OP_RE.search(f).group(1) for f in fr if OP_RE.search(f)), None)
            if op in ("im2col", "snake_fused", "col2im_1d"):
                outside[op] += 1
            continue
        n_dec += 1
        per_thread[tid] += 1
        leaf = leaf_name(fr[0]) if fr else "?"
        by_leaf[leaf] += 1
        op = next((OP_RE.search(f).group(1) for f in fr if OP_RE.search(f)), None)
        if op in ("mul_mat", "mul_mat_one_chunk"):
            # name the GEMM kernel under the op
            kern = next((leaf_name(f) for f in fr if "tinyBLAS" in f), None) or leaf
            op = f"mul_mat [{kern}]"
        by_op[op or f"(no op) {leaf}"] += 1
    span = sum(e - s for s, e in intervals)
    print(f"samples: {n_all} total, {n_dec} in the decoder ({100 * n_dec / max(n_all, 1):.1f} %), "
          f"{len(intervals)} decoder intervals, {span:.2f} s of main-thread decoder time; threads {dict(per_thread)}")
    print(f"decoder-only ops sampled outside the intervals (alignment check): {dict(outside)}")
    for title, c in (("by ggml op (nearest ggml_compute_forward_* frame)", by_op), ("by leaf symbol", by_leaf)):
        print(f"\n{title}:\n| # | {'op' if 'op' in title else 'symbol'} | samples | % of decoder |\n|---|---|---|---|")
        for i, (k, v) in enumerate(c.most_common(a.top), 1):
            print(f"| {i} | {k} | {v} | {100 * v / max(n_dec, 1):.1f} |")


if __name__ == "__main__":
    main()
