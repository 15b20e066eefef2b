"""Recipe, pin and series validation: every problem named with file, line, key and expected type."""

from __future__ import annotations

import textwrap

import pytest

from q3build.core import pin as pin_mod
from q3build.core import recipe
from q3build.errors import RecipeError

from .helpers import make_project


def write(project, name, text):
    (project.recipes_dir / f"{name}.yaml").write_text(textwrap.dedent(text))


def problems(fn) -> list[str]:
    with pytest.raises(RecipeError) as e:
        fn()
    return e.value.problems


def test_real_recipes_load(tmp_path, monkeypatch):
    from q3build.project import Project

    from ..conftest import REPO
    p = Project.discover({"HOME": str(tmp_path)}, project=str(REPO))
    for name in recipe.names(p):
        assert recipe.load(p, name).schema == 1
    assert pin_mod.load(p).upstream.tree


def test_unknown_key_has_line_and_suggestion(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "t", """\
        schema: 1
        description: x
        toolchan:
          kind: native
        """)
    assert problems(lambda: recipe.load(p, "t")) == [
        "recipes/t.yaml:3: toolchan: unknown key (did you mean 'toolchain'?)"]


def test_wrong_types_are_all_reported(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "t", """\
        schema: 1
        description: x
        toolchain:
          kind: clang
        cmake:
          options:
            GGML_NATIVE: [1, 2]
          build_targets: llama-server
        runtime:
          port: "8080"
        """)
    got = problems(lambda: recipe.load(p, "t"))
    assert got == [
        "recipes/t.yaml:4: toolchain.kind: expected one of 'native', 'gcc-cross', 'clang-cross', 'zig', "
        "'external', got string 'clang'",
        "recipes/t.yaml:7: cmake.options.GGML_NATIVE: expected bool or integer or string, got a list",
        "recipes/t.yaml:8: cmake.build_targets: expected list of string, got string 'llama-server'",
        "recipes/t.yaml:10: runtime.port: expected integer, got string '8080'",
    ]


def test_missing_required_and_semantic_checks(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "t", """\
        schema: 1
        toolchain:
          kind: gcc-cross
        """)
    assert problems(lambda: recipe.load(p, "t")) == [
        "recipes/t.yaml:1: description: required key missing (expected string)"]
    write(p, "t", """\
        schema: 1
        description: x
        toolchain:
          kind: gcc-cross
        cpu:
          ime: ime1
        runtime:
          env: {"BAD NAME": x}
        """)
    assert problems(lambda: recipe.load(p, "t")) == [
        "recipes/t.yaml:3: toolchain.triple: required for toolchain kind 'gcc-cross'",
        "recipes/t.yaml:6: cpu.ime: SpacemiT IME needs cpu.arch riscv64",
        "recipes/t.yaml:8: runtime.env.BAD NAME: not a valid environment variable name",
    ]


def test_schema_version_out_of_range(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "t", "schema: 9\ndescription: x\n")
    assert problems(lambda: recipe.load(p, "t")) == [
        "recipes/t.yaml:1: schema: version 9 is not supported (this q3build reads 1..1)"]


def test_malformed_yaml_names_the_line(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "t", "schema: 1\ndescription: [unclosed\ncmake: {}\n")
    got = problems(lambda: recipe.load(p, "t"))
    assert len(got) == 1 and got[0].startswith("recipes/t.yaml:3: malformed YAML:")


def test_unknown_target_lists_known(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    assert problems(lambda: recipe.load(p, "hots")) == [
        "unknown target 'hots' (did you mean 'host'?); known targets: host"]


def test_extends_merges_and_detects_cycles(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    write(p, "child", """\
        schema: 1
        description: child
        extends: host
        cmake:
          options:
            GGML_NATIVE: false
        """)
    t = recipe.load(p, "child")
    assert t.cmake.options["GGML_NATIVE"] is False
    assert t.cmake.options["BUILD_SHARED_LIBS"] is False        # inherited
    assert tuple(t.cmake.build_targets) == tuple(recipe.load(p, "host").cmake.build_targets)   # inherited
    assert "llama-server" in t.cmake.build_targets
    write(p, "a", "schema: 1\ndescription: a\nextends: b\n")
    write(p, "b", "schema: 1\ndescription: b\nextends: a\n")
    assert problems(lambda: recipe.load(p, "a")) == ["recipes/a.yaml: extends: cycle a -> b -> a"]


def test_pin_checks(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    p.pin_file.write_text(textwrap.dedent("""\
        schema: 1
        upstream:
          commit: 0c1e570
          build: 11312
          date: "2026-10-01"
          tree: b2da53584951ec8aa40680229509a6646a637560
        sources:
          - kind: pypi-sdist
            package: llama-cpp-python
          - kind: git
        """))
    assert problems(lambda: pin_mod.load(p)) == [
        "recipes/llama.cpp.yaml:3: upstream.commit: expected a full 40-hex commit id, got '0c1e570'",
        "recipes/llama.cpp.yaml:8: sources[0].version: required for kind 'pypi-sdist'",
        "recipes/llama.cpp.yaml:8: sources[0].sha256: required for kind 'pypi-sdist'",
        "recipes/llama.cpp.yaml:10: sources[1].url: required for kind 'git'",
    ]
