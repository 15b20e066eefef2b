"""Run upstream's kernel tests for a cross target under its emulator (qemu-user).

  q3build kernels --target riscv64 [--vlen 128,256,1024] [--tests quantize-fns,backend-ops] [--json]

Builds test-quantize-fns and test-backend-ops in the target's build directory (the recipe must set
cmake.options.LLAMA_BUILD_TESTS), then runs them through the recipe's emulator at each vector length:
test-quantize-fns checks ggml's RVV quantize and dot-product kernels against the scalar reference;
test-backend-ops runs the ops Qwen3-TTS uses (mul_mat f32/f16/q8_0/q4_0, get_rows, rope, rms_norm,
soft_max, im2col, conv_transpose_1d; one run per op, at small sizes) on the CPU backend against its
reference mode. Logs go to
.q3build/build/<target>.logs/. Exit 0 only when every run passes.
"""

from __future__ import annotations

import time

from rich.table import Table

from q3build import ui
from q3build.commands._common import (
    add_build_options,
    add_target,
    print_json,
    resolve,
    sync_and_render,
)
from q3build.core import build
from q3build.core.recipe import VLENS
from q3build.errors import RecipeError
from q3build.toolchains import kernels

NAME = "kernels"
HELP = "build and run upstream's kernel tests for a cross target under its emulator"

TESTS = {"quantize-fns": kernels.QUANTIZE_FNS, "backend-ops": kernels.BACKEND_OPS}


def _vlens(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        try:
            v = int(part)
        except ValueError:
            v = -1
        if v not in VLENS:
            raise RecipeError(f"--vlen {text}: {part!r} is not one of {', '.join(map(str, VLENS))}")
        out.append(v)
    return out


def _tests(text: str) -> list[str]:
    out = []
    for part in text.split(","):
        if part not in TESTS:
            raise RecipeError(f"--tests {text}: unknown test {part!r} (known: {', '.join(TESTS)})")
        out.append(TESTS[part])
    return out


def add_arguments(p) -> None:
    add_target(p)
    add_build_options(p)
    p.add_argument("--vlen", metavar="BITS[,BITS…]",
                   help="vector lengths to emulate (default: 128,256,1024 for quantize-fns; the recipe's "
                        "emulator.vlen for backend-ops)")
    p.add_argument("--tests", metavar="NAME[,NAME…]", default="quantize-fns,backend-ops",
                   help="which tests: quantize-fns, backend-ops (default: both)")
    p.add_argument("--json", action="store_true", help="print the results as JSON on stdout")


def run(args, ctx) -> int:
    t0 = time.monotonic()
    plan, pin, series = resolve(args, ctx)
    t = plan.target
    if t.emulator is None:
        raise RecipeError(f"target {plan.target_name} has no emulator section: its tests cannot run here")
    if str(plan.cmake_value("LLAMA_BUILD_TESTS")).upper() not in ("ON", "TRUE", "1", "YES"):
        raise RecipeError(f"target {plan.target_name}: cmake.options.LLAMA_BUILD_TESTS is off, so the test "
                          f"binaries are not configured", hint="use --target riscv64, or -D LLAMA_BUILD_TESTS=ON")
    tests = _tests(args.tests)
    default_vlen = t.emulator.vlen or 256
    vlens = _vlens(args.vlen) if args.vlen else None
    sync_and_render(ctx, plan, pin, series)
    plan = build.fetch_toolchain(plan, ctx.env)
    result = build.BuildResult()
    build.configure_and_build(ctx.project, plan, ctx.env, result, targets=tuple(tests))
    runs = []
    for test in tests:
        cases = [(None, "")] if test == kernels.QUANTIZE_FNS else list(kernels.TTS_OPS)
        for vlen in vlens or ([128, 256, 1024] if test == kernels.QUANTIZE_FNS else [default_vlen]):
            for op, params in cases:
                name = test + (f" {op}" if op else "")
                with ui.step(f"{name} under {t.emulator.command[0]}, VLEN {vlen}"):
                    r = kernels.run_test(plan, test, vlen, ctx.env, op=op, params=params)
                runs.append(r)
                status = "ok" if r.ok else "[red]FAILED[/]"
                ui.info(f"{name} VLEN {vlen}: {status}, {r.passed} passed, {r.failed} failed ({r.seconds} s)")
                for f in r.failures[:10]:
                    ui.warn(f"  {f}")
    ok = all(r.ok for r in runs)
    summary = {"target": plan.target_name, "ok": ok, "emulator": t.emulator.command[0],
               "build_seconds": round(result.configure_seconds + result.build_seconds, 1),
               "seconds": round(time.monotonic() - t0, 1), "logs": str(plan.log_dir),
               "backend_ops_comparison": "CPU backend vs CPU backend in reference mode (same kernels, no fusion)",
               "runs": [r.to_json() for r in runs]}
    if args.json:
        print_json(summary)
    else:
        tab = Table(title=f"{plan.target_name}: kernel tests under {t.emulator.command[0]}")
        for c in ("test", "op", "VLEN", "result", "passed", "failed", "seconds"):
            tab.add_column(c)
        for r in runs:
            tab.add_row(r.test, r.op or "", str(r.vlen), "ok" if r.ok else "FAILED", str(r.passed), str(r.failed),
                        str(r.seconds))
        ui.console.print(tab)
    return 0 if ok else 5
