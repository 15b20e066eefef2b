"""validate, package and verify for riscv64 under qemu-user: the staged llama-server runs through
the recipe's emulator with a tiny converted model; the archive's smoke test runs through the
emulator its manifest records. Needs what `scripts/bootstrap --test` installs (zig, qemu-user, the
riscv64 sysroot). Minutes: a zig build (ccache makes reruns quick) and speech requests under qemu."""

from __future__ import annotations

import json

import pytest

from q3build import cli
from q3build.speech import validate

from ..conftest import REPO

pytestmark = pytest.mark.slow


def test_riscv64_validates_packages_and_verifies_under_qemu(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))

    def q3(*args):
        capsys.readouterr()
        rc = cli.main(["--project", str(REPO), *args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    rc, _, err = q3("make", "--target", "riscv64")
    assert rc == 0, err
    rc, out, err = q3("validate", "--target", "riscv64", "--json")
    assert rc == 0, err
    record = json.loads(out)
    assert record["emulator"].startswith("qemu-riscv64 ")
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert all(status[n] == "ok" for n, _ in validate.CHECKS), status
    assert status["parity"] == "skipped"
    rc, out, err = q3("package", "--target", "riscv64", "--out", str(tmp_path / "dist"), "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["archive"].endswith("-riscv64-linux-gnu-riscv64.tar.gz") and res["validated"] is True
    rc, out, err = q3("verify", res["archive"], "--json")
    assert rc == 0, err
    smoke = json.loads(out)["checks"][-1]
    assert smoke["status"] == "ok" and smoke["detail"].startswith("qemu-riscv64: version: ")
