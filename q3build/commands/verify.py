"""Check a release archive made by `q3build package`, then smoke-test it on this machine.

  q3build verify ARCHIVE [--no-smoke] [--json]

Checks, in order: the archive reads (one top directory; extracted with the PEP 706 data filter),
SHA256SUMS matches every file, manifest.json matches the files, sbom.cdx.json names llama.cpp at the
manifest's pin and every patch with the same sha256; then runs the packaged `llama-server
--version`, natively or under the emulator the manifest records. Exit 6 when a check fails.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from q3build import ui
from q3build.commands._common import print_json
from q3build.errors import CheckFailed
from q3build.release import verify

NAME = "verify"
HELP = "check a release archive's sums, manifest and SBOM, and smoke-test its llama-server"

STYLE = {"ok": "green", "failed": "red", "skipped": "yellow"}


def add_arguments(p) -> None:
    p.add_argument("archive", metavar="ARCHIVE", type=Path, help="q3build-….tar.gz")
    p.add_argument("--no-smoke", action="store_true", help="skip running llama-server --version")
    p.add_argument("--json", action="store_true", help="print the checks as JSON on stdout")


def run(args, ctx) -> int:
    checks = verify.verify(args.archive, ctx.env, run_smoke=not args.no_smoke)
    failed = [c for c in checks if c.status == "failed"]
    if args.json:
        print_json({"archive": str(args.archive), "ok": not failed, "checks": [c.to_json() for c in checks]})
    else:
        tab = Table(title=f"verify {args.archive.name}")
        for c in ("check", "result", "detail"):
            tab.add_column(c)
        for c in checks:
            tab.add_row(c.name, f"[{STYLE[c.status]}]{c.status}[/]", c.detail)
        ui.console.print(tab)
    if failed:
        raise CheckFailed(f"{args.archive.name}: " + "; ".join(f"{c.name} failed: {c.detail}" for c in failed))
    return 0
