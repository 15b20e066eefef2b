"""riscv64 / SpacemiT targets: recipes, the `spacemit` alias, zig wrappers, emulator env, kernel-test
parsing. No processes: toolchains are faked (helpers.fake_toolchain)."""

from __future__ import annotations

import textwrap

import pytest

from q3build.core import plan as plan_mod
from q3build.core import recipe
from q3build.errors import RecipeError, ToolMissingError
from q3build.toolchains import emulation, kernels
from q3build.toolchains import resolve as toolchains
from q3build.toolchains import zig as zig_kind

from .helpers import make_project

RV = ("riscv64", "spacemit-k1", "spacemit-k3")
ENV = {"PATH": "/usr/bin"}


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: "/opt/ziglang/zig")
    return make_project(tmp_path, monkeypatch, recipes=("host", *RV))


def vendor_toolchain(tmp_path, machine=243):
    """A directory shaped like SpacemiT's toolchain: bin/<triple>-gcc and sysroot/lib/libc.so.6."""
    root = tmp_path / "spacemit-toolchain"
    (root / "bin").mkdir(parents=True)
    for tool in ("gcc", "g++"):
        (root / "bin" / f"riscv64-unknown-linux-gnu-{tool}").write_text("#!/bin/sh\n")
    (root / "sysroot" / "lib").mkdir(parents=True)
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + machine.to_bytes(2, "little")
    (root / "sysroot" / "lib" / "libc.so.6").write_bytes(elf)
    return root


def write(project, name, text):
    (project.recipes_dir / f"{name}.yaml").write_text(textwrap.dedent(text))


def problems(fn) -> list[str]:
    with pytest.raises(RecipeError) as e:
        fn()
    return e.value.problems


# --- recipes ---------------------------------------------------------------------------------

def test_recipes_share_riscv64_through_extends(project):
    rv, k1, k3 = (recipe.load(project, n) for n in RV)
    assert rv.toolchain.kind == k1.toolchain.kind == "zig"
    assert k1.toolchain.triple == "riscv64-linux-gnu" and k1.toolchain.glibc == "2.36"   # inherited
    assert k1.cmake.options["GGML_RVV"] is True and k1.cmake.options["GGML_CPU_RISCV64_SPACEMIT"] is True
    assert k1.cmake.options["GGML_CPU_REPACK"] is False and "GGML_CPU_REPACK" not in rv.cmake.options
    assert (k1.toolchain.features, k1.toolchain.force_include, k1.toolchain.append_cxxflags) == (
        ("xsmtvdot",), ("spacemit-ime1-asm.h",), ("-std=gnu++20",))
    assert rv.toolchain.features == () and rv.cpu.ime == "none"
    # K3 is zig too (IME2 through the .insn macro header); SpacemiT's GCC is the --toolchain-path alternative
    assert k3.toolchain.kind == "zig" and k3.toolchain.glibc == "2.36" and k3.cpu.ime == "ime2"
    assert (k3.toolchain.features, k3.toolchain.force_include, k3.toolchain.append_cxxflags) == (
        ("zvl1024b",), ("spacemit-ime2-asm.h",), ("-std=gnu++20",))
    assert k3.vendor_toolchain.kind == "external" and k3.vendor_toolchain.glibc is None
    assert k3.vendor_toolchain.features == () and k3.vendor_toolchain.link_libs == ("-latomic",)
    assert k1.vendor_toolchain is None
    assert k3.cmake.options["GGML_RV_ZVFBFWMA"] is True and "zvfbfwma" in k3.cpu.march
    # the A100 code runs under qemu at its own VLEN (qemu 7.2's maximum)
    assert k3.emulator.vlen == 1024
    assert (k3.runtime.placement, k3.runtime.threads, k1.runtime.placement) == ("ai-cores", 8, "taskset")
    assert "zvfbfwma" not in k1.cpu.march
    # aliases are not inherited: riscv64 is no SpacemiT board
    assert rv.aliases == () and k1.aliases == k3.aliases == ("spacemit",)
    assert k3.alias_preference > k1.alias_preference
    # the emulated runs keep IME unused, the boards get the IME core id
    assert k1.emulator.env["SPACEMIT_CORE_ARCH"] == "0x503C" and k1.runtime.env["SPACEMIT_CORE_ARCH"] == "0xA03C"
    assert k3.runtime.env["SPACEMIT_CORE_ARCH"] == "0xA064"
    assert rv.emulator.vlen == 256 and "vlen={vlen}" in rv.emulator.command[-1]


# --- the spacemit alias ----------------------------------------------------------------------

def test_alias_resolves_to_k3_with_zig_and_says_why(project):
    plan = plan_mod.resolve(project, "spacemit", ENV)
    assert plan.target_name == "spacemit-k3" and plan.alias == "spacemit"
    assert plan.toolchain.kind == "zig"
    note, why = plan.alias_reason.split("; ", 1)
    assert note == ("K3 is the board of the SpacemiT llama.cpp fork's published figures (IME2 on the A100 cores)")
    assert "zig" in why and "skipped" not in why
    assert plan.to_record()["alias"] == {"name": "spacemit", "reason": plan.alias_reason}
    assert plan.build_dir.name == "spacemit-k3"


def test_alias_falls_back_to_k1_when_k3_cannot_build_and_says_why(project):
    # a K3 recipe that needs a toolchain this machine lacks: the alias goes on to K1 and names what it skipped
    import yaml
    k3 = project.recipes_dir / "spacemit-k3.yaml"
    data = yaml.safe_load(k3.read_text())
    data["toolchain"] = {"kind": "external", "triple": "riscv64-unknown-linux-gnu", "glibc": None, "pip": [],
                         "wheels": None}
    k3.write_text(yaml.safe_dump(data))
    plan = plan_mod.resolve(project, "spacemit", ENV)
    assert plan.target_name == "spacemit-k1" and plan.alias == "spacemit"
    assert "skipped spacemit-k3 (needs SpacemiT's own toolchain: --toolchain-path not given)" in plan.alias_reason
    assert plan.to_record()["alias"] == {"name": "spacemit", "reason": plan.alias_reason}
    assert plan.build_dir.name == "spacemit-k1"


def test_alias_resolves_to_k3_with_vendor_toolchain(project, tmp_path):
    root = vendor_toolchain(tmp_path)
    plan = plan_mod.resolve(project, "spacemit", ENV, plan_mod.Options(toolchain_path=str(root)))
    assert plan.target_name == "spacemit-k3"
    assert plan.alias_reason.endswith(f"published figures (IME2 on the A100 cores); toolchain given by "
                                      f"--toolchain-path {root}")
    assert plan.toolchain.path == str(root)
    assert plan.toolchain.sysroot == f"{root}/sysroot"
    assert plan.to_record()["toolchain"]["path"] == str(root)


def test_alias_with_a_wrong_toolchain_path_does_not_fall_back_silently(project, tmp_path):
    with pytest.raises(ToolMissingError) as e:
        plan_mod.resolve(project, "spacemit", ENV, plan_mod.Options(toolchain_path=str(tmp_path)))
    assert str(e.value) == (f"alias 'spacemit' → spacemit-k3: --toolchain-path {tmp_path} has no "
                            "bin/riscv64-unknown-linux-gnu-gcc")


def test_k3_without_toolchain_path_builds_with_zig_and_the_ime2_header(project):
    plan = plan_mod.resolve(project, "spacemit-k3", ENV)
    assert plan.toolchain.kind == "zig" and plan.toolchain.path is None
    files = {f.name: f for f in plan.files}
    assert "include/spacemit-ime2-asm.h" in files and "include/spacemit-ime1-asm.h" not in files
    header = files["include/spacemit-ime2-asm.h"].content
    for mnemonic in ("vmadot", "vmadotu", "vmadotsu", "vmadot.hp", "vmadotu.hp", "vmadotsu.hp", "vpack.vv",
                     "vupack.vv", "vnpack4.vv"):
        assert f'".macro {mnemonic} vd, vs1, vs2' in header, mnemonic
    assert header.count(".insn r 0x2b,") == 4 * 2 + 3 + 3
    cxx = files["zig-cxx"].content
    assert "+zvl1024b" in cxx and str(plan.render_dir / "include" / "spacemit-ime2-asm.h") in cxx
    assert plan.cache_vars["SPACEMIT_RISCV_COMPILER_SUPPORT_VNPACK"] is True
    assert "vlen=1024" in " ".join(plan.to_record()["emulator"])


def test_k3_with_toolchain_path_uses_the_vendor_toolchain_and_records_it(project, tmp_path):
    root = vendor_toolchain(tmp_path)
    plan = plan_mod.resolve(project, "spacemit-k3", ENV, plan_mod.Options(toolchain_path=str(root)))
    assert plan.toolchain.kind == "external" and plan.toolchain.path == str(root)
    assert plan.to_record()["toolchain"]["path"] == str(root)
    # no zig wrappers or macro header for GCC, which knows the IME2 mnemonics itself
    assert not [f for f in plan.files if f.name.startswith(("zig-", "include/"))]
    assert "-latomic" in plan.file("toolchain").content
    zig = plan_mod.resolve(project, "spacemit-k3", ENV)
    assert zig.cache_key != plan.cache_key


def test_alias_with_equal_preferences_is_ambiguous(project):
    k1 = project.recipes_dir / "spacemit-k1.yaml"
    k1.write_text(k1.read_text().replace("alias_preference: 10", "alias_preference: 20"))
    with pytest.raises(RecipeError, match="alias 'spacemit' is declared by both"):
        plan_mod.resolve(project, "spacemit", ENV)


def test_unknown_name_is_still_an_unknown_target(project):
    with pytest.raises(RecipeError, match=r"unknown target 'spacemit-k2' \(did you mean"):
        plan_mod.resolve(project, "spacemit-k2", ENV)


@pytest.mark.parametrize("body,expected", [
    ("aliases: [Spacemit]\n", "aliases[0]: 'Spacemit' is not a valid target name"),
    ("toolchain:\n  kind: native\n  features: [v]\n", "toolchain.features: only used by toolchain kind 'zig'"),
    ("toolchain:\n  kind: zig\n  triple: riscv64-linux-gnu\n  force_include: [../x.h]\n",
     "toolchain.force_include[0]: '../x.h': expected a header file name"),
    ("toolchain:\n  kind: zig\n  triple: riscv64-linux-gnu\n  glibc: '2.x'\n", "toolchain.glibc: expected a glibc"),
    ("cpu:\n  arch: riscv64\n  ime: ime1\nemulator:\n  command: [qemu-riscv64]\n",
     "emulator.env: cpu.ime ime1: an emulator without IME needs SPACEMIT_CORE_ARCH"),
    ("cpu:\n  arch: riscv64\n  ime: ime1\nemulator:\n  command: [qemu-riscv64]\n  env: {SPACEMIT_CORE_ARCH: '0xA03C'}\n",
     "emulator.env.SPACEMIT_CORE_ARCH: 0xA03C enables IME, which this emulator cannot run"),
    ("emulator:\n  command: [qemu-riscv64]\n  vlen: 100\n", "emulator.vlen: expected one of 128, 256, 512, 1024"),
])
def test_new_schema_fields_are_validated(project, body, expected):
    write(project, "t", "schema: 1\ndescription: x\n" + body)
    got = problems(lambda: recipe.load(project, "t"))
    assert len(got) == 1 and expected in got[0], got
    assert got[0].startswith("recipes/t.yaml:")


def test_alias_may_not_shadow_a_target(project):
    write(project, "t", "schema: 1\ndescription: x\naliases: [host]\n")
    with pytest.raises(RecipeError, match=r"aliases\[0\]: 'host' is already a target name"):
        recipe.load(project, "t")


# --- zig toolchain: wrappers, toolchain file, forced options ---------------------------------

@pytest.mark.parametrize("march,mcpu", [
    ("rv64gc", "baseline_rv64+m+a+f+d+zicsr+zifencei+c"),
    ("rv64gcv_zfh_zvfh_zba", "baseline_rv64+m+a+f+d+zicsr+zifencei+c+v+zfh+zvfh+zba"),
    ("rv64imafdcv", "baseline_rv64+m+a+f+d+c+v"),
])
def test_march_to_mcpu(march, mcpu):
    assert toolchains.march_to_mcpu(march) == mcpu


def test_march_to_mcpu_refuses_rv32():
    with pytest.raises(ToolMissingError, match="rv64"):
        toolchains.march_to_mcpu("rv32gc")


def test_riscv64_renders_zig_wrappers_and_toolchain_file(project):
    plan = plan_mod.resolve(project, "riscv64", ENV)
    wdir = plan.render_dir / "toolchain"
    assert plan.toolchain.cc == str(wdir / "zig-cc") and plan.toolchain.cxx == str(wdir / "zig-c++")
    names = {f.path: f for f in plan.files}
    for w in ("zig-cc", "zig-c++", "zig-ar", "zig-ranlib"):
        assert names[f"toolchain/{w}"].executable
    assert "include/spacemit-ime1-asm.h" not in names
    cxx = names["toolchain/zig-c++"].content
    assert cxx.startswith("#!/bin/sh\n")
    assert "zig=/opt/ziglang/zig\n" in cxx
    assert f"ZIG_GLOBAL_CACHE_DIR={project.cache / 'zig'}\n" in cxx
    assert "mcpu=baseline_rv64+m+a+f+d+zicsr+zifencei+c+v+zfh+zvfh+zicbop+zihintpause+zba\n" in cxx
    assert cxx.rstrip().endswith('exec "$zig" c++ -target riscv64-linux-gnu.2.36 "-mcpu=$mcpu" "$@" -g0')
    assert "-mabi=*) continue ;;" in cxx
    assert names["toolchain/zig-ar"].content.rstrip().endswith('exec "$zig" ar "$@"')
    tc = names["toolchain.cmake"].content
    assert f'set(CMAKE_AR "{wdir}/zig-ar" CACHE FILEPATH "")' in tc
    assert f'set(CMAKE_RANLIB "{wdir}/zig-ranlib" CACHE FILEPATH "")' in tc
    assert "CMAKE_C_COMPILER_TARGET" not in tc          # the wrapper passes -target itself
    assert ('set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-riscv64;-L;/usr/riscv64-linux-gnu;-cpu;'
            'rv64,v=true,vlen=256,elen=64,vext_spec=v1.0,Zfh=true,zba=true")') in tc
    assert plan.cache_vars["GGML_OPENMP"] is False and plan.cache_vars["BUILD_SHARED_LIBS"] is False
    assert plan.to_record()["emulator"][:3] == ["qemu-riscv64", "-L", "/usr/riscv64-linux-gnu"]


def test_k1_wrapper_force_includes_the_ime1_macro_and_appends_cxx20(project):
    plan = plan_mod.resolve(project, "spacemit-k1", ENV)
    files = {f.path: f for f in plan.files}
    header = files["include/spacemit-ime1-asm.h"].content
    assert '__asm__(".macro vmadot vd, vs1, vs2\\n\\tsmt.vmadot \\\\vd, \\\\vs1, \\\\vs2\\n.endm\\n");' in header
    inc = plan.render_dir / "include" / "spacemit-ime1-asm.h"
    cxx, cc = files["toolchain/zig-c++"].content, files["toolchain/zig-cc"].content
    assert f'"-mcpu=$mcpu+xsmtvdot" -include {inc} "$@" -g0 -std=gnu++20' in cxx
    assert f'"-mcpu=$mcpu+xsmtvdot" -include {inc} "$@" -g0\n' in cc    # C gets no C++ standard
    # the emulator line carries the IME fallback, for CMake's own emulated runs too
    assert 'set(CMAKE_CROSSCOMPILING_EMULATOR "env;SPACEMIT_CORE_ARCH=0x503C;qemu-riscv64;' in \
        files["toolchain.cmake"].content
    # the launcher for the board sets the IME-capable core id unless the caller set one
    assert ('if [ -z "${SPACEMIT_CORE_ARCH+x}" ]; then SPACEMIT_CORE_ARCH=0xA03C; export SPACEMIT_CORE_ARCH; fi'
            in files["bin/q3tts-serve"].content)
    assert 'Environment="SPACEMIT_CORE_ARCH=0xA03C"' in files["lib/systemd/system/q3tts.service"].content


def test_riscv64_launcher_has_no_spacemit_variable(project):
    plan = plan_mod.resolve(project, "riscv64", ENV)
    assert "SPACEMIT" not in plan.file("launcher").content


def test_zig_forces_static_and_no_openmp(project, capsys):
    rv = project.recipes_dir / "riscv64.yaml"
    rv.write_text(rv.read_text().replace("BUILD_SHARED_LIBS: false", "BUILD_SHARED_LIBS: true"))
    plan = plan_mod.resolve(project, "riscv64", ENV)
    assert plan.cache_vars["BUILD_SHARED_LIBS"] is False
    assert "cmake.options.BUILD_SHARED_LIBS must be OFF with zig" in capsys.readouterr().err


def test_wrapper_changes_change_the_cache_key(project):
    k1 = plan_mod.resolve(project, "spacemit-k1", ENV).cache_key
    y = project.recipes_dir / "spacemit-k1.yaml"
    y.write_text(y.read_text().replace("append_cxxflags: [-std=gnu++20]", "append_cxxflags: [-std=gnu++2b]"))
    assert plan_mod.resolve(project, "spacemit-k1", ENV).cache_key != k1


# --- emulator environment and the IME fallback -----------------------------------------------

def test_emulated_ime_target_uses_the_fallback_and_says_why(project):
    plan = plan_mod.resolve(project, "spacemit-k1", ENV)
    env, notes = emulation.environment(plan, {"PATH": "/usr/bin", "SPACEMIT_CORE_ARCH": "0xA03C"})
    assert env["SPACEMIT_CORE_ARCH"] == "0x503C" and env["PATH"] == "/usr/bin"
    assert len(notes) == 1 and notes[0].startswith("SPACEMIT_CORE_ARCH=0xA03C asks for SpacemiT IME1, but "
                                                   "qemu-riscv64 has no IME instructions")
    env, notes = emulation.environment(plan, {"PATH": "/usr/bin"})
    assert env["SPACEMIT_CORE_ARCH"] == "0x503C" and notes == []


def test_emulator_argv_fills_sysroot_and_vlen(project):
    plan = plan_mod.resolve(project, "riscv64", ENV)
    assert emulation.argv(plan, vlen=1024)[-1] == "rv64,v=true,vlen=1024,elen=64,vext_spec=v1.0,Zfh=true,zba=true"
    assert emulation.argv(plan)[-1].startswith("rv64,v=true,vlen=256,")
    assert emulation.environment(plan, {"SPACEMIT_CORE_ARCH": "0xA03C"})[0]["SPACEMIT_CORE_ARCH"] == "0xA03C"


def test_missing_emulator_names_its_package(project):
    plan = plan_mod.resolve(project, "riscv64", ENV)
    with pytest.raises(ToolMissingError, match=r"emulator qemu-riscv64 for target riscv64 not found; "
                                               r"apt install qemu-user$"):
        emulation.require(plan, {"PATH": "/nonexistent"})


# --- sysroot and doctor ----------------------------------------------------------------------

def test_sysroot_must_hold_the_target_libc(project, tmp_path):
    rv = recipe.load(project, "riscv64")
    with pytest.raises(ToolMissingError) as e:
        toolchains.check_sysroot(rv, str(tmp_path / "nope"))
    assert "no target C library" in str(e.value)
    x86 = vendor_toolchain(tmp_path, machine=62) / "sysroot"
    with pytest.raises(ToolMissingError, match=r"libc.so.6 is not a riscv64 library \(ELF machine 62, expected 243\)"):
        toolchains.check_sysroot(rv, str(x86))
    with pytest.raises(ToolMissingError, match=r"apt install libc6-riscv64-cross"):
        toolchains.check_sysroot(rv, "/usr/riscv64-nowhere")


def test_doctor_tools_name_the_packages(project, monkeypatch):
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: None)
    tools = {t.purpose.split(":")[0]: t for t in toolchains.tools_for(recipe.load(project, "riscv64"), ENV)}
    assert tools["zig cc"].pip == "ziglang==0.17.1"
    assert tools["target C library (sysroot)"].apt == "libc6-riscv64-cross"
    assert tools["run target binaries on this machine"].apt == "qemu-user"
    assert toolchains.available(recipe.load(project, "spacemit-k1")) == (False, "PyPI package ziglang is not installed")


# --- kernel test output parsing --------------------------------------------------------------

QF_OUT = """\
 f32 vec_dot n=  16:                 ok (ref=1.000000 got=1.000000 err=0.000000)
Testing q4_0
 q4_0 absolute quantization error:    ok (0.001)
 q4_0 reference implementation error: ok (0.000000)
 q4_0 dot product error:              ok (0.001)
Testing q8_0
 q8_0 absolute quantization error:    ok (0.0002)
 q8_0 dot product error:              FAILED (0.5)
1 tests failed
"""

BO_OUT = """\
Backend 1/1: CPU
  Device description: CPU
  MUL_MAT(type_a=q4_0,type_b=f32,m=16,n=1,k=256,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1): \x1b[1;32mOK\x1b[0m
  ROPE(type=f32,ne_a=[128,4,2,1],n_dims=128,mode=0): [ROPE] NMSE = 0.5 > 1e-07 \x1b[1;31mFAIL\x1b[0m
  CONV_TRANSPOSE_1D(ne_input=[197,32,1,1]): not supported [CPU]
  1/2 tests passed
  Backend CPU: \x1b[1;31mFAIL\x1b[0m
"""


def test_parse_quantize_fns():
    run = kernels.Run(test=kernels.QUANTIZE_FNS, vlen=256, op=None, argv=[], returncode=1, seconds=1.0)
    kernels.parse_quantize_fns(QF_OUT, run)
    assert (run.passed, run.failed) == (5, 1)
    assert run.cases == {"f32": 1, "q4_0": 3, "q8_0": 1}
    assert run.failures == ["q8_0 dot product error:              FAILED (0.5)"]
    assert not run.ok


def test_parse_backend_ops_uses_the_summary_and_names_failures():
    run = kernels.Run(test=kernels.BACKEND_OPS, vlen=256, op="MUL_MAT", argv=[], returncode=1, seconds=1.0)
    kernels.parse_backend_ops(BO_OUT, run)
    assert (run.passed, run.failed) == (1, 1)
    assert run.cases == {"MUL_MAT": 1}
    assert run.failures == ["ROPE(type=f32,ne_a=[128,4,2,1],n_dims=128,mode=0)"]


def test_parse_backend_ops_without_summary_fails():
    run = kernels.Run(test=kernels.BACKEND_OPS, vlen=256, op="MUL_MAT", argv=[], returncode=0, seconds=1.0)
    kernels.parse_backend_ops(BO_OUT.split("  1/2")[0], run)
    assert not run.ok and run.failures[-1].startswith("no summary line")


def test_backend_ops_args_select_the_tts_ops():
    ops = dict(kernels.TTS_OPS)
    assert list(ops) == ["MUL_MAT", "GET_ROWS", "ROPE", "RMS_NORM", "SOFT_MAX", "IM2COL", "CONV_TRANSPOSE_1D",
                         "SNAKE_FUSE"]
    assert kernels.backend_ops_args("MUL_MAT", ops["MUL_MAT"])[:5] == ["test", "-b", "CPU", "-o", "MUL_MAT"]
    assert kernels.backend_ops_args("CONV_TRANSPOSE_1D", "") == ["test", "-b", "CPU", "-o", "CONV_TRANSPOSE_1D"]
    import re
    mm = re.compile(ops["MUL_MAT"])
    # params as test-backend-ops prints them
    keep = "type_a=q4_0,type_b=f32,m=16,n=1,k=256,bs=[1,1],nr=[1,1],per=[0,1,2,3],k_v=0,o=1"
    assert mm.search(keep) and mm.search(keep.replace("q4_0", "q8_0")) and mm.search(keep.replace("q4_0", "f16"))
    assert not mm.search(keep.replace("q4_0", "q4_K"))
    assert not mm.search("type_a=f16,type_b=f16,m=1700000,n=3,k=2592,bs=[1,1],nr=[1,1],per=[0,1,2,3]")
    assert not re.search(ops["GET_ROWS"], "type=f32,n=256,m=80000,r=70000,be1=2,be2=1,v=0")
    assert not re.search(ops["GET_ROWS"], "type=f32,n=256,m=5,r=4,be1=700,be2=100,v=0")
    assert re.search(ops["GET_ROWS"], "type=q4_0,n=256,m=5,r=4,be1=7,be2=1,v=0,vs0=0")
