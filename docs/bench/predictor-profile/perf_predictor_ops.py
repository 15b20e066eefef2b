"""Attribute a `perf record --call-graph dwarf` profile of llama-tts to the code predictor's ggml ops.

Usage: perf script -i perf.data -F tid,time,ip,sym > perf.txt
       python perf_predictor_ops.py perf.txt [--top 20]

The code predictor (one clip graph per frame, CLIP_GEN_PROCESS_GEN_CODE) runs on the main thread under
mtmd_gen_audio_process called from step_gen; the codec decoder also runs under step_gen, but inside
decode_gen_wav. The ggml thread pool's worker's call chains do not say which graph they compute, so a
worker sample counts as predictor time when it falls inside an interval in which the main thread's
samples are predictor samples. Each predictor sample is charged to the nearest
ggml_compute_forward_<op> frame of its chain (a mul_mat is split by the kernel under it: the vec_dot,
the activation quantisation, tinyBLAS); samples outside any op are named by the function that
holds them (ggml_barrier, graph build, allocation).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

# the `perf script` parser (samples as (tid, time, [symbols, leaf first])) and the op pattern are the
# decoder profile's
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "decoder-profile"))
from perf_decoder_ops import OP_RE, samples  # noqa: E402


def kind(fr):
    if any("decode_gen_wav" in f or "flush_gen_wav" in f for f in fr):
        return "dec"
    if all(f == "[unknown]" for f in fr) or not any(f in ("main", "_start") for f in fr):
        return "neutral"   # unwinding stopped short (8 KiB stack copies): which graph is unknown
    if any("mtmd_gen_audio_process" in f for f in fr):
        return "pred"
    return "other"


def kernel_name(sym: str) -> str:
    if "tinyBLAS_Q0" in sym:
        return "tinyBLAS q0 GEMM"
    if "tinyBLAS" in sym:
        return "tinyBLAS GEMM"
    return sym.split("(")[0].replace(" (inlined)", "")


def named_outside_op(fr):
    """a sample under no ggml_compute_forward_*: the first telling function of its chain"""
    for f in fr:
        for key in ("ggml_barrier", "ggml_graph_compute_thread", "ggml_graph_compute_check_for_work",
                    "ggml_graph_compute_poll_for_work", "build_gen_code", "clip_graph", "ggml_gallocr",
                    "ggml_backend_sched_split_graph", "ggml_backend_sched_alloc_graph", "ggml_graph_plan",
                    "ggml_backend_sched_reserve", "ggml_init", "ggml_free", "malloc", "free", "memset", "memcpy"):
            if key in f:
                return key
    return fr[0] if fr else "?"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("--top", type=int, default=22)
    ap.add_argument("--single-thread", action="store_true",
                    help="a -t 1 run: classify every sample by its own chain (talker: llama_context::process_ubatch; "
                         "predictor; decoder), no intervals, and print the talker's table too")
    a = ap.parse_args()
    rows = list(samples(a.script))
    if a.single_thread:
        by_chain(rows, a.top)
        return
    main_tid = min(tid for tid, _, _ in rows)
    mains = sorted((t, kind(fr)) for tid, t, fr in rows if tid == main_tid)
    intervals, start, last = [], None, None
    for t, k in mains:
        if k == "pred":
            start = t if start is None else start
            last = t
        elif k in ("dec", "other") and start is not None:
            intervals.append((start, last))
            start = None
    if start is not None:
        intervals.append((start, last))
    import bisect
    starts = [s for s, _ in intervals]

    def in_pred(t, slack=0.002):
        i = bisect.bisect_right(starts, t + slack) - 1
        return i >= 0 and t <= intervals[i][1] + slack

    by_op, by_leaf, per_thread = collections.Counter(), collections.Counter(), collections.Counter()
    n_pred = 0
    for tid, t, fr in rows:
        if not in_pred(t):
            continue
        if tid == main_tid and kind(fr) not in ("pred", "neutral"):
            continue
        n_pred += 1
        per_thread[tid] += 1
        by_leaf[kernel_name(fr[0]) if fr else "?"] += 1
        op = next((OP_RE.search(f).group(1) for f in fr if OP_RE.search(f)), None)
        if op is None:
            by_op[f"(no op) {named_outside_op(fr)}"] += 1
            continue
        if op.startswith("mul_mat"):
            kern = next((kernel_name(f) for f in fr if "tinyBLAS" in f), None) or kernel_name(fr[0])
            if "quantize_row" in kern or "from_float" in kern:
                op = f"mul_mat: activation quantisation [{kern}]"
            else:
                op = f"mul_mat [{kern}]"
        by_op[op] += 1
    span = sum(e - s for s, e in intervals)
    print(f"samples: {len(rows)} total, {n_pred} in the code predictor; {len(intervals)} predictor intervals, "
          f"{span:.2f} s of main-thread predictor time; samples per thread {dict(per_thread)}")
    no_barrier = n_pred - sum(v for k, v in by_op.items() if "ggml_barrier" in k)
    for title, c in (("by ggml op (nearest ggml_compute_forward_* frame)", by_op), ("by leaf symbol", by_leaf)):
        print(f"\n{title}:\n| # | {'op' if 'op' in title else 'symbol'} | samples | % of predictor | "
              f"% without barrier waits |\n|---|---|---|---|---|")
        for i, (k, v) in enumerate(c.most_common(a.top), 1):
            nb = "" if "barrier" in k else f"{100 * v / max(no_barrier, 1):.1f}"
            print(f"| {i} | {k} | {v} | {100 * v / max(n_pred, 1):.1f} | {nb} |")


def op_of(fr):
    op = next((OP_RE.search(f).group(1) for f in fr if OP_RE.search(f)), None)
    if op is None:
        return f"(no op) {named_outside_op(fr)}"
    if op.startswith("mul_mat"):
        kern = next((kernel_name(f) for f in fr if "tinyBLAS" in f), None) or kernel_name(fr[0])
        if "quantize_row" in kern or "from_float" in kern:
            return f"mul_mat: activation quantisation [{kern}]"
        return f"mul_mat [{kern}]"
    return op


def by_chain(rows, top):
    stages = {"predictor": collections.Counter(), "talker": collections.Counter()}
    n_unknown = 0
    for _, _, fr in rows:
        k = kind(fr)
        if k == "pred":
            stages["predictor"][op_of(fr)] += 1
        elif any("process_ubatch" in f for f in fr):   # unambiguous even when truncated
            stages["talker"][op_of(fr)] += 1
        elif k == "neutral":
            n_unknown += 1
    print(f"samples: {len(rows)}; truncated chains (not attributed): {n_unknown}")
    for name, c in stages.items():
        n = sum(c.values())
        print(f"\n{name}: {n} samples\n| # | op | samples | % |\n|---|---|---|---|")
        for i, (k, v) in enumerate(c.most_common(top), 1):
            print(f"| {i} | {k} | {v} | {100 * v / max(n, 1):.1f} |")


if __name__ == "__main__":
    main()
