"""Arguments and helpers shared by several verbs."""

from __future__ import annotations

import argparse
import json
import sys

from q3build import ui
from q3build.core import pin as pin_mod
from q3build.core import plan as plan_mod
from q3build.core import series as series_mod
from q3build.core import workspace
from q3build.core.pin import Pin
from q3build.core.plan import BuildPlan, Options
from q3build.core.series import LoadedSeries


def add_target(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--target", "-t", required=required, metavar="T", help="target recipe (see `q3build targets`)")


def add_toolchain_options(p: argparse.ArgumentParser) -> None:
    """Where the toolchain comes from: declared once, for every verb that resolves a plan."""
    p.add_argument("--toolchain-path", metavar="DIR", help="root of a user-provided toolchain (external kinds)")
    p.add_argument("--zig", metavar="PATH|interpreter",
                   help="zig to use: an executable, or `interpreter` for the ziglang installed in q3build's Python "
                        "(default, or Q3BUILD_ZIG: the recipe's pinned ziglang, fetched into q3build's cache)")


def add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel compile jobs (default: all CPUs)")
    p.add_argument("--no-ccache", action="store_true", help="do not use ccache even when installed")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="extra CMake cache variable (recorded in the plan, like CMAKE_ARGS)")
    add_toolchain_options(p)


def options(args) -> Options:
    """The plan options from a verb's arguments (the only place a Namespace becomes plan input)."""
    return Options(jobs=getattr(args, "jobs", None), use_ccache=not getattr(args, "no_ccache", False),
                   cmake_defines=tuple(getattr(args, "defines", ()) or ()),
                   toolchain_path=getattr(args, "toolchain_path", None), zig=getattr(args, "zig", None))


def resolve(args, ctx) -> tuple[BuildPlan, Pin, LoadedSeries]:
    """The plan of a building verb, with the pin and series it was made from."""
    pin = pin_mod.load(ctx.project)
    series = series_mod.load(ctx.project)
    return plan_mod.resolve(ctx.project, args.target, ctx.env, options(args), pin=pin, series=series), pin, series


def sync_and_render(ctx, plan: BuildPlan, pin: Pin, series: LoadedSeries) -> workspace.SyncResult:
    """What every building verb does before configuring: an up-to-date tree and the rendered files."""
    with ui.step("Syncing source"):
        synced = workspace.sync(ctx.project, pin, series, ctx.env)
    plan.write_files(plan.render_dir)
    return synced


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
