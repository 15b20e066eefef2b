"""Package a staged build as a deterministic release archive.

  q3build package --target T [--out DIR] [--json]

Writes q3build-<version>-llama-<pin>-<triple>-<variant>.tar.gz (default into .q3build/dist/) with
bin/, lib/systemd/system/, share/licenses/, manifest.json (pin, patches with sha256, overlay,
recipe, CMake options, toolchain, emulator, validation results), SHA256SUMS and sbom.cdx.json
(CycloneDX 1.5). Entries are sorted, owned by root, and dated SOURCE_DATE_EPOCH (default: the
pin's commit date): packaging the same build twice gives the same bytes. --wheel also builds
q3tts_llama_server_<target>-….whl with scikit-build-core: `pip install` puts llama-server on PATH. The results of
`q3build validate` for the same build are included when present.
"""

from __future__ import annotations

from pathlib import Path

from q3build import ui
from q3build.commands._common import (
    add_target,
    add_toolchain_options,
    print_json,
    resolve,
)
from q3build.core.series import sha256_file
from q3build.release import package

NAME = "package"
HELP = "make a deterministic release archive of a staged build"


def add_arguments(p) -> None:
    add_target(p)
    p.add_argument("--out", metavar="DIR", type=Path, help="output directory (default: .q3build/dist)")
    add_toolchain_options(p)
    p.add_argument("--wheel", action="store_true",
                   help="also build a wheel with scikit-build-core (pip install puts llama-server on PATH)")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def run(args, ctx) -> int:
    plan, _pin, series = resolve(args, ctx)
    out = args.out or ctx.project.work / "dist"
    with ui.step(f"Packaging {plan.target_name}"):
        result = package.build(ctx.project, plan, series, ctx.env, out)
    if args.wheel:
        from q3build.release import wheel
        w = wheel.build(ctx.project, plan, ctx.env, out, result["source_date_epoch"])
        result["wheel"] = {"path": str(w), "sha256": sha256_file(w)}
    if args.json:
        print_json(result)
    else:
        ui.info(f"{result['archive']}\nsha256 {result['sha256']}  ({result['size'] / 1e6:.1f} MB, "
                f"{result['files']} files, SOURCE_DATE_EPOCH {result['source_date_epoch']}"
                + (", validated" if result["validated"] else ", not validated") + ")")
        if "wheel" in result:
            ui.info(f"{result['wheel']['path']}\nsha256 {result['wheel']['sha256']}")
    return 0
