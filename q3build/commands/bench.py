"""Speech performance of a build at a checkpoint's shape, side by side with the official reference.

  q3build bench --target host --model HF_DIR [--quant f16,q8_0] [--threads 1,all] [--frames 48]
                [--json] [--out FILE]
      converts the checkpoint to each quantisation (cached under the work dir), runs llama-tts for a
      fixed frame count at each quantisation and thread count, the official qwen-tts (torch CPU) on
      the same checkpoint at each thread count, and llama-server's streaming speech route for the
      time to first audio; reports per-stage times, RTF, TTFA, peak RSS and the weight-read rate
      against a STREAM-style read bandwidth measured in the same run
  q3build bench --target host --model HF_DIR --slots 1,4 [--quant q8_0] [--threads 2] [--frames 12]
      memory per speech slot: llama-server with --tts-slots N for each N, N short requests at once, its
      peak RSS (idle and after them) and what each slot reserves (talker KV cache, compute buffer), at the
      first --quant and --threads; no speed runs
  q3build bench --target host --model HF_DIR --streams 1,2,4,8 [--quant q8_0] [--threads 2] [--frames 24]
      throughput of concurrent streams: llama-server with --tts-slots N for each N, warmed, then N clients at
      once each streaming a fixed-frame request (own text, own seed); aggregate audio seconds per wall
      second, per-stream RTF and TTFA, peak RSS (q3build.speech.bench.streams); no speed runs
  q3build bench --markdown RUN.json [RUN.json ...] [--out docs/performance.md]
      the performance tables from bench JSON; with --out also the plots (matplotlib), written beside the
      page into docs/performance/*.png and embedded in it; `--streams` documents become a section after
      the speed runs, `--slots` documents are rendered on their own
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from q3build import ui
from q3build.commands._common import print_json
from q3build.errors import InputError

NAME = "bench"
HELP = "measure speech performance (RTF, stages, TTFA, RSS, bandwidth) against the official reference"


def add_arguments(p) -> None:
    from q3build.speech.argv import FLASH_ATTN, SERVER_FLASH_ATTN

    p.add_argument("--target", "-t", default="host", metavar="T", help="target whose staged binaries run (host)")
    p.add_argument("--model", metavar="HF_DIR", help="checkpoint in the released Hugging Face layout")
    p.add_argument("--quant", default="f32,f16,q8_0,q4_0", help="talker quantisations, comma separated")
    p.add_argument("--threads", default="1,all", help="thread counts, comma separated ('all' = every CPU)")
    p.add_argument("--frames", type=int, default=48, help="frames per run (80 ms each; EOS is ignored)")
    p.add_argument("--text", default="Performance depends on tensor shapes, not on weight values.")
    p.add_argument("--language", default="english")
    p.add_argument("--speaker", help="CustomVoice speaker (default: the checkpoint's first)")
    p.add_argument("--instruct", help="VoiceDesign instruction")
    p.add_argument("--reference-wav", metavar="WAV", help="Base: the voice to clone")
    p.add_argument("--reference-text", metavar="TEXT",
                   help="Base: its transcript; our runs clone in context and report the speech encoder's time "
                        "for the recording (reference_encode); the official side stays x-vector")
    p.add_argument("--gguf-dir", metavar="DIR", help="where converted models are kept (default: WORK/bench/NAME)")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="runs per configuration, the fastest is kept (default 1)")
    p.add_argument("--no-reference", action="store_true", help="skip the official implementation")
    p.add_argument("--board", metavar="ssh://[user@]host[:port]",
                   help="run the packaged build on that board over ssh and report our own figures there (RTF, "
                        "TTFA, stages, RSS of llama-server; no reference); see `validate --board`")
    p.add_argument("--no-server", action="store_true", help="skip the llama-server TTFA measurement")
    p.add_argument("--repack", action=argparse.BooleanOptionalAction, default=True,
                   help="let ggml-cpu repack weights (q4_0 -> q4_0_8x8 on x86) as llama-server does by default, "
                        "so the figures are the product's (default: on); --no-repack compares with runs before "
                        "session 9, which all ran without")
    p.add_argument("--flash-attn", choices=FLASH_ATTN, default=SERVER_FLASH_ATTN,
                   help="llama's flash attention for the talker and the mmproj graphs (-fa): auto, as the servers "
                        "run, is on for the CPU (default: auto); off compares with runs before session 14, which "
                        "all ran with -fa off")
    p.add_argument("--decoder-curve", type=int, default=64, metavar="N",
                   help="measure the codec decoder's cost per call for batches of 1, 2, 4 … N frames "
                        "(a power of two; 0 skips it; default 64)")
    p.add_argument("--bandwidth-mib", type=int, default=1024, help="array size of the read-bandwidth test")
    p.add_argument("--json", action="store_true", help="print the result document on stdout")
    p.add_argument("--out", metavar="FILE", help="write the result (JSON, or Markdown with --markdown) to FILE")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="an observation to keep with the result (rendered under its table); repeatable")
    p.add_argument("--markdown", nargs="+", metavar="RUN_JSON", help="render bench JSON files as Markdown")
    p.add_argument("--slots", metavar="N,M", help="measure llama-server's peak RSS with each number of speech slots "
                   "(N requests at once for N slots) instead of the speed runs, e.g. 1,4")
    p.add_argument("--streams", metavar="N,M", help="aggregate throughput of N concurrent streams (llama-server "
                   "with --tts-slots N, N streamed requests at once) for each N instead of the speed runs, "
                   "e.g. 1,2,4,8")


def parse_threads(spec: str, cpus: int) -> tuple[int, ...]:
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        n = cpus if part == "all" else int(part) if part.isdigit() else 0
        if n <= 0:
            raise InputError(f"--threads {spec!r}: expected positive integers or 'all'")
        if n not in out:
            out.append(n)
    return tuple(out)


def parse_quants(spec: str) -> tuple[str, ...]:
    from q3build.speech.bench.runs import QUANTS

    out = tuple(q.strip() for q in spec.split(",") if q.strip())
    bad = [q for q in out if q not in QUANTS]
    if bad or not out:
        raise InputError(f"--quant {spec!r}: expected some of {', '.join(QUANTS)}")
    return out


def run(args, ctx) -> int:
    from q3build.speech import argv as speech_argv
    from q3build.speech.bench import report, runs

    if args.markdown:
        docs = []
        for f in args.markdown:
            try:
                docs.append(json.loads(Path(f).read_text()))
            except (OSError, ValueError) as e:
                raise InputError(f"{f}: not a bench JSON file ({e})") from None
        names = [Path(f).stem for f in args.markdown]
        kinds = [d.get("kind") if isinstance(d, dict) else None for d in docs]
        if "slots" in kinds:
            if any(k != "slots" for k in kinds):
                raise InputError("--markdown: `bench --slots` documents are rendered on their own, not with speed "
                                 "runs or `--streams` documents")
            from q3build.speech.bench import slots
            text = slots.render_markdown(docs, names=names)
            if args.out:
                Path(args.out).write_text(text)
            else:
                print(text, end="")
            return 0
        # `--streams` documents get their own section after the speed runs' (never rows of their tables)
        from q3build.speech.bench import streams
        stream_docs = [(d, n) for d, n, k in zip(docs, names, kinds) if k == "streams"]
        speed = [(d, n) for d, n, k in zip(docs, names, kinds) if k != "streams"]
        docs, names = [d for d, _ in speed], [n for _, n in speed]
        streams_text = streams.render_markdown([d for d, _ in stream_docs], [n for _, n in stream_docs]) \
            if stream_docs else ""
        if not docs:
            text = "# Concurrent streams\n\n" + streams_text
            if args.out:
                Path(args.out).write_text(text)
            else:
                print(text, end="")
            return 0
        if args.out:
            # the pictures go into a folder named like the page, beside it (docs/performance/*.png)
            out = Path(args.out)
            from q3build.speech.bench import plots
            drawn = plots.write_plots(docs, out.parent / out.stem, names=names)
            text = report.render_markdown(docs, drawn, plots_dir=f"{out.stem}/")
            out.write_text(text + streams_text)
            ui.info(f"wrote {out} and {sum(map(len, drawn))} plot(s) in {out.parent / out.stem}/")
        else:
            print(report.render_markdown(docs) + streams_text, end="")
        return 0
    if args.streams is not None:
        from q3build.speech.bench import streams
        if args.slots:
            raise InputError("--streams and --slots are separate runs: give one of them")
        if args.board:
            raise InputError("--streams runs on this machine (--board measures one stream there)")
        try:
            streams.parse_counts(args.streams)
        except ValueError as e:
            raise InputError(f"--streams {args.streams!r}: {e} (e.g. 1,2,4,8)") from None
    if not args.model:
        raise InputError("--model HF_DIR is required (or --markdown RUN_JSON to render results)")
    if args.frames <= 0:
        raise InputError("--frames must be positive")
    if args.decoder_curve < 0 or (args.decoder_curve & (args.decoder_curve - 1)):
        raise InputError(f"--decoder-curve {args.decoder_curve}: expected 0 or a power of two (1, 2, 4 … 64)")
    if args.board:
        return _on_board(args, ctx)
    if not args.no_reference and not args.slots and not args.streams:
        from q3build.speech import reference
        reference.require("bench (its reference side; --no-reference measures ours alone)")
    hf = Path(args.model).resolve()
    from q3build.speech.model import convert
    config = convert.check_checkpoint(hf)
    variant = config.get("tts_model_type", "base")
    speaker = args.speaker
    if variant == "custom_voice" and not speaker:
        speakers = list(config.get("talker_config", {}).get("spk_id", {}))
        if not speakers:
            raise InputError(f"{hf}: a CustomVoice checkpoint without speakers")
        speaker = speakers[0]
    if variant == "voice_design" and not args.instruct:
        raise InputError("a VoiceDesign checkpoint needs --instruct")
    if variant == "base" and not args.reference_wav:
        raise InputError("a Base checkpoint needs --reference-wav")
    bindir = ctx.project.stage_dir(args.target) / "bin"
    llama_tts = bindir / "llama-tts"
    if not llama_tts.is_file():
        raise InputError(f"{llama_tts} not found", hint=f"run `q3build make --target {args.target}` first")
    server = None
    if not args.no_server:
        server = _speech_server(bindir / "llama-server", ctx.env)
        if server is None:
            ui.warn("llama-server has no speech service (--tts-max-frames); TTFA is not measured")
    if args.reference_text and not args.reference_wav:
        raise InputError("--reference-text needs --reference-wav (the recording it transcribes)")
    if args.slots:
        return _slots(args, ctx, hf, config, speaker)
    if args.streams:
        return _streams(args, ctx, hf, config, speaker)
    voice = speech_argv.Voice(speaker=speaker, instruct=args.instruct,
                              reference_wav=Path(args.reference_wav).resolve() if args.reference_wav else None,
                              reference_text=args.reference_text or None)
    job = runs.Job(text=args.text, frames=args.frames, language=args.language, voice=voice, repack=args.repack,
                   flash_attn=args.flash_attn)
    gguf_root = Path(args.gguf_dir).resolve() if args.gguf_dir else ctx.project.work / "bench" / hf.name
    plan = runs.Plan(checkpoint=hf, gguf_root=gguf_root, llama_tts=llama_tts, llama_server=server, job=job,
                      quants=parse_quants(args.quant), threads=parse_threads(args.threads, os.cpu_count() or 1),
                      reference=not args.no_reference, bandwidth_mib=args.bandwidth_mib,
                      decoder_curve_max=args.decoder_curve, repeat=args.repeat)
    doc = runs.run_bench(ctx.project, plan, ctx.env, target=args.target, log=lambda m: ui.info(f"▶ {m}"))
    doc["notes"] = list(args.note) + doc["notes"]
    if _emit(doc, args):
        for c in doc["configs"]:
            o = c["ours"]
            ref = c.get("reference") or {}
            ttfa = (c.get("server") or {}).get("ttfa_ms")
            ui.info(f"{c['quant']:<5} {c['threads']} thr  RTF {o['rtf']:.2f}"
                    + (f"  reference {ref['rtf']:.2f}  ratio {c['rtf_ratio']:.2f}" if ref.get("rtf") else "")
                    + f"  {o['frames_per_s']:.2f} frames/s" + (f"  TTFA {ttfa:.0f} ms" if ttfa else "")
                    + f"  RSS {o['peak_rss_mib']:.0f} MiB")
            # the per-stage cost of llama-tts and of the server side by side: a penalty that only one of
            # them pays (issue 12: libgomp's sleeping barriers in the server) shows here at any shape
            for who, st in (("llama-tts", o.get("stages")),
                            ("server", ((c.get("server") or {}).get("synthesis") or {}).get("stages"))):
                if st:
                    ui.info(f"  {who:<9} {stages_text(st)}")
    return 0


def stages_text(st: dict) -> str:
    """A per-stage line of the summary: talker ms/step, predictor and decode ms/frame."""
    def ms(key):
        v = st.get(key)
        return "–" if v is None else f"{v:.2f}"
    # short enough for an 80-column console (ui wraps longer lines)
    return (f"talker {ms('talker_ms_per_step')} ms/step  predictor {ms('predictor_ms_per_frame')}  "
            f"decode {ms('decode_ms_per_frame')} ms/frame")


def _speech_server(path: Path, env) -> Path | None:
    """llama-server, if it is built with the speech service (knows --tts-max-frames)."""
    from q3build import proc

    if not path.is_file():
        return None
    m = proc.run_measured([path, "--help"], env, timeout=60)
    return path if "--tts-max-frames" in m.output else None


def _on_board(args, ctx) -> int:
    """Our own figures on a board: each quantisation converted here, served there by the packaged
    launcher at each thread count (the board's CPU count for 'all')."""
    from q3build.commands._common import resolve
    from q3build.release import board as board_mod
    from q3build.speech import argv as speech_argv
    from q3build.speech.bench import runs
    from q3build.speech.model import convert

    address = board_mod.parse(args.board)
    plan, _pin, series = resolve(args, ctx)
    b, machine, archive = board_mod.checked_with_archive(address, ctx.project, plan, series, ctx.env)
    cpus = int(b.run(["getconf", "_NPROCESSORS_ONLN"]).stdout.strip() or 1)
    hf = Path(args.model).resolve()
    config = convert.check_checkpoint(hf)
    speaker = args.speaker or next(iter(config.get("talker_config", {}).get("spk_id", {})), None)
    job = runs.Job(text=args.text, frames=args.frames, language=args.language,
                   voice=speech_argv.Voice(speaker=speaker, instruct=args.instruct),
                   repack=args.repack, flash_attn=args.flash_attn)
    quants, threads = parse_quants(args.quant), parse_threads(args.threads, cpus)
    gguf_root = Path(args.gguf_dir).resolve() if args.gguf_dir else ctx.project.work / "bench" / hf.name
    models = {q: runs.ensure_converted(ctx.project, hf, gguf_root / q, q, ctx.env, "host") for q in quants}
    logs = ctx.project.work / "bench" / "board" / address.slug
    deployed = board_mod.deploy(b, plan, archive, None, machine)
    doc: dict = {"schema": runs.SCHEMA, "checkpoint": str(hf), "shape": runs.shape_name(config),
                 "variant": config.get("tts_model_type"), "frames": args.frames, "text": args.text,
                 "speaker": speaker, "repack": job.repack, "flash_attn": job.flash_attn, "target": plan.target_name,
                 "build": deployed.version,
                 "board": {"address": str(address), "machine": machine, "cpus": cpus, "archive": archive.name},
                 "configs": [], "notes": list(args.note) + [
                     ("measured on the board through the packaged launcher: our own figures only (the official "
                      "reference does not run there)")]}
    try:
        for q in quants:
            for t in threads:
                ui.info(f"▶ board {address}: {q}, {t} thread(s)")
                server = board_mod.bench_config(deployed, models[q], job, t, logs / f"{q}-{t}.log")
                doc["configs"].append({"quant": q, "threads": t, "server": server})
    finally:
        b.remove(deployed.scratch)
    if _emit(doc, args):
        for c in doc["configs"]:
            s, syn = c["server"], c["server"].get("synthesis") or {}
            if s.get("error"):
                ui.info(f"{c['quant']:<5} {c['threads']} thr  not measured: {s['error']}")
                continue
            ui.info(f"{c['quant']:<5} {c['threads']} thr  RTF {syn.get('rtf') or float('nan'):.2f}  "
                    f"TTFA {s['ttfa_ms']:.0f} ms (warm {s['ttfa_warm_ms']:.0f} ms)  RSS {s['peak_rss_mib']} MiB")
    return 0


def _slots(args, ctx, hf: Path, config: dict, speaker: str | None) -> int:
    """`--slots`: peak RSS of llama-server with each number of speech slots (q3build.speech.bench.slots)."""
    from q3build.speech import argv as speech_argv
    from q3build.speech.bench import runs, slots

    try:
        counts = slots.parse_counts(args.slots)
    except ValueError:
        raise InputError(f"--slots {args.slots!r}: expected positive integers, e.g. 1,4") from None
    quant = parse_quants(args.quant)[0]
    threads = parse_threads(args.threads, os.cpu_count() or 1)[0]
    server = _speech_server(ctx.project.stage_dir(args.target) / "bin" / "llama-server", ctx.env)
    if server is None:
        raise InputError(f"{ctx.project.stage_dir(args.target) / 'bin' / 'llama-server'} has no speech service",
                         hint=f"run `q3build make --target {args.target}` first")
    gguf_root = Path(args.gguf_dir).resolve() if args.gguf_dir else ctx.project.work / "bench" / hf.name
    model_dir = runs.ensure_converted(ctx.project, hf, gguf_root / quant, quant, ctx.env, args.target)
    logs = ctx.project.work / "bench" / "slots"
    logs.mkdir(parents=True, exist_ok=True)
    doc: dict = {"schema": runs.SCHEMA, "kind": "slots", "checkpoint": str(hf), "shape": runs.shape_name(config),
                 "variant": config.get("tts_model_type"), "quant": quant, "threads": threads, "frames": args.frames,
                 "text": args.text, "repack": args.repack, "flash_attn": args.flash_attn,
                 "target": args.target, "machine": runs.machine_info(), "runs": [],
                 "notes": list(args.note)}
    for n in counts:
        ui.info(f"▶ llama-server with {n} speech slot(s), {n} request(s) at once")
        try:
            r = slots.measure(server, model_dir, n, ctx.env, threads=threads, frames=args.frames, text=args.text,
                              voice=speaker, instructions=args.instruct,
                              reference_wav=Path(args.reference_wav).resolve() if args.reference_wav else None,
                              reference_text=args.reference_text, log_path=logs / f"{quant}-{n}.log",
                              numerics=speech_argv.bench_numerics(repack=args.repack, flash_attn=args.flash_attn))
        except RuntimeError as e:
            raise runs.BenchError(str(e)) from None
        doc["runs"].append(r)
    doc.update(slots.summarize(doc["runs"]))
    doc["machine"]["loadavg_after"] = round(os.getloadavg()[0], 2)
    if _emit(doc, args):
        for r in doc["runs"]:
            ui.info(f"{r['slots']} slot(s): peak RSS {r['peak_mib']:.0f} MiB ({r['idle_mib']:.0f} MiB idle), "
                    f"{r['requests']} request(s) in {r['wall_s']:.1f} s")
        if "per_extra_slot_mib" in doc:
            ui.info(f"per extra slot: {doc['per_extra_slot_mib']:.0f} MiB peak RSS")
        if "reserved_per_slot_mib" in doc:
            ui.info(f"reserved per slot: {doc['reserved_per_slot_mib']:.1f} MiB (talker KV cache and compute buffer, "
                    f"{doc['cells_per_slot']} cells)")
        m = doc["machine"]
        ui.info(f"{m['cpu']}, {m['cpus']} CPU(s), load {m['loadavg']} -> {m['loadavg_after']}")
    return 0


def _streams(args, ctx, hf: Path, config: dict, speaker: str | None) -> int:
    """`--streams`: aggregate throughput of concurrent streams (q3build.speech.bench.streams)."""
    from q3build import proc
    from q3build.speech import argv as speech_argv
    from q3build.speech.bench import runs, streams

    counts = streams.parse_counts(args.streams)
    quant = parse_quants(args.quant)[0]
    threads = parse_threads(args.threads, os.cpu_count() or 1)[0]
    binary = ctx.project.stage_dir(args.target) / "bin" / "llama-server"
    server = _speech_server(binary, ctx.env)
    if server is None:
        raise InputError(f"{binary} has no speech service", hint=f"run `q3build make --target {args.target}` first")
    gguf_root = Path(args.gguf_dir).resolve() if args.gguf_dir else ctx.project.work / "bench" / hf.name
    model_dir = runs.ensure_converted(ctx.project, hf, gguf_root / quant, quant, ctx.env, args.target)
    logs = ctx.project.work / "bench" / "streams"
    logs.mkdir(parents=True, exist_ok=True)
    ver = proc.run_measured([server, "--version"], ctx.env, timeout=60)
    doc: dict = {"schema": runs.SCHEMA, "kind": "streams", "checkpoint": str(hf), "shape": runs.shape_name(config),
                 "variant": config.get("tts_model_type"), "quant": quant, "threads": threads, "frames": args.frames,
                 "texts": list(streams.TEXTS), "speaker": speaker, "repack": args.repack, "flash_attn": args.flash_attn,
                 "target": args.target,
                 "build": next((ln.strip() for ln in ver.output.splitlines() if ln.startswith("version:")), "?"),
                 "machine": runs.machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": [],
                 "notes": list(args.note)}
    for n in counts:
        ui.info(f"▶ llama-server with {n} speech slot(s), {n} stream(s) at once, {args.frames} frames each")
        try:
            r = streams.measure(server, model_dir, n, ctx.env, threads=threads, frames=args.frames,
                                voice=speaker, instructions=args.instruct,
                                reference_wav=Path(args.reference_wav).resolve() if args.reference_wav else None,
                                reference_text=args.reference_text, log_path=logs / f"{quant}-{n}.log",
                                numerics=speech_argv.bench_numerics(repack=args.repack, flash_attn=args.flash_attn))
        except RuntimeError as e:
            raise runs.BenchError(f"{n} stream(s): {e}") from None
        r["loadavg"] = round(os.getloadavg()[0], 2)
        doc["runs"].append(r)
        f = streams.fmt
        ui.info(f"  {f(r['audio_per_wall_s'], '.3f')} audio s / wall s; RTF {f(r['rtf_mean'])} mean, "
                f"{f(r['rtf_max'])} max; TTFA {f(r['ttfa_ms_mean'], '.0f')} ms mean, {f(r['ttfa_ms_max'], '.0f')} "
                f"ms max; peak RSS {f(r['peak_mib'], '.0f')} MiB; load {r['loadavg']}")
    doc["runs"] = streams.summarize(doc["runs"])
    doc["machine"]["loadavg_after"] = round(os.getloadavg()[0], 2)
    if _emit(doc, args):
        print(streams.render_markdown([doc], [f"{doc['shape']} {quant}"]), end="")
    return 0


def _emit(doc: dict, args) -> bool:
    """Write the result document (--out) and print it (--json); True when the summary is still to print."""
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.json:
        print_json(doc)
    return not args.json
