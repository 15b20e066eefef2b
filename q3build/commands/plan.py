"""Show everything resolved for a target before building: pin, digests, toolchain, CMake
options, rendered files, artifact names and the build cache key."""

from __future__ import annotations

from rich.table import Table

from q3build import ui
from q3build.commands._common import add_build_options, add_target, options, print_json
from q3build.core import plan as plan_mod
from q3build.core import render

NAME = "plan"
HELP = "print the resolved build plan for a target"


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--json", action="store_true", help="machine-readable plan on stdout")


def run(args, ctx) -> int:
    plan = plan_mod.resolve(ctx.project, args.target, ctx.env, options(args))
    if args.json:
        print_json(plan.to_record())
        return 0
    show(plan)
    return 0


def show(plan) -> None:
    u = plan.pin.upstream
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    if plan.alias:
        t.add_row("alias", f"{plan.alias} → {plan.target_name}, because {plan.alias_reason}")
    t.add_row("target", f"{plan.target_name}: {plan.target.description}")
    if plan.target.cpu.ime != "none":
        ime = plan.target.cpu.ime.upper()
        t.add_row("SpacemiT", f"{ime} kernels: after configure RISCV64_SPACEMIT_IME_SPEC must list "
                              f"RISCV64_SPACEMIT_{ime}, else the build stops")
    t.add_row("llama.cpp", f"{u.commit} ({u.tag}, {u.date}), tree {u.tree}")
    t.add_row("sources", ", ".join(s.label for s in plan.pin.sources))
    t.add_row("series", f"{plan.series_digest[:12]} ({len(plan.patches)} patches)")
    t.add_row("overlay", plan.overlay_digest[:12])
    t.add_row("--version", plan.version_line)
    t.add_row("toolchain", f"{plan.toolchain.kind}: {plan.toolchain.cc} ({plan.toolchain.cc_version})")
    tc = plan.toolchain
    if tc.zig:
        t.add_row("zig", f"{tc.zig} ({tc.source})")
    if tc.fetch:
        f = tc.fetch
        t.add_row("fetch", f"{f['wheel']} (sha256 {f['sha256'][:16]}…), in {f['dir']}" if f["wheel"] else
                  f"make fetches {f['package']}=={f['version']} (PyPI, sha256 pinned in the recipe) into {f['dir']}")
    t.add_row("generator", plan.generator)
    t.add_row("ccache", plan.ccache or "off")
    for k, v in plan.cache_vars.items():
        t.add_row(f"  -D{k}", render.cmake_value(v))
    if plan.cmake_args:
        t.add_row("CMAKE_ARGS", " ".join(plan.cmake_args))
    for lib in plan.libraries:
        t.add_row(f"library {lib.name}", f"{lib.library.purpose}: {lib.describe()}")
    t.add_row("build", " ".join(plan.target.cmake.build_targets) + f" (-j{plan.jobs})")
    t.add_row("rendered", ", ".join(f.path for f in plan.files))
    t.add_row("artifacts", ", ".join(plan.artifacts))
    t.add_row("archive", plan.archive_name)
    t.add_row("stage", str(plan.stage_dir))
    t.add_row("cache key", plan.cache_key[:16])
    ui.console.print(t)
