"""Arguments and helpers shared by several verbs."""

from __future__ import annotations

import argparse
import json
import sys

from ..plan import Options


def add_target(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--target", "-t", required=required, metavar="T", help="target recipe (see `q3build targets`)")


def add_build_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", "-j", type=int, metavar="N", help="parallel compile jobs (default: all CPUs)")
    p.add_argument("--no-ccache", action="store_true", help="do not use ccache even when installed")
    p.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME=VALUE",
                   help="extra CMake cache variable (recorded in the plan, like CMAKE_ARGS)")
    p.add_argument("--toolchain-path", metavar="DIR", help="root of a user-provided toolchain (external kinds)")


def options(args) -> Options:
    return Options(jobs=getattr(args, "jobs", None), use_ccache=not getattr(args, "no_ccache", False),
                   cmake_defines=tuple(getattr(args, "defines", ()) or ()),
                   toolchain_path=getattr(args, "toolchain_path", None))


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
