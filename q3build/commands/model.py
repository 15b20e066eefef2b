"""Qwen3-TTS model fixtures and conversion.

  q3build model tiny --variant base|custom_voice|voice_design --out DIR [--seed N] [--shape tiny]
      a random checkpoint in the released Hugging Face layout (deterministic by seed)
  q3build model convert HF_DIR --out DIR [--outtype f32|f16|q8_0|q4_0]
      talker GGUF + mmproj GGUF with the synced tree's own convert_hf_to_gguf.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from q3build import ui
from q3build.commands._common import print_json

NAME = "model"
HELP = "make tiny Qwen3-TTS checkpoints and convert checkpoints to GGUF"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    t = sub.add_parser("tiny", help="write a random checkpoint in the released layout")
    t.add_argument("--variant", required=True, choices=("base", "custom_voice", "voice_design"))
    t.add_argument("--shape", default="tiny", choices=("tiny", "0.6b", "1.7b"),
                   help="geometry: tiny (tests) or the released sizes (benchmarks; large)")
    t.add_argument("--out", required=True, metavar="DIR")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--json", action="store_true", help="list the files with sha256 on stdout")
    c = sub.add_parser("convert", help="convert a Hugging Face checkpoint to talker + mmproj GGUF")
    c.add_argument("hf_dir", metavar="HF_DIR")
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--outtype", default="f32", choices=("f32", "f16", "q8_0", "q4_0"))
    c.add_argument("--target", default="host", help="target whose build provides llama-quantize (q4_0)")
    c.add_argument("--json", action="store_true")
    r = sub.add_parser("parity", help="compare our build with the official implementation, stage by stage")
    r.add_argument("hf_dir", metavar="HF_DIR", help="the checkpoint (Hugging Face layout)")
    r.add_argument("--model", required=True, metavar="DIR", help="its converted model directory")
    r.add_argument("--target", default="host", help="target whose staged llama-tts is compared")
    r.add_argument("--layout", default="nonstreaming", choices=("nonstreaming", "streaming"))
    r.add_argument("--frames", type=int, default=30)
    r.add_argument("--text", default="Hello from a tiny model.")
    r.add_argument("--language", default="english")
    r.add_argument("--reference-wav", metavar="WAV", help="speaker reference (Base)")
    r.add_argument("--reference-text", metavar="TEXT",
                   help="the reference's transcript (Base): in-context cloning, its codes compared too")
    r.add_argument("--speaker", help="CustomVoice speaker")
    r.add_argument("--instruct", help="VoiceDesign / CustomVoice instruction")
    r.add_argument("--repetition-penalty", type=float, metavar="P",
                   help="greedy with this penalty (default: the checkpoint's generation_config.json, as qwen-tts)")
    r.add_argument("--no-server", dest="server", action="store_false",
                   help="compare llama-tts only, not the staged llama-server's /v1/audio/speech as well")
    r.add_argument("--json", action="store_true")


def run(args, ctx) -> int:
    if args.model_command == "tiny":
        return _tiny(args, ctx)
    if args.model_command == "parity":
        return _parity(args, ctx)
    from q3build.speech.model import convert
    result = convert.convert(ctx.project, Path(args.hf_dir), Path(args.out), args.outtype, ctx.env,
                             target=args.target)
    if args.json:
        print_json(result)
    else:
        for f in result["files"]:
            ui.info(f"{f['path']}  {f['size'] / 1e6:.1f} MB")
    return 0


def _tiny(args, ctx) -> int:
    from q3build.speech.model import shapes, tiny

    out = Path(args.out)
    files = tiny.write_checkpoint(out, shapes.SHAPES[args.shape], args.variant, seed=args.seed,
                                  vocab_cache=ctx.project.cache / "vocab")
    rows = [{"path": f.relative_to(out).as_posix(), "size": f.stat().st_size,
             "sha256": hashlib.sha256(f.read_bytes()).hexdigest()} for f in files]
    if args.json:
        print_json({"dir": str(out), "variant": args.variant, "shape": args.shape, "seed": args.seed, "files": rows})
    else:
        for r in rows:
            ui.info(f"{r['path']:<40} {r['size'] / 1e6:8.2f} MB  {r['sha256'][:16]}")
    return 0


def _parity(args, ctx) -> int:
    import json as _json

    from q3build.errors import InputError
    from q3build.speech.model import parity

    hf = Path(args.hf_dir)
    config = _json.loads((hf / "config.json").read_text()) if (hf / "config.json").is_file() else None
    if config is None:
        raise InputError(f"{hf}: no config.json (not a checkpoint directory)")
    bins = ctx.project.stage_dir(args.target) / "bin"
    llama_tts, llama_server = bins / "llama-tts", bins / "llama-server"
    for exe in (llama_tts, llama_server) if args.server else (llama_tts,):
        if not exe.is_file():
            raise InputError(f"{exe} not found", hint=f"run `q3build make --target {args.target}` first")
    penalty = args.repetition_penalty
    if penalty is None:
        penalty = parity.official_repetition_penalty(hf)
    elif not 0.5 <= penalty <= 2.0:
        raise InputError(f"--repetition-penalty {penalty:g} is outside 0.5 .. 2 (what the server accepts)")
    req = parity.Request(checkpoint=hf.resolve(), model_dir=Path(args.model).resolve(),
                         variant=config.get("tts_model_type", "base"), text=args.text, language=args.language,
                         layout=args.layout, frames=args.frames,
                         reference_wav=Path(args.reference_wav).resolve() if args.reference_wav else None,
                         reference_text=args.reference_text, speaker=args.speaker, instruct=args.instruct,
                         repetition_penalty=penalty, server=args.server)
    if args.reference_text is not None and not args.reference_text.strip():
        raise InputError("--reference-text is empty (leave it out for x-vector cloning)")
    if args.reference_text and not args.reference_wav:
        raise InputError("--reference-text needs --reference-wav (the recording it transcribes)")
    report = parity.parity(req, llama_tts, ctx.env, llama_server=llama_server)
    if args.json:
        print_json(report.to_json())
    else:
        for s in report.stages:
            ui.info(f"{'ok  ' if s.ok else 'DIFF'} {s.name:<14} {s.detail}")
        ui.info("first divergence: " + (report.first_divergence or "none"))
    return 0 if report.first_divergence is None else 6
