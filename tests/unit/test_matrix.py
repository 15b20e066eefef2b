"""`q3build matrix`: the CI matrix from the recipes, and the workflow that consumes it."""

from __future__ import annotations

import json

import yaml

from q3build import cli

from ..conftest import REPO
from .helpers import make_project

RECIPES = ("host", "riscv64", "spacemit-k1", "spacemit-k3")


def test_matrix_lists_buildable_targets_and_says_why_others_are_left_out(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path, monkeypatch, recipes=RECIPES)
    # a target only a vendor toolchain builds (as spacemit-k3 was before the IME2 macros) stays out
    (project.recipes_dir / "vendor-only.yaml").write_text(
        "schema: 1\ndescription: vendor GCC only\nextends: riscv64\n"
        "toolchain: {kind: external, triple: riscv64-unknown-linux-gnu, glibc: null, pip: [], wheels: null}\n")
    assert cli.main(["--project", str(project.root), "matrix", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    by_target = {e["target"]: e for e in out["include"]}
    assert sorted(by_target) == ["host", "riscv64", "spacemit-k1", "spacemit-k3"]
    assert by_target["host"]["cross"] is False and by_target["host"]["emulator"] is None
    rv = by_target["riscv64"]
    assert rv["cross"] is True and rv["emulator"] == "qemu-riscv64"
    assert {"qemu-user", "libc6-riscv64-cross", "cmake", "git"} <= set(rv["apt"].split())
    assert rv["pip"] == "ziglang==0.17.1"
    assert "build-essential" in by_target["host"]["apt"].split()
    # K3 builds from registries too (zig); its vendor toolchain is only an alternative
    assert by_target["spacemit-k3"]["toolchain"] == "zig" and by_target["spacemit-k3"]["pip"] == "ziglang==0.17.1"
    assert [x["target"] for x in out["excluded"]] == ["vendor-only"]
    assert "--toolchain-path" in out["excluded"][0]["reason"]


def test_github_format_is_one_output_line(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path, monkeypatch, recipes=RECIPES)
    assert cli.main(["--project", str(project.root), "matrix", "--format", "github"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("matrix=")
    matrix = json.loads(out[len("matrix="):])
    assert [e["target"] for e in matrix["include"]] == ["host", "riscv64", "spacemit-k1", "spacemit-k3"]
    assert all(e["runs-on"] for e in matrix["include"])


def test_a_new_recipe_appears_without_editing_the_workflow(tmp_path, monkeypatch, capsys):
    project = make_project(tmp_path, monkeypatch, recipes=("host",))
    (project.recipes_dir / "arm64.yaml").write_text(
        "schema: 1\ndescription: arm64 cross\ntoolchain: {kind: gcc-cross, triple: aarch64-linux-gnu, "
        "apt: [g++-aarch64-linux-gnu]}\ncpu: {arch: aarch64}\n"
        "emulator: {command: [qemu-aarch64, -L, '{sysroot}'], apt: [qemu-user]}\n")
    assert cli.main(["--project", str(project.root), "matrix", "--format", "github"]) == 0
    entries = json.loads(capsys.readouterr().out[len("matrix="):])["include"]
    arm = next(e for e in entries if e["target"] == "arm64")
    assert arm["apt"].split()[-2:] == ["g++-aarch64-linux-gnu", "qemu-user"] and arm["arch"] == "aarch64"


def test_workflow_is_valid_yaml_and_uses_the_matrix():
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "build.yml").read_text())
    jobs = wf["jobs"]
    assert "q3build matrix --format github" in " ".join(s.get("run", "") for s in jobs["matrix"]["steps"])
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    runs = [s.get("run", "") for s in build["steps"]]
    order = [next(i for i, r in enumerate(runs) if f"q3build {verb}" in r)
             for verb in ("sync", "make", "validate", "package", "verify")]
    assert order == sorted(order)
    cache = next(s for s in build["steps"] if str(s.get("uses", "")).startswith("actions/cache"))
    assert "steps.plan.outputs.cache_key" in cache["with"]["key"]
    assert any(str(s.get("uses", "")).startswith("actions/upload-artifact") for s in build["steps"])
