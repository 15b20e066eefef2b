"""List the build targets in recipes/ with their descriptions."""

from __future__ import annotations

from q3build import ui
from q3build.commands._common import print_json
from q3build.core import recipe

NAME = "targets"
HELP = "list build targets"


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true")


def run(args, ctx) -> int:
    rows = []
    for name in recipe.names(ctx.project):
        t = recipe.load(ctx.project, name)
        rows.append({"name": name, "toolchain": t.toolchain.kind, "arch": t.cpu.arch, "description": t.description})
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            ui.console.print(f"[bold]{r['name']:<14}[/] {r['toolchain']:<10} {r['arch']:<8} {r['description']}")
    return 0
