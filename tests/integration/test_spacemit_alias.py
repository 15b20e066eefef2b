"""`q3build plan --target spacemit` on the real recipes, with and without a (fake) SpacemiT toolchain."""

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
    assert plan["alias"] == {"name": "spacemit", "reason": f"toolchain given by --toolchain-path {root}"}
    tc = plan["toolchain"]
    assert tc["kind"] == "external" and tc["path"] == str(root)
    assert tc["cc"] == str(root / "bin" / "riscv64-unknown-linux-gnu-gcc") and "13.1.0" in tc["cc_version"]
    assert tc["sysroot"] == str(root / "sysroot")
    assert plan["cmake"]["cache"]["GGML_CPU_RISCV64_SPACEMIT"] == "ON"
    assert plan["emulator"][:3] == ["qemu-riscv64", "-L", str(root / "sysroot")]


def test_alias_picks_k1_without_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    rc, out = plan_json(capsys)
    assert rc == 0, out.err
    plan = json.loads(out.out)
    assert plan["target"] == "spacemit-k1" and plan["toolchain"]["kind"] == "zig"
    assert "spacemit-k3 (needs SpacemiT's own toolchain: --toolchain-path not given)" in plan["alias"]["reason"]


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
