"""Fetch the pinned llama.cpp, verify it is the pinned tree, apply the patch series and overlay.

Sources are tried in the order of recipes/llama.cpp.yaml; a source counts only if it reproduces
the recorded tree id. The patched tree is built next to the current one and swapped in only if
every patch applied, so a failed sync leaves the previous good tree. Re-running with nothing
changed does nothing.
"""

from __future__ import annotations

from q3build import ui
from q3build.commands._common import print_json
from q3build.core import pin as pin_mod
from q3build.core import series as series_mod
from q3build.core import workspace

NAME = "sync"
HELP = "fetch, verify and patch the pinned llama.cpp into the workspace"


def add_arguments(p) -> None:
    p.add_argument("--source", metavar="NAME", help="use only this source from the pin (e.g. git, pypi-sdist)")
    p.add_argument("--force", action="store_true", help="replace a tree that has local changes")
    p.add_argument("--json", action="store_true", help="print the resulting stamp as JSON")


def run(args, ctx) -> int:
    pin = pin_mod.load(ctx.project)
    series = series_mod.load(ctx.project)
    result = workspace.sync(ctx.project, pin, series, ctx.env, force=args.force, source=args.source)
    s = result.stamp
    if args.json:
        import dataclasses
        print_json({**dataclasses.asdict(s), "changed": result.changed, "seconds": round(result.seconds, 3),
                    "path": str(ctx.project.src_dir)})
    elif result.changed:
        ui.info(f"synced {ctx.project.src_dir}: llama.cpp {s.upstream_commit[:9]} ({pin.upstream.tag}) from "
                f"{s.source} + {len(s.patches)} patch(es) + overlay → {s.head[:12]} ({result.seconds:.1f} s)")
    else:
        ui.info(f"up to date: {ctx.project.src_dir} at {s.head[:12]} ({result.seconds:.2f} s)")
    return 0
