"""The rendered zig compiler wrappers, run by /bin/sh against a fake zig that prints its arguments."""

from __future__ import annotations

import subprocess

import pytest

from q3build.core import plan as plan_mod
from q3build.toolchains import zig as zig_kind

from ..unit.helpers import make_project

FAKE_ZIG = """\
#!/bin/sh
printf '%s\\n' "$@"
printf 'ZIG_GLOBAL_CACHE_DIR=%s\\n' "$ZIG_GLOBAL_CACHE_DIR"
"""


@pytest.fixture
def wrappers(tmp_path, monkeypatch):
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: "/opt/ziglang/zig")
    p = make_project(tmp_path, monkeypatch, recipes=("riscv64", "spacemit-k1"))
    zig = tmp_path / "fake zig"
    zig.write_text(FAKE_ZIG)
    zig.chmod(0o755)

    def render(target):
        plan = plan_mod.resolve(p, target, {"PATH": "/usr/bin"})
        out = tmp_path / target
        out.mkdir()
        for f in plan.files:
            if f.path.startswith("toolchain/"):
                w = out / f.path.split("/")[1]
                w.write_text(f.content.replace("zig=/opt/ziglang/zig", f"zig='{zig}'"))
                w.chmod(0o755)
        return out, plan
    return render


def run(wrapper, *args):
    r = subprocess.run([str(wrapper), *args], capture_output=True, text=True)
    return r.returncode, r.stdout.splitlines(), r.stderr


def test_cc_rewrites_march_drops_mabi_and_keeps_arguments(wrappers):
    d, plan = wrappers("riscv64")
    rc, args, _ = run(d / "zig-cc", "-O3", "-march=rv64gcv_zfh_zvfh_zba", "-mabi=lp64d", "-DX=a b", "-c", "x.c",
                      "-o", "x.o")
    assert rc == 0
    assert args[:4] == ["cc", "-target", "riscv64-linux-gnu.2.36",
                        "-mcpu=baseline_rv64+m+a+f+d+zicsr+zifencei+c+v+zfh+zvfh+zba"]
    assert args[4:-1] == ["-O3", "-DX=a b", "-c", "x.c", "-o", "x.o", "-g0"]
    assert args[-1] == f"ZIG_GLOBAL_CACHE_DIR={plan.zig_cache_dir}"


def test_cc_without_march_uses_the_recipe_cpu_and_last_march_wins(wrappers):
    d, _ = wrappers("riscv64")
    _, args, _ = run(d / "zig-cc", "-c", "y.c")
    assert args[3] == "-mcpu=baseline_rv64+m+a+f+d+zicsr+zifencei+c+v+zfh+zvfh+zicbop+zihintpause+zba"
    _, args, _ = run(d / "zig-c++", "-march=rv64gcv", "-march=rv64gc", "-c", "y.cpp")
    assert args[:4] == ["c++", "-target", "riscv64-linux-gnu.2.36", "-mcpu=baseline_rv64+m+a+f+d+zicsr+zifencei+c"]


def test_k1_cxx_adds_ime_feature_header_and_cxx20_last(wrappers):
    d, plan = wrappers("spacemit-k1")
    _, args, _ = run(d / "zig-c++", "-march=rv64gcv_zfh_zvfh_zba_zicbop", "-std=gnu++17", "-c", "ime.cpp")
    assert args[3] == "-mcpu=baseline_rv64+m+a+f+d+zicsr+zifencei+c+v+zfh+zvfh+zba+zicbop+xsmtvdot"
    assert args[4:6] == ["-include", str(plan.render_dir / "include" / "spacemit-ime1-asm.h")]
    assert args[-4:-1] == ["ime.cpp", "-g0", "-std=gnu++20"]     # after CMake's -std=gnu++17
    _, args, _ = run(d / "zig-cc", "-c", "x.c")
    assert "-std=gnu++20" not in args


def test_unsupported_march_fails_with_a_message(wrappers):
    d, _ = wrappers("riscv64")
    rc, args, err = run(d / "zig-cc", "-march=rv32gc", "-c", "x.c")
    assert rc != 0 and args == []
    assert "-march=rv32gc: only rv64 ISA strings are supported" in err


def test_ar_and_ranlib_pass_through(wrappers):
    d, _ = wrappers("riscv64")
    assert run(d / "zig-ar", "qc", "lib a.a", "x.o")[1][:4] == ["ar", "qc", "lib a.a", "x.o"]
    assert run(d / "zig-ranlib", "liba.a")[1][:2] == ["ranlib", "liba.a"]
