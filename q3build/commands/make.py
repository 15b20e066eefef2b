"""Build a target: sync if needed, render, configure, build, stage.

  q3build make --target host [--json] [-j N] [-D NAME=VALUE] [--no-ccache]

Output goes to .q3build/stage/<target>/ (bin/llama-server, bin/llama-tts, bin/q3tts-serve,
lib/systemd/system/q3tts.service, share/q3build/build-info.json). Full logs are in
.q3build/build/<target>.logs/. CMAKE_ARGS from the environment is passed through and recorded.
"""

from __future__ import annotations

import shutil
import time

from rich.table import Table

from q3build import ui
from q3build.commands._common import (
    add_build_options,
    add_target,
    print_json,
    resolve,
    sync_and_render,
)
from q3build.core import build
from q3build.toolchains import emulation

NAME = "make"
HELP = "sync, configure, build and stage a target"


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--clean", action="store_true", help="wipe the target's build directory first")


def run(args, ctx) -> int:
    t0 = time.monotonic()
    plan, pin, series = resolve(args, ctx)
    if plan.alias:
        ui.info(f"{plan.alias} → {plan.target_name}: {plan.alias_reason}")
    if plan.target.cross and plan.target.emulator:
        emulation.require(plan, ctx.env)   # the staged --version runs under it: fail before building
    synced = sync_and_render(ctx, plan, pin, series)
    if args.clean and plan.build_dir.exists():
        shutil.rmtree(plan.build_dir)
    result = build.BuildResult()
    build.configure_and_build(ctx.project, plan, ctx.env, result)
    with ui.step(f"Staging into {plan.stage_dir}"):
        build.stage(ctx.project, plan, ctx.env, result)
    total = time.monotonic() - t0
    summary = {
        "target": plan.target_name, "ok": True, "stage": str(plan.stage_dir), "cache_key": plan.cache_key,
        "alias": plan.alias, "alias_reason": plan.alias_reason or None,
        "version": result.version_output, "version_checked_with": result.emulator or None, "sync": {"changed": synced.changed, "seconds": round(synced.seconds, 3),
                                                   "head": synced.stamp.head},
        "configured": result.configured, "seconds": {"configure": round(result.configure_seconds, 2),
                                                      "build": round(result.build_seconds, 2),
                                                      "stage": round(result.stage_seconds, 2), "total": round(total, 2)},
        "ccache": result.ccache, "artifacts": result.artifacts, "logs": str(plan.log_dir),
        "cmake_args": list(plan.cmake_args),
    }
    if args.json:
        print_json(summary)
    t = Table(title=f"{plan.target_name}: built in {total:.1f} s"
                    + (f", ccache {result.ccache['hits']} hits / {result.ccache['misses']} misses"
                       if result.ccache else ""))
    for c in ("artifact", "size", "sha256"):
        t.add_column(c)
    for a in result.artifacts:
        t.add_row(a["path"], f"{a['size'] / 1e6:.1f} MB", a["sha256"][:16])
    ui.console.print(t)
    if result.version_output:
        ui.info(result.version_output.splitlines()[0])
    return 0
