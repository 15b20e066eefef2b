"""Start the staged llama-server with a speech model and check the speech service end to end.

  q3build validate --target T [--model DIR] [--json] [--max-frames N] [--seed N]
  q3build validate --url http://HOST:PORT            (a server that is already running)

Without --model, a tiny random CustomVoice checkpoint is made and converted (f32) with this
project's converter, once per patch series. The server runs natively, or under the target's
emulator for cross targets, bound to 127.0.0.1 on a free port, and is stopped afterwards.
Checks: health, voices, speech-wav (RIFF/WAVE, 24 kHz, mono, 16 bit, duration within the
max_frames bound, RMS above silence, X-Audio-Seconds), determinism (same seed → same bytes),
speech-pcm (the same samples as the wav), speech-flac, speech-mp3-opus (where the build serves them: decoded
to the wav's length), speech-stream (SSE deltas then done),
bad-request (4xx with an OpenAI error); then, when the official qwen-tts is installed, parity of
the staged llama-tts with it on the same checkpoint (`q3build model parity`, first divergence named).
Checks that cannot run here (upstream's server test suite, whose models come from Hugging Face)
are recorded as skipped with the reason. Writes
.q3build/validate/<target>/validation.json; exit 6 when a check fails.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

from rich.table import Table

from q3build import ui
from q3build.commands._common import (
    add_target,
    add_toolchain_options,
    print_json,
    resolve,
)
from q3build.errors import CheckFailed, InputError
from q3build.release import package
from q3build.speech import argv as speech_argv
from q3build.speech import reference, validate
from q3build.speech.facts import MMPROJ, TALKER, missing_model_files
from q3build.speech.server import Server, free_port
from q3build.toolchains import emulation

NAME = "validate"
HELP = "run the staged llama-server with a speech model and check the speech service"

STYLE = {"ok": "green", "failed": "red", "skipped": "yellow"}

UPSTREAM_TESTS_SKIPPED = (
    "upstream's tools/server/tests load their models with --hf-repo from Hugging Face (ggml-org/models, "
    "stories260K, bert-bge-small, ...), which cannot be downloaded here, and they assert on the text those "
    "exact weights generate, so a locally made random model cannot stand in")
PARITY_SPEAKER = "vivian"        # a built-in CustomVoice speaker that is no dialect speaker


def add_arguments(p) -> None:
    add_target(p, required=False)
    add_toolchain_options(p)
    p.add_argument("--model", metavar="DIR", type=Path,
                   help=f"converted model directory ({TALKER} + {MMPROJ}); default: a tiny random one")
    p.add_argument("--url", metavar="URL", help="validate a running server instead of starting the staged one")
    p.add_argument("--board", metavar="ssh://[user@]host[:port]",
                   help="run the packaged archive on that board over ssh (uname -m checked before copying) and "
                        "check it there; honours ~/.ssh/config, extra ssh options in Q3BUILD_SSH_OPTIONS")
    p.add_argument("--max-frames", type=int, default=16, metavar="N", help="frame cap per request (default 16)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--voice", help="voice to use (default: the first one listed)")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="seconds per request and for start-up (default 120 native, 900 emulated)")
    p.add_argument("--out", metavar="FILE", type=Path, help="validation.json path "
                   "(default .q3build/validate/<target>/validation.json)")
    p.add_argument("--no-parity", action="store_true",
                   help="skip the stage-by-stage parity of llama-tts with the official qwen-tts (run by default "
                        "when it is installed, for native targets and validate's own checkpoint)")
    p.add_argument("--json", action="store_true", help="print validation.json on stdout too")


def _model(ctx, args, plan) -> tuple[Path, Path | None]:
    """(converted model dir, its Hugging Face checkpoint when validate made it)."""
    if args.model is not None:
        d = args.model
        missing = missing_model_files(d)
        if missing:
            raise InputError(f"--model {d}: no {' or '.join(missing)} in it",
                             hint="make one with `q3build model tiny … && q3build model convert …`")
        return d, None
    from q3build.speech.model import convert, shapes, tiny

    root = ctx.project.work / "validate" / "model" / f"custom_voice-{plan.series_digest[:12]}"
    gguf = root / "gguf"
    if missing_model_files(gguf):
        with ui.step("Making a tiny CustomVoice checkpoint for validation"):
            tiny.write_checkpoint(root / "hf", shapes.SHAPES["tiny"], "custom_voice", seed=0,
                                  vocab_cache=ctx.project.cache / "vocab")
        convert.convert(ctx.project, root / "hf", gguf, "f32", ctx.env)
    return gguf, root / "hf"


def _parity(ctx, args, plan, model: Path, hf: Path | None) -> validate.Check:
    """The staged llama-tts and llama-server against the official implementation on validate's own
    checkpoint, stage by stage (`q3build model parity`), when the reference is installed."""
    if args.no_parity:
        return validate.Check("parity", "skipped", "--no-parity")
    if plan.target.cross:
        return validate.Check("parity", "skipped", f"target {plan.target_name} is cross-compiled: parity runs the "
                                                   "reference and llama-tts side by side natively only")
    if hf is None:
        return validate.Check("parity", "skipped", "--model given: its Hugging Face checkpoint is unknown "
                                                   "(run `q3build model parity HF_DIR --model DIR`)")
    if not reference.installed():
        return validate.Check("parity", "skipped", f"the official qwen-tts is not installed (`{reference.INSTALL}`)")
    from q3build.speech.model import parity

    t0 = time.monotonic()
    with ui.step("Parity of llama-tts and llama-server with the official implementation"):
        req = parity.Request(checkpoint=hf.resolve(), model_dir=model.resolve(), variant="custom_voice",
                             speaker=PARITY_SPEAKER, frames=args.max_frames)
        bin_dir = plan.stage_dir / "bin"
        report = parity.parity(req, bin_dir / "llama-tts", ctx.env, llama_server=bin_dir / "llama-server")
    c = validate.Check("parity", seconds=time.monotonic() - t0)
    names = ", ".join(st.name for st in report.stages)
    if report.first_divergence is None:
        c.detail = f"speaker {PARITY_SPEAKER}, {args.max_frames} frames: {names} within tolerance"
    else:
        c.status, c.detail = "failed", f"first divergence at {report.first_divergence} (speaker {PARITY_SPEAKER})"
    return c


def _on_board(ctx, args, settings, record: dict) -> tuple[list, Path]:
    """The packaged build on a board over ssh: the same HTTP checks, results written here."""
    from q3build.release import board as board_mod

    address = board_mod.parse(args.board)
    plan, _pin, series = resolve(args, ctx)
    b, machine, archive = board_mod.checked_with_archive(address, ctx.project, plan, series, ctx.env)
    settings.timeout = args.timeout or 300.0
    model, _hf = _model(ctx, args, plan)
    out = args.out or package.validation_path(ctx.project, plan.target_name).parent / "board" / address.slug \
        / "validation.json"
    log_file = out.parent / "server.log"
    deployed = board_mod.deploy(b, plan, archive, model, machine)
    try:
        record.update(target=plan.target_name, cache_key=plan.cache_key, version=deployed.version, emulator=None,
                      board={"address": str(address), "machine": machine, "archive": archive.name},
                      model=str(model), server_log=str(log_file))
        checks = board_mod.validate(deployed, settings, log_file, max_frames=args.max_frames)
    finally:
        b.remove(deployed.scratch)
    checks.append(validate.Check("parity", "skipped", "--board: parity runs the reference and llama-tts side by "
                                                      "side on this machine only"))
    return checks, out


def run(args, ctx) -> int:
    if args.max_frames < 1:
        raise InputError(f"--max-frames {args.max_frames}: expected a positive frame count")
    if (args.target is None) == (args.url is None):
        raise InputError("validate: give --target T (start the staged server) or --url URL (a running one)")
    t0 = time.monotonic()
    settings = validate.Settings(max_frames=args.max_frames, seed=args.seed, voice=args.voice)
    record: dict = {"q3build_validation": 1, "max_frames": args.max_frames, "seed": args.seed}
    if args.board:
        if args.url:
            raise InputError("validate: --board runs the packaged server on the board; --url checks a running one: "
                             "give one of them")
        checks, out = _on_board(ctx, args, settings, record)
    elif args.url:
        settings.timeout = args.timeout or 120.0
        out = args.out or ctx.project.work / "validate" / "url" / "validation.json"
        record.update(target=None, url=args.url, emulator=None, cache_key=None)
        checks = validate.run_checks(args.url, settings)
    else:
        plan, _pin, _series = resolve(args, ctx)
        info = package.staged_build_info(plan)
        emulated = plan.target.cross
        settings.timeout = args.timeout or (900.0 if emulated else 120.0)
        model, hf = _model(ctx, args, plan)
        prefix, env = [], dict(ctx.env)
        if emulated:
            emulation.require(plan, ctx.env)
            prefix = emulation.argv(plan)
            env, notes = emulation.environment(plan, ctx.env)
            for n in notes:
                ui.warn(n)
        port = free_port()
        argv = speech_argv.llama_server(plan.stage_dir / "bin" / "llama-server", model, port=port, prefix=prefix,
                                        max_frames=args.max_frames)
        out = args.out or package.validation_path(ctx.project, plan.target_name)
        log_file = out.parent / "server.log"
        record.update(target=plan.target_name, cache_key=plan.cache_key, version=info.get("version_output", ""),
                      emulator=shlex.join(prefix) if prefix else None, model=str(model), server_argv=argv,
                      server_log=str(log_file))
        ui.info(f"Starting llama-server for {plan.target_name}" + (f" under {prefix[0]}" if prefix else "")
                + f" on 127.0.0.1:{port} (log {log_file})")
        with Server(argv, env, log_file, port) as server:
            checks = validate.check_server(server, settings)
        checks.append(_parity(ctx, args, plan, model, hf))
    if args.url:
        checks.append(validate.Check("parity", "skipped", "--url: parity needs the staged llama-tts and the checkpoint"))
    checks.append(validate.Check("upstream-server-tests", "skipped", UPSTREAM_TESTS_SKIPPED))
    failed = [c for c in checks if c.status == "failed"]
    record.update(ok=not failed, seconds=round(time.monotonic() - t0, 1), checks=[c.to_json() for c in checks])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    if args.json:
        print_json(record)
    tab = Table(title=f"validate {record['target'] or record.get('url')}"
                      + (f" under {record['emulator'].split()[0]}" if record.get("emulator") else "")
                      + (f" on {record['board']['address']}" if record.get("board") else "")
                      + f": {out}")
    for c in ("check", "result", "seconds", "detail"):
        tab.add_column(c)
    for c in checks:
        tab.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", f"{c.seconds:.1f}", c.detail)
    ui.console.print(tab)
    if failed:
        raise CheckFailed(f"validate {record['target'] or args.url}: {len(failed)} check(s) failed: "
                          + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return 0
