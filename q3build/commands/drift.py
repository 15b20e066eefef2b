"""How the patch stack fares on a newer upstream llama.cpp, before bumping the pin.

  q3build drift --ref REV [--repo URL] [--json | --markdown]
  q3build drift --source DIR|TARBALL [--json | --markdown]

--ref takes a revision of the pin's git source (or of --repo). --source takes a tree without
history: a directory, or a tarball with one top-level directory. For each patch, in series order,
the verdict is one of: clean, 3-way (only a three-way merge applies it), conflict (with the file,
the hunk and, for git sources, the upstream commits that touched its lines), or upstream (it applies
in reverse, or it becomes empty). Nothing in the workspace changes: the patches are tried in a
scratch clone.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from q3build import ui
from q3build.commands._common import print_json
from q3build.core import pin as pin_mod
from q3build.core import series as series_mod
from q3build.maintainer import drift

NAME = "drift"
HELP = "try the patch stack on a newer upstream tree and report each patch"

STYLE = {"clean": "green", "3-way": "yellow", "conflict": "red", "upstream": "cyan"}


def add_arguments(p) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--ref", metavar="REV", help="a branch, tag or commit of the upstream git repository")
    where.add_argument("--source", metavar="DIR|TARBALL", type=Path, help="a newer tree without history")
    p.add_argument("--repo", metavar="URL", help="git repository for --ref (default: the pin's git source)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    fmt.add_argument("--markdown", action="store_true", help="print the report as Markdown on stdout")


def run(args, ctx) -> int:
    pin = pin_mod.load(ctx.project)
    series = series_mod.load(ctx.project)
    report = drift.run(ctx.project, pin, series, ctx.env, ref=args.ref, repo=args.repo, source=args.source)
    if args.json:
        print_json(report.to_json())
        return 0
    if args.markdown:
        print(report.markdown(), end="")
        return 0
    tab = Table(title=f"drift: {pin.upstream.short} → {report.label} ({report.new[:9]}); overlay {report.overlay}")
    for c in ("#", "patch", "verdict", "detail / upstream commits"):
        tab.add_column(c)
    for i, p in enumerate(report.patches, 1):
        detail = p.detail
        for c in p.conflicts:
            detail += f"\n{c.file} {c.hunk}: " + (", ".join(f"{cm.sha[:9]} {cm.subject}" for cm in c.commits)
                                                  or ("no upstream commit found" if report.history else "no history"))
        detail += "".join(f"\nupstream in {cm.sha[:9]} {cm.subject}" for cm in p.commits)
        tab.add_row(str(i), p.file, f"[{STYLE[p.verdict]}]{p.verdict}[/]", detail)
    ui.console.print(tab)
    return 0
