"""Render a target's templates (initial CMake cache, toolchain file, launcher, systemd unit)
without building."""

from __future__ import annotations

from pathlib import Path

from .. import plan as plan_mod, ui
from ._common import add_build_options, add_target, options

NAME = "render"
HELP = "write a target's rendered files without building"


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--out", metavar="DIR", help="output directory (default: .q3build/render/<target>)")


def write(plan, out: Path) -> list[Path]:
    written = []
    for f in plan.files:
        path = out / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f.content, encoding="utf-8")
        tmp.chmod(0o755 if f.executable else 0o644)
        tmp.replace(path)
        written.append(path)
    return written


def run(args, ctx) -> int:
    plan = plan_mod.resolve(ctx.project, args.target, ctx.env, options(args))
    out = Path(args.out) if args.out else plan.render_dir
    for path in write(plan, out):
        ui.info(str(path))
    return 0
