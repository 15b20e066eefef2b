"""Check that this machine has what a target needs, naming the package that provides each
missing tool. Exits non-zero when a required tool is missing.

What q3build fetches itself (zig for the riscv64 targets, into ~/.cache/q3build) is shown as
"fetched by make", not as missing: only what needs root (apt) is left for the user. The Node.js that
builds the web UI gets its own row saying which node make will use (the system's or the pinned wheel)."""

from __future__ import annotations

from rich.table import Table

from q3build import ui
from q3build.commands._common import add_toolchain_options, options, print_json
from q3build.core import pin as pin_mod
from q3build.core import plan as plan_mod
from q3build.core import recipe
from q3build.errors import ToolMissingError
from q3build.toolchains import libraries
from q3build.toolchains import node
from q3build.toolchains import resolve as toolchains

NAME = "doctor"
HELP = "list missing system tools for a target, with the packages that provide them"


def add_arguments(p) -> None:
    p.add_argument("--target", "-t", metavar="T", action="append",
                   help="target to check (repeatable; default: all targets)")
    add_toolchain_options(p)
    p.add_argument("--json", action="store_true")


def _web_ui_row(ctx, where, names: list[str]) -> dict | None:
    """The Node.js that builds the web UI: the system's if new enough, else fetched by make (the
    row says which); none when the pin has no UI or no target asked for keeps it."""
    pin = pin_mod.load(ctx.project)
    if pin.ui is None or not any(recipe.load(ctx.project, n).web_ui for n in names):
        return None
    tool, path, which = node.tool(pin.ui.node, where.cache, ctx.env)
    ui.info(f"web UI: make builds it with {which}")
    return {"target": "(web UI)", "tool": tool.name, "purpose": tool.purpose, "found": path, "required": False,
            "apt": tool.apt, "pip": tool.pip, "fetch": tool.fetch, "uses": which}


def run(args, ctx) -> int:
    opts = options(args)
    where = plan_mod.settings(ctx.project, ctx.env, opts)
    names = []
    for asked in args.target or recipe.names(ctx.project):
        try:
            name, alias, why = plan_mod.resolve_name(ctx.project, asked, opts, ctx.env)
        except ToolMissingError as e:   # an alias none of whose targets can build here: check them all
            ui.info(f"{asked}: {e}")
            names += [n for n, _ in recipe.alias_candidates(ctx.project, asked)]
            continue
        if alias:
            ui.info(f"{alias} → {name}: {why}")
        names.append(name)
    report, missing_required = [], []
    for name in names:
        target = plan_mod.with_toolchain_path(recipe.load(ctx.project, name), opts)
        explicit = bool(args.target)
        for tool in toolchains.tools_for(target, ctx.env, where):
            path = toolchains.find(tool.name, ctx.env)
            # a vendor toolchain nobody asked for is not a missing tool of this machine, nor is one
            # q3build fetches itself
            required = tool.required and not tool.fetch and (explicit or not tool.name.startswith("<"))
            row = {"target": name, "tool": tool.name, "purpose": tool.purpose, "found": path,
                   "required": required, "apt": tool.apt, "pip": tool.pip, "fetch": tool.fetch}
            report.append(row)
            if path is None and required:
                missing_required.append(row)
        # optional libraries (the speech service's mp3 and opus encoders): without them the build
        # leaves those formats out, so they are never required
        for lib in libraries.find(target):
            what = ", ".join((*lib.library.headers, *(f"lib{n}.a" for n in lib.library.libs)))
            report.append({"target": name, "tool": f"{lib.name} ({what})",
                           "purpose": f"{lib.library.purpose}; {lib.describe()}",
                           "found": lib.files[0] if lib.found else None, "required": False,
                           "apt": " ".join(lib.library.apt) or None, "pip": None, "fetch": None})
    web_ui = _web_ui_row(ctx, where, names)
    if web_ui is not None:
        report.append(web_ui)
    if args.json:
        print_json({"ok": not missing_required, "tools": report})
    else:
        t = Table()
        for c in ("target", "tool", "status", "provided by", "purpose"):
            t.add_column(c, overflow="fold")
        for r in report:
            status = "[green]ok[/]" if r["found"] else ("[red]missing[/]" if r["required"] else
                                                        "[cyan]fetched by make[/]" if r["fetch"] else "[yellow]optional[/]")
            how = r["fetch"] if r["fetch"] and not r["found"] else \
                " / ".join(x for x in (f"apt install {r['apt']}" if r["apt"] else "",
                                       f"pip install {r['pip']}" if r["pip"] else "") if x)
            t.add_row(r["target"], r["tool"], status, how, r["purpose"])
        ui.console.print(t)
        if missing_required:
            apt = sorted({r["apt"] for r in missing_required if r["apt"]})
            pip = sorted({r["pip"] for r in missing_required if r["pip"]})
            if apt:
                ui.info(f"install with: apt-get install {' '.join(apt)}")
            if pip:
                ui.info(f"install with: pip install {' '.join(pip)}")
    return 5 if missing_required else 0
