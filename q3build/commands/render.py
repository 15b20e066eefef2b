"""Render a target's templates (initial CMake cache, toolchain file, launcher, systemd unit)
without building."""

from __future__ import annotations

from pathlib import Path

from q3build import ui
from q3build.commands._common import add_build_options, add_target, options
from q3build.core import plan as plan_mod

NAME = "render"
HELP = "write a target's rendered files without building"


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default: .q3build/render/<target>)")


def run(args, ctx) -> int:
    plan = plan_mod.resolve(ctx.project, args.target, ctx.env, options(args))
    out = Path(args.out) if args.out else plan.render_dir
    for path in plan.write_files(out):
        ui.info(str(path))
    return 0
