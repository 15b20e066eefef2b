"""Work with the patch series in patches/.

  q3build patches list      the series with metadata and integrity status
  q3build patches export    regenerate patches/ from the commits in the synced tree
  q3build patches refresh   re-record sha256 of hand-edited patch files in series.yaml

To change a patch: edit the synced tree (.q3build/src/llama.cpp), amend or add commits on top
of the overlay commit, run `q3build patches export`, review `git diff patches/`.
"""

from __future__ import annotations

from rich.table import Table

from q3build import ui
from q3build.commands._common import print_json
from q3build.core import series as series_mod
from q3build.core.series import sha256_file
from q3build.maintainer import export as export_mod

NAME = "patches"
HELP = "list, export or refresh the patch series"


def add_arguments(p) -> None:
    p.add_argument("action", choices=("list", "export", "refresh"))
    p.add_argument("--json", action="store_true", help="machine-readable output (list)")


def run(args, ctx) -> int:
    if args.action == "refresh":
        changes = series_mod.refresh_checksums(ctx.project)
        for f, old, new in changes:
            ui.info(f"{f}: sha256 {old[:12]}… → {new[:12]}…")
        if not changes:
            ui.info("all checksums match")
        return 0
    loaded = series_mod.load(ctx.project)
    if args.action == "export":
        r = export_mod.export(ctx.project, loaded, ctx.env)
        for f in r.written:
            ui.info(f"wrote patches/{f}")
        for f in r.removed:
            ui.info(f"removed patches/{f}")
        for f in r.overlay_written:
            ui.info(f"wrote {loaded.series.overlay}/{f}")
        for f in r.overlay_removed:
            ui.info(f"removed {loaded.series.overlay}/{f}")
        for f in r.moved_to_overlay:
            ui.info(f"new file {f} → {loaded.series.overlay}/ (new sources live in the overlay, not in patches)")
        if r.series_rewritten:
            ui.info("updated patches/series.yaml")
        if not r.changed:
            ui.info("patches/ already matches the tree")
        return 0
    rows = []
    for i, e in enumerate(loaded.patches, 1):
        p = loaded.path(e)
        status = "missing" if not p.is_file() else ("ok" if sha256_file(p) == e.sha256 else "sha256 mismatch")
        rows.append({"index": i, "file": e.file, "area": e.area, "upstream": e.upstream.status,
                     "integrity": status, "purpose": e.purpose})
    if args.json:
        print_json({"series_digest": loaded.digest(), "overlay_digest": loaded.overlay_digest(),
                    "overlay_files": [f.as_posix() for f in loaded.overlay_files()], "patches": rows})
        return 0
    t = Table(title=f"series {loaded.digest()[:12]}, overlay {loaded.overlay_digest()[:12]} "
                    f"({len(loaded.overlay_files())} files)")
    for col in ("#", "file", "area", "upstream", "integrity", "purpose"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(str(r["index"]), r["file"], r["area"], r["upstream"], r["integrity"], r["purpose"].splitlines()[0])
    ui.console.print(t)
    return 0 if all(r["integrity"] == "ok" for r in rows) else 4
