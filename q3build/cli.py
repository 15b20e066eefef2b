"""q3build command line. ``main`` is the only place that exits.

Exit codes: 0 ok; 2 bad recipe/pin/series/template; 3 fetch; 4 patch/workspace; 5 tool or
build; 6 a check failed (validate, verify); 1 unexpected (with traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from q3build import __version__
from q3build.commands import COMMANDS
from q3build.errors import CommandError, Q3BuildError
from q3build.project import Project


@dataclass(frozen=True)
class Context:
    project: Project
    env: dict


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="q3build",
        description="Build llama-server (with the Qwen3-TTS speech service) from a pinned llama.cpp and our patch "
                    "stack, natively or cross-compiled.",
        epilog="Start with: q3build sync && q3build make --target host")
    p.add_argument("--version", action="version", version=f"q3build {__version__}")
    p.add_argument("--project", metavar="DIR", help="project directory (default: found from the current directory)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log every command run (-v) and more (-vv)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in COMMANDS:
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(sp)
        sp.set_defaults(_command=mod)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)
    try:
        env = dict(os.environ)
        project = Project.discover(env, project=args.project, cwd=Path.cwd())
        rc = args._command.run(args, Context(project=project, env=env))
        return int(rc or 0)
    except Q3BuildError as e:
        print(f"q3build: error: {e}", file=sys.stderr)
        if isinstance(e, CommandError) and e.tail:
            print("  " + "\n  ".join(e.tail.splitlines()[-15:]), file=sys.stderr)
        if e.hint:
            print(f"q3build: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("q3build: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug in q3build: show everything
        traceback.print_exc()
        return 1


def entry() -> None:
    sys.exit(main())
