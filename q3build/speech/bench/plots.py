"""The performance page's pictures, drawn with matplotlib from the same bench JSON as its tables.

``write_plots(runs, out_dir)`` writes one PNG per measurement a run holds and returns what it wrote
(caption, file), in page order; a run without a measurement gets no picture of it:

- per-stage stacked bars, ours vs the reference, per quantisation (``configs[].ours.stages``,
  ``configs[].reference.stages``): milliseconds per frame of the prompt (spread over the frames), the
  talker step, the code predictor and the codec decoder;
- time to first audio through the server, cold and warm (``configs[].server.ttfa_ms``, ``ttfa_warm_ms``);
- the codec decoder's cost curve (``decoder_curve[].curve``: ms per frame by batch size);
- throughput against concurrent streams (``concurrency[]``: ``streams`` and ``audio_s_per_s``, seconds
  of audio delivered per wall second over all streams).

PNG files carry no time stamp or version, so the same JSON gives the same bytes with one matplotlib.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

STAGES = (("prompt", "prompt (per frame)"), ("talker_ms_per_step", "talker step"),
          ("predictor_ms_per_frame", "code predictor"), ("decode_ms_per_frame", "codec decoder"))
COLOURS = ("#9aa5b1", "#2563eb", "#f59e0b", "#10b981")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
                         "svg.hashsalt": "q3build", "figure.dpi": 100})
    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-") or "run"


def _per_frame(st: Mapping | None, frames: int | None) -> list[float] | None:
    if not st or st.get("talker_ms_per_step") is None:
        return None
    prompt = (st.get("prompt_ms") or 0.0) / frames if frames else 0.0
    return [prompt] + [float(st.get(k) or 0.0) for k, _ in STAGES[1:]]


def _save(plt, fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)


def _finish(plt, fig, ax, path: Path, title: str, grid_axis: str = "both") -> bool:
    """The common end of a one-axis plot: grid, legend, title, written to path."""
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.legend(frameon=False)
    ax.set_title(title)
    _save(plt, fig, path)
    return True


def stages_plot(plt, run: Mapping, path: Path) -> bool:
    threads = sorted({c["threads"] for c in run["configs"] if _per_frame(c["ours"].get("stages"), c["ours"].get("frames"))})
    if not threads:
        return False
    fig, axes = plt.subplots(1, len(threads), figsize=(4.2 * len(threads), 3.4), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], threads):
        configs = [c for c in run["configs"] if c["threads"] == t]
        labels, bars, ref = [], [], None
        for c in configs:
            frames = c["ours"].get("frames")
            ours = _per_frame(c["ours"].get("stages"), frames)
            if ours:
                labels.append(f"{c['quant']}\nours")
                bars.append(ours)
            r = c.get("reference") or {}
            ref = ref or _per_frame(r.get("stages"), r.get("frames") or frames)
        if ref:   # the reference runs f32 whatever our quantisation: one bar per thread count
            labels.append("reference\n(f32)")
            bars.append(ref)
        x = range(len(bars))
        bottom = [0.0] * len(bars)
        for i, (_, name) in enumerate(STAGES):
            vals = [b[i] for b in bars]
            ax.bar(x, vals, bottom=bottom, color=COLOURS[i], label=name, width=0.7)
            bottom = [a + b for a, b in zip(bottom, vals)]
        ax.set_xticks(list(x), labels)
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("ms per frame (80 ms of audio)")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(f"{run.get('shape')} shape: time per frame by stage, ours (llama-tts) vs the reference", y=1.03)
    _save(plt, fig, path)
    return True


def ttfa_plot(plt, run: Mapping, path: Path) -> bool:
    rows = [c for c in run["configs"] if (c.get("server") or {}).get("ttfa_ms") is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.2))
    x = list(range(len(rows)))
    cold = [c["server"]["ttfa_ms"] for c in rows]
    warm = [c["server"].get("ttfa_warm_ms") for c in rows]
    ax.bar([i - 0.2 for i in x], cold, width=0.4, color=COLOURS[1], label="cold (first request)")
    if any(w is not None for w in warm):
        ax.bar([i + 0.2 for i in x], [w or 0.0 for w in warm], width=0.4, color=COLOURS[3], label="warm")
    ax.set_xticks(x, [f"{c['quant']}\n{c['threads']} thr" for c in rows])
    ax.set_ylabel("ms to first audio")
    return _finish(plt, fig, ax, path, f"{run.get('shape')} shape: time to first audio through llama-server (streamed)",
                   grid_axis="y")


def decoder_plot(plt, run: Mapping, path: Path) -> bool:
    curves = [c for c in run.get("decoder_curve") or [] if c.get("curve")]
    if not curves:
        return False
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for c in curves:
        pts = sorted((int(n), p["ms_per_frame"]) for n, p in c["curve"].items())
        ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o",
                label=f"{c.get('quant', '?')}, {c.get('threads', '?')} thr")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("frames per decoder call")
    ax.set_ylabel("ms per frame")
    ax.set_ylim(bottom=0)
    return _finish(plt, fig, ax, path, f"{run.get('shape')} shape: codec decoder cost by batch size")


def concurrency_plot(plt, run: Mapping, path: Path) -> bool:
    rows = [r for r in run.get("concurrency") or [] if r.get("streams") and r.get("audio_s_per_s") is not None]
    if not rows:
        return False
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        label = ", ".join(str(x) for x in (r.get("quant"), f"{r['threads']} thr" if r.get("threads") else None) if x)
        series.setdefault(label or "llama-server", []).append((int(r["streams"]), float(r["audio_s_per_s"])))
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for label, pts in series.items():
        pts.sort()
        ax.plot([n for n, _ in pts], [v for _, v in pts], marker="o", label=label)
    top = max(n for pts in series.values() for n, _ in pts)
    ax.axhline(1.0, color="#999", linestyle=":", linewidth=1)
    ax.set_xticks(sorted({n for pts in series.values() for n, _ in pts}))
    ax.set_xlim(0.5, top + 0.5)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("audio seconds per second (all streams)")
    ax.set_ylim(bottom=0)
    return _finish(plt, fig, ax, path, f"{run.get('shape')} shape: throughput vs concurrent streams")


PLOTS = (("stages", stages_plot, "time per frame by stage, ours vs the reference"),
         ("ttfa", ttfa_plot, "time to first audio, cold and warm"),
         ("decoder", decoder_plot, "codec decoder cost curve"),
         ("concurrency", concurrency_plot, "throughput vs concurrent streams"))


def write_plots(runs: Sequence[Mapping], out_dir: Path, names: Sequence[str] = ()) -> list[list[tuple[str, str]]]:
    """Draw every plot the runs hold into out_dir, files named ``<name>-<plot>.png`` (``names``: one per
    run, e.g. the JSON file's stem; default ``<n>-<shape>``); per run, the (caption, file name) written.
    Old PNGs in out_dir are removed first, so a plot whose measurement left the JSON goes too."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.png"):
        old.unlink()
    written: list[list[tuple[str, str]]] = []
    for i, run in enumerate(runs):
        mine = []
        for name, draw, caption in PLOTS:
            stem = _slug(names[i]) if i < len(names) else f"{i + 1}-{_slug(str(run.get('shape', 'run')))}"
            file = f"{stem}-{name}.png"
            if draw(plt, run, out_dir / file):
                mine.append((caption, file))
        written.append(mine)
    return written
